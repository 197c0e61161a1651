"""``placer binpack FILE``: classic 1-D bin packing (BPPLIB text format) with the exact machinery."""

from __future__ import annotations

import typer
from rich.table import Table

from placer.cli.common import JSON_HELP, console, print_json

DEFAULT_BINPACK_SOLVER = "cpsat"  # arc-flow model; proves triplets n ≤ 120 in ~15 s (bench/binpack.md)


def binpack(
    file: str = typer.Argument(..., help="BPPLIB text file: n, capacity, then one integer weight per line."),
    solver: str = typer.Option(DEFAULT_BINPACK_SOLVER, "--solver", "-s",
                               help="cpsat | ilp | ffd (plain first-fit decreasing; the placement solvers' "
                                    "ffd-bisect needs an oracle, so it is not offered here)."),
    time_limit: float = typer.Option(60.0, "--time-limit", help="Seconds for the exact solver."),
    seed: int = typer.Option(0, "--seed", help="CP-SAT random seed."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Pack the items of FILE into as few bins as possible; print num_bins, lower_bound and status."""
    from placer.exact.binpack import read_bpp, solve_binpack
    from twin.errors import InputError

    if not time_limit > 0:
        raise InputError(f"time limit must be positive (got {time_limit!r})", field="--time-limit",
                         value=time_limit)
    if seed < 0:
        raise InputError(f"must be a non-negative integer (got {seed!r})", field="--seed", value=seed)
    result = solve_binpack(read_bpp(file), solver=solver, time_limit=time_limit, seed=seed)
    if as_json:
        print_json(result.to_dict())
        return
    table = Table(title=f"{result.instance}: {result.solver}")
    for col in ("num_bins", "lower_bound", "status", "gap", "time (s)", "bounds (L1 / count / L2 / LP)"):
        table.add_column(col)
    b = result.bounds
    lp = "-" if b["lp"] is None else f"{b['lp']:.2f}"
    table.add_row(str(result.num_bins), str(result.lower_bound), result.status, f"{100 * result.gap:.1f}%",
                  f"{result.runtime_s:.2f}", f"{b['l1']} / {b['count']} / {b['l2']} / {lp}")
    console.print(table)
    if result.detail:
        console.print(result.detail)


def register(app: typer.Typer) -> None:
    """Add ``binpack`` to ``app`` (idempotent: several command modules may ask for it)."""
    if any(getattr(c, "name", None) == "binpack" for c in app.registered_commands):
        return
    app.command("binpack")(binpack)
