"""``placer replan`` (a plan for a changed workload that moves few adapters, and its diff), and the
workload-change parts of ``placer solve --periods`` and ``placer deploy --diff``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from placer import deploy
from placer.cli.common import (
    JSON_HELP,
    MODELS_HELP,
    PROFILE_HELP,
    about_file,
    console,
    load_context,
    print_json,
    to_json,
)
from placer.dynamic.deploy_diff import diff_script
from placer.dynamic.periods import solve_periods
from placer.dynamic.replan import ReplanResult, replan
from placer.oracle import Oracle, make_oracle
from placer.problem.io import read_instance
from placer.reporting.day_chart import day_chart
from placer.reporting.progress import progress_bar, spinner
from placer.result import Result, plural
from placer.solve import DEFAULT_SOLVER, DEFAULT_TIME_LIMIT, solver_names
from twin.errors import InputError
from twin.files import atomic_write_text
from twin.spec import Instance

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
    profile: Path | None = typer.Option(None, "--profile", help=PROFILE_HELP),
    models: Path | None = typer.Option(None, "--models", help=MODELS_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Re-place a changed workload starting from the plan in service: few adapter moves, and the diff."""
    problem = read_instance(instance)
    old = Result.load(from_plan)
    the_oracle = make_oracle(problem, oracle, context=load_context(profile, models),
                             **({"seed": seed} if oracle == "twin" else {}))
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


def day_cmd(problem: Instance, solver: str, time_limit: float, seed: int, oracle: Oracle, out: Path | None,
            plot: Path | None, json_out: bool) -> None:
    """``placer solve --periods``: the day plan, its table, JSON, file and chart."""
    with progress_bar("periods", enabled=not json_out) as tick:
        day = solve_periods(problem, solver, time_limit=time_limit, seed=seed, oracle=oracle, progress=tick)
    if out is not None:
        atomic_write_text(out, to_json(day.to_dict()) + "\n")
    if plot is not None:
        day_chart(day, plot)
    if json_out:
        print_json(day.to_dict())
        return
    table = Table(title=f"{problem.name}: {plural(len(day.periods), 'period')} of {day.period_s:g} s",
                  show_header=True)
    for col in ("period", "rate (req/s)", "GPUs", "from scratch", "moves", "added", "drained", "restart"):
        table.add_column(col, justify="right")
    for p in day.periods:
        d = p.diff
        table.add_row(str(p.period), f"{p.total_rate_rps:.2f}", str(p.plan.num_gpus), str(p.scratch_gpus),
                      "-" if d is None else str(d.moves), "-" if d is None else str(len(d.added)),
                      "-" if d is None else str(len(d.drained)), "-" if d is None else str(len(d.restart)))
    console.print(table)
    console.print(f"GPU-hours: {day.gpu_hours:.2f} replanned per period vs {day.static_gpu_hours:.2f} with "
                  f"{plural(day.static_gpus, 'GPU')} for the peak all day ({100 * day.saved_fraction:.1f} % "
                  "saved)")
    if out is not None:
        console.print(f"day plan written to {out}")
    if plot is not None:
        console.print(f"chart written to {plot}")


def deploy_diff(instance: Path, plan: Path | None, diff: tuple[Path, Path] | None, out: Path | None,
                adapter_dir: str, base_port: int, host: str, json_out: bool) -> None:
    """``placer deploy INSTANCE --diff OLD NEW``: the diff script and routes.json."""
    if diff is None or plan is not None:
        raise InputError("give either PLAN or --diff OLD_PLAN NEW_PLAN", field="--diff",
                         value=None if diff is None else [str(p) for p in diff])
    old_path, new_path = diff
    problem, old, new = read_instance(instance), Result.load(old_path), Result.load(new_path)
    with about_file(new_path):
        dd = diff_script(problem, old, new, base_port=base_port, adapter_dir=adapter_dir, host=host)
    files: list[Path] = []
    if out is not None:
        files = deploy.write_deployment(deploy.Deployment("shell", dd.text, (), dd.routes), out)
    if json_out:
        print_json(dd.to_dict([str(f) for f in files]))
    elif out is None:
        console.print(dd.text, end="", markup=False, highlight=False, soft_wrap=True)
    else:
        console.print(f"diff script written to {files[0]}, routes to {files[1]}")


def register(app: typer.Typer) -> None:
    """Add ``replan`` to ``app``."""
    app.command("replan")(replan_cmd)
