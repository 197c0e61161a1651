"""``placer replan``: a plan for a changed workload that moves few adapters, and its diff."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from placer.cli.common import JSON_HELP, about_file, console, print_json
from placer.dynamic.replan import ReplanResult, replan
from placer.oracle import make_oracle
from placer.problem.io import read_instance
from placer.reporting.progress import spinner
from placer.result import Result, plural
from placer.solve import DEFAULT_SOLVER, DEFAULT_TIME_LIMIT, solver_names

MAX_MOVES_SHOWN = 20


def replan_cmd(
    instance: Path = typer.Argument(..., help="The NEW instance file (the changed workload)."),
    from_plan: Path = typer.Option(..., "--from", help="The plan in service (placer solve/replan --out)."),
    max_moves: int | None = typer.Option(None, "--max-moves", help="At most this many adapter moves."),
    move_cost: float = typer.Option(0.0, "--move-cost",
                                    help="GPUs one adapter move is worth (0: fewest GPUs first, then moves; "
                                         "0.01: a GPU is worth 100 moves)."),
    solver: str = typer.Option(DEFAULT_SOLVER, "--solver", "-s",
                               help=f"From-scratch reference solver, one of: {', '.join(solver_names())}."),
    time_limit: float = typer.Option(DEFAULT_TIME_LIMIT, "--time-limit", help="Seconds."),
    seed: int = typer.Option(0, "--seed", help="Random seed: same seed, same plan."),
    oracle: str = typer.Option("surrogate", "--oracle", help="Feasibility oracle: surrogate | twin."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the new plan (JSON) here."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Re-place a changed workload starting from the plan in service: few adapter moves, and the diff."""
    problem = read_instance(instance)
    old = Result.load(from_plan)
    the_oracle = make_oracle(problem, oracle, **({"seed": seed} if oracle == "twin" else {}))
    with spinner(f"replan: {problem.n_adapters} adapters from {old.num_gpus} GPUs", enabled=not json_out), \
            about_file(from_plan):
        res = replan(problem, old, max_moves=max_moves, move_cost=move_cost, time_limit=time_limit, seed=seed,
                     oracle=the_oracle, solver=solver)
    if out is not None:
        res.plan.save(out)
    if json_out:
        print_json(res.to_dict())
        return
    _print(res)
    if out is not None:
        console.print(f"plan written to {out}")


def _print(res: ReplanResult) -> None:
    d = res.diff
    head = Table(title=f"{res.plan.instance}: replan", show_header=True)
    for col in ("GPUs", "from scratch", "extra GPUs", "moves", "scratch moves", "new", "retired", "added",
                "drained", "restart", "method", "time (s)"):
        head.add_column(col, justify="right")
    head.add_row(str(res.plan.num_gpus), str(res.scratch_gpus), f"{res.extra_gpus:+d}", str(res.moves),
                 str(res.scratch_moves), str(len(d.placed)), str(len(d.retired)), str(list(d.added)),
                 str(list(d.drained)), str(list(d.restart)), res.method, f"{res.runtime_s:.2f}")
    console.print(head)
    if d.moved:
        moves = Table(show_header=True)
        for col in ("adapter", "from GPU", "to GPU"):
            moves.add_column(col)
        for a, f, t in d.moved[:MAX_MOVES_SHOWN]:
            moves.add_row(a, str(f), str(t))
        console.print(moves)
        if len(d.moved) > MAX_MOVES_SHOWN:
            console.print(f"... {plural(len(d.moved) - MAX_MOVES_SHOWN, 'more move')} (see --json)")
    runtime_only = [j for j in d.kept if j not in set(d.restart)]
    console.print(f"GPUs that only load/unload adapters at run time: {runtime_only}")


def register(app: typer.Typer) -> None:
    """Add ``replan`` to ``app``."""
    app.command("replan")(replan_cmd)
