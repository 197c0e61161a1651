"""``placer frontier``: GPUs needed at each latency SLO level and under the papers' rule."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from placer.cli.common import (
    JSON_HELP,
    MODELS_HELP,
    PROFILE_HELP,
    about_file,
    console,
    load_context,
    print_json,
    say_if_compiling,
)
from placer.frontier import frontier, frontier_csv
from placer.oracle import make_oracle
from placer.problem.io import read_instance
from placer.reporting import charts as plots
from placer.reporting.progress import spinner
from placer.solve import DEFAULT_SOLVER, DEFAULT_TIME_LIMIT, solver_names
from twin.errors import InputError
from twin.files import atomic_write_text


def _levels(text: str | None, flag: str) -> list[float]:
    if text is None:
        return []
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"must be comma-separated numbers (got {text!r})", field=flag, value=text) from None


def frontier_cmd(
    instance: Path = typer.Argument(..., help="Instance file (YAML or JSON)."),
    ttft_p99: str | None = typer.Option(None, "--ttft-p99", help="TTFT p99 bounds in seconds, e.g. "
                                        "0.5,1,2,5,10 (default: the instance's)."),
    tpot_p99: str | None = typer.Option(None, "--tpot-p99", help="TPOT p99 bounds in milliseconds, e.g. "
                                        "100,200 (default: the instance's)."),
    solver: str = typer.Option(DEFAULT_SOLVER, "--solver", "-s",
                               help=f"One of: {', '.join(solver_names())}."),
    time_limit: float = typer.Option(DEFAULT_TIME_LIMIT, "--time-limit", help="Seconds per level."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    oracle: str = typer.Option("surrogate", "--oracle", help="Feasibility oracle: surrogate | twin."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write one CSV row per level here."),
    plot: Path | None = typer.Option(None, "--plot", help="Draw GPUs against the SLO, lower bound dashed "
                                     "(.png or .svg)."),
    profile: Path | None = typer.Option(None, "--profile", help=PROFILE_HELP),
    models: Path | None = typer.Option(None, "--models", help=MODELS_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """GPUs needed at each SLO level (and under the papers' rule): what each second of latency costs."""
    plot = plots.check_path(plot) if plot is not None else None
    problem = read_instance(instance)
    ttfts, tpots = _levels(ttft_p99, "--ttft-p99"), _levels(tpot_p99, "--tpot-p99")
    opts = {"seed": seed} if oracle == "twin" else {}
    the_oracle = make_oracle(problem, oracle, context=load_context(profile, models), **opts)
    if oracle == "twin":
        say_if_compiling()
    with spinner(f"{solver}: frontier of {problem.n_adapters} adapters", enabled=not json_out), \
            about_file(instance):
        points = frontier(problem, ttfts, tpots, solver=solver, time_limit=time_limit, seed=seed,
                          oracle=the_oracle)
    if out is not None:
        atomic_write_text(out, frontier_csv(points))
    if plot is not None:
        plots.frontier_chart(points, plot, title=f"{problem.name}: GPUs needed per SLO ({solver})")
    if json_out:
        print_json({"instance": problem.name, "solver": solver, "oracle": the_oracle.name,
                    "points": [p.to_dict(i) for i, p in enumerate(points)]})
        return
    table = Table(title=f"{problem.name}: GPUs per SLO ({solver}, {the_oracle.name})")
    for col in ("criterion", "GPUs", "lower bound", "status", "plan solved for"):
        table.add_column(col)
    for i, p in enumerate(points):
        table.add_row(p.criterion, str(p.num_gpus) if p.num_gpus else "infeasible", str(p.lower_bound),
                      p.status, "this level" if p.solved_for == i else points[p.solved_for].criterion)
    console.print(table)
    for what, path in (("rows", out), ("chart", plot)):
        if path is not None:
            console.print(f"{what} written to {path}")


def register(app: typer.Typer) -> None:
    """Add ``frontier`` to ``app``."""
    app.command("frontier")(frontier_cmd)
