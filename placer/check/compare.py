"""Solvers × instances: one row per run, every plan judged by the one evaluator (and optionally the twin).

Each solver gets a fresh oracle of the chosen kind (so no solver profits from another's cache and the times
are comparable); one separate oracle of the same kind judges every plan
(:func:`placer.check.evaluate.evaluate`). Before the first timed run of an instance, that judge is asked
once (:func:`warm_up`): it loads the surrogate (or compiles the twin) and compiles the feature kernels, a
one-off cost that would otherwise be charged to whichever solver runs first. Rows are grouped by instance
*file* (two files may share a ``name``); every row of one file carries the same lower bound: the best any
run proved for it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from placer.check.evaluate import evaluate
from placer.context import Context
from placer.oracle import Oracle, make_oracle
from placer.problem.io import read_instance
from placer.problem.schema import slo_with_options
from placer.result import OPTIMAL_WRT
from placer.solve import DEFAULT_TIME_LIMIT, get_solver, solve
from twin.errors import InputError
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
    file: str = ""  # the instance file (the group key: two files may share a name); "" for an in-memory one
    optimal_wrt: str | None = None  # what an ``optimal`` status is optimal for (see Result.optimal_wrt)
    criterion: str = ""  # the criterion every GPU was judged by, in words (Slo.describe)

    @property
    def key(self) -> str:
        """What rows are grouped by: the file, else the instance name."""
        return self.file or self.instance

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(instances: Sequence[str | Path | Instance], solvers: Sequence[str], *,
            time_limit: float = DEFAULT_TIME_LIMIT, seed: int = 0, oracle: str = "surrogate",
            verify_twin: bool = False, oracle_options: dict[str, Any] | None = None,
            progress: Callable[[int, int], None] | None = None,
            workers: int | None = None, context: Context | None = None,
            slo_options: dict[str, Any] | None = None) -> list[CompareRow]:
    """Run every solver on every instance; judge every plan with the evaluator (and the twin if asked,
    ``workers`` processes per plan).

    ``progress(done, total)`` is called after each (instance, solver) run. ``context``: the twin profile and
    surrogate models of every oracle (default: the shipped ones). ``slo_options``: overrides of each
    instance's SLO (keys of :data:`placer.problem.schema.SLO_FLAGS`, None = keep). An :class:`InputError`
    about an instance names its file."""
    for name in solvers:
        get_solver(name)  # unknown names fail before any work
    rows: list[CompareRow] = []
    total = len(instances) * len(solvers)
    for item in instances:
        file = "" if isinstance(item, Instance) else str(item)
        done = len(rows)

        def tick(k: int, done: int = done) -> None:
            if progress is not None:
                progress(done + k, total)

        try:
            problem = item if isinstance(item, Instance) else read_instance(item)
            if slo_options:
                slo = slo_with_options(problem.slo, slo_options)
                problem = problem if slo == problem.slo else problem.replace(slo=slo)
            runs = _runs(problem, file, solvers, time_limit=time_limit, seed=seed, oracle=oracle,
                         verify_twin=verify_twin, oracle_options={**(oracle_options or {}), "context":
                         context},
                         workers=workers, progress=tick)
        except InputError as exc:  # an error about the instance names its file
            raise (exc.with_source(file) if file and not exc.source else exc) from None
        rows += _same_bound(runs)
    return rows


def warm_up(problem: Instance, oracle: Oracle) -> None:
    """Pay the one-off costs (loading the surrogate, compiling kernels) before any run is timed."""
    lightest = int(problem.rates.argmin())
    oracle.evaluate(problem, [lightest])
    if problem.n_adapters > 1:  # a two-adapter mix runs the batched (grouped) prediction path too
        oracle.evaluate_many(problem, [[lightest], sorted({lightest, int(problem.rates.argmax())})])


def _runs(problem: Instance, file: str, solvers: Sequence[str], *, time_limit: float, seed: int, oracle: str,
          verify_twin: bool, oracle_options: dict[str, Any], workers: int | None,
          progress: Callable[[int], None]) -> list[CompareRow]:
    judge = make_oracle(problem, oracle, **oracle_options)
    warm_up(problem, judge)
    out = []
    for name in solvers:
        result = solve(problem, name, time_limit=time_limit, seed=seed,
                       oracle=make_oracle(problem, oracle, **oracle_options))
        ev = evaluate(problem, result, judge)
        twin_ok, twin_fail = None, ""
        if verify_twin and result.gpus:
            from placer.check.verify import verify

            report = verify(problem, result, seed=seed, workers=workers,
            context=oracle_options.get("context"))
            twin_ok, twin_fail = report.feasible, "; ".join(report.failures)
        problems = ev.errors + tuple(f"GPU {g.gpu} infeasible" for g in ev.gpus if not g.feasible)
        out.append(CompareRow(problem.name, problem.n_adapters, problem.model, name, result.status,
                              result.num_gpus, result.lower_bound, result.gap, round(result.runtime_s, 4),
                              ev.feasible, "; ".join(problems), twin_ok, twin_fail, file=file,
                              optimal_wrt=result.optimal_wrt, criterion=problem.slo.describe()))
        progress(len(out))
    return out


def _same_bound(rows: list[CompareRow]) -> list[CompareRow]:
    """The rows of one instance with its one best lower bound (the largest any run proved), gaps and
    statuses restated against it."""
    best = max((r.lower_bound for r in rows if r.num_gpus > 0), default=0)
    out = []
    for r in rows:
        if r.num_gpus <= 0 or r.lower_bound == best:
            out.append(r)
            continue
        status = "optimal" if r.status == "feasible" and r.num_gpus == best else r.status
        out.append(replace(r, lower_bound=best, gap=(r.num_gpus - best) / r.num_gpus, status=status,
                           optimal_wrt=r.optimal_wrt or (OPTIMAL_WRT if status == "optimal" else None)))
    return out


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
