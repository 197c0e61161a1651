"""Solvers × instances: one row per run, every plan judged by the one evaluator (and optionally the twin).

Each solver gets a fresh oracle of the chosen kind (so no solver profits from another's cache and the times
are comparable); one separate oracle of the same kind judges every plan
(:func:`placer.check.evaluate.evaluate`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from placer.check.evaluate import evaluate
from placer.context import Context
from placer.oracle import make_oracle
from placer.problem.io import read_instance
from placer.solve import DEFAULT_TIME_LIMIT, get_solver, solve
from twin.files import atomic_write_text
from twin.spec import Instance


@dataclass(frozen=True)
class CompareRow:
    """One (instance, solver) run."""

    instance: str
    n_adapters: int
    model: str
    solver: str
    status: str
    num_gpus: int
    lower_bound: int
    gap: float | None
    runtime_s: float
    evaluator_feasible: bool
    evaluator_errors: str
    twin_feasible: bool | None = None
    twin_failures: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(instances: Sequence[str | Path | Instance], solvers: Sequence[str], *,
            time_limit: float = DEFAULT_TIME_LIMIT, seed: int = 0, oracle: str = "surrogate",
            verify_twin: bool = False, oracle_options: dict[str, Any] | None = None,
            progress: Callable[[int, int], None] | None = None, context: Context | None = None
            ) -> list[CompareRow]:
    """Run every solver on every instance; judge every plan with the evaluator (and the twin if asked).

    ``progress(done, total)`` is called after each (instance, solver) run; ``context``: the twin profile and
    surrogate models of every oracle (default: the shipped ones)."""
    for name in solvers:
        get_solver(name)  # unknown names fail before any work
    rows = []
    for item in instances:
        problem = item if isinstance(item, Instance) else read_instance(item)
        opts = {**(oracle_options or {}), "context": context}
        judge = make_oracle(problem, oracle, **opts)
        for name in solvers:
            result = solve(problem, name, time_limit=time_limit, seed=seed,
                           oracle=make_oracle(problem, oracle, **opts))
            ev = evaluate(problem, result, judge)
            twin_ok, twin_fail = None, ""
            if verify_twin and result.gpus:
                from placer.check.verify import verify

                report = verify(problem, result, seed=seed, context=context)
                twin_ok, twin_fail = report.feasible, "; ".join(report.failures)
            problems = ev.errors + tuple(f"GPU {g.gpu} infeasible" for g in ev.gpus if not g.feasible)
            rows.append(CompareRow(problem.name, problem.n_adapters, problem.model, name, result.status,
                                   result.num_gpus, result.lower_bound, result.gap,
                                   round(result.runtime_s, 4), ev.feasible, "; ".join(problems),
                                   twin_ok, twin_fail))
            if progress is not None:
                progress(len(rows), len(instances) * len(solvers))
    return rows


def rows_csv(rows: Sequence[CompareRow]) -> str:
    """The rows as CSV text (header + one line per run)."""
    buf = io.StringIO()
    fields = list(CompareRow.__dataclass_fields__)
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for r in rows:
        writer.writerow(r.to_dict())
    return buf.getvalue()


def write_csv(rows: Sequence[CompareRow], path: str | Path) -> None:
    """Write the rows as CSV, atomically."""
    atomic_write_text(Path(path), rows_csv(rows))
