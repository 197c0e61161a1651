"""Twin verification of a plan: re-simulate every GPU with its own settings and name any that fails.

:func:`verify` first checks the plan's structure with the evaluator
(:func:`placer.check.evaluate.check_plan`); a
plan with unknown adapters or violated constraints is rejected with an :class:`~twin.errors.InputError`
giving the reason. Then every GPU (or a seeded sample of them, for very large plans) is simulated by
``twin.simulate`` on a backend of :mod:`twin.parallel` — a local process pool (default) or a Ray cluster
(``backend="ray"``, extra ``ray``); the rows are the same whatever runs them. Each GPU is judged by the
problem's criterion (``problem.slo``: the default SLO, the file's ``slo`` section, or ``criterion: paper`` for
the papers' rule alone); a GPU that fails it — served fraction, a latency percentile over its bound, or a
memory error — makes the plan infeasible and is named in ``failures`` with the measured value, the bound and
by how much.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from placer.check.evaluate import check_plan
from placer.context import DEFAULT_CONTEXT, Context
from placer.result import Result, plural
from twin.errors import InputError
from twin.parallel import check_backend, map_unordered
from twin.profile import Profile
from twin.simulate import simulate
from twin.spec import Instance, Slo

DEFAULT_WORKERS = 2


@dataclass(frozen=True)
class VerifyReport:
    """The twin's verdict on a plan: ``feasible`` ⇔ every simulated GPU meets ``criterion`` (and starts)."""

    feasible: bool
    num_gpus: int
    simulated: tuple[int, ...]  # indices of the GPUs simulated (all of them unless sampled)
    gpus: tuple[dict[str, Any], ...]  # one twin result per simulated GPU (with ``gpu``, ``adapters`` count)
    failures: tuple[str, ...] = field(default=())
    seed: int = 0
    wall_s: float = 0.0
    criterion: str = ""  # the criterion checked, in words

    @property
    def sampled(self) -> bool:
        return len(self.simulated) < self.num_gpus

    def summary(self, *, markup: bool = False) -> str:
        """One line: how many GPUs were simulated and the verdict (for a sample: about the sample only)."""
        what = (f"{len(self.simulated)} of {plural(self.num_gpus, 'GPU')} simulated" if self.sampled
                else f"{plural(self.num_gpus, 'GPU')} simulated")
        if self.criterion:
            what += f", checked against {self.criterion}"
        if self.feasible:
            verdict = "feasible" + (" for the sampled GPUs only (the others were not checked)"
                                    if self.sampled else "")
            return f"{what}: " + (f"[green]{verdict}[/green]" if markup else verdict)
        return f"{what}: " + ("[red]NOT feasible[/red]" if markup else "NOT feasible")

    def to_dict(self) -> dict[str, Any]:
        return {"feasible": self.feasible, "criterion": self.criterion, "num_gpus": self.num_gpus,
                "sampled": self.sampled,
                "simulated": list(self.simulated), "failures": list(self.failures), "seed": self.seed,
                "wall_s": self.wall_s, "gpus": list(self.gpus)}


def _simulate_gpu(args: tuple[Instance, int, int, int, int, int, Profile]) -> dict[str, Any]:
    sub, j, s, m, r, seed, profile = args
    sim = simulate(sub, max_loras=s, max_cpu_loras=m, max_lora_rank=r, seed=seed, profile=profile)
    out: dict[str, Any] = {"gpu": j, "n_adapters": sub.n_adapters}
    out.update(sim.to_dict(per_adapter=False))
    return out


def verify(problem: Instance, plan: Result, *, seed: int = 0, workers: int | None = None,
           sample: int | None = None, progress: Callable[[int, int], None] | None = None,
           only: Sequence[int] | None = None, context: Context | None = None,
           backend: str = "local") -> VerifyReport:
    """Re-simulate the GPUs of ``plan`` in the twin (``workers`` at a time, default 2).

    ``backend``: ``"local"`` (a process pool on this machine, at most one process per CPU; in-process for one
    worker) or ``"ray"`` (Ray tasks, one CPU each, ``workers`` in flight: the cluster named by
    ``RAY_ADDRESS``, else a local Ray with ``workers`` CPUs). The report is the same on either.
    ``sample``: simulate only that many GPUs, chosen with ``numpy.random.default_rng(seed)`` (the report says
    which); None = all. ``only``: simulate just these GPU indices (before sampling). ``context``: the twin
    profile to simulate with (default: the shipped one).
    ``progress(done, total)`` is called after each simulated GPU. Raises
    :class:`InputError` when the plan does not fit the problem.
    """
    import time

    check_backend(backend)
    profile = (context or DEFAULT_CONTEXT).profile_for(problem)
    errors = [e for e in check_plan(problem, plan, profile) if "memory error" not in e]
    if errors:
        raise InputError(f"plan does not fit the instance: {errors[0]}" +
                         (f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""),
                         field="gpus", value=plan.num_gpus)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(f"must be a non-negative integer (got {seed!r})", field="seed", value=seed)
    start = time.perf_counter()
    chosen = list(range(plan.num_gpus)) if only is None else sorted({int(j) for j in only})
    if sample is not None and 0 < sample < len(chosen):
        rng = np.random.default_rng(seed)
        chosen = sorted(rng.choice(chosen, size=sample, replace=False).tolist())
    jobs = []
    for j in chosen:
        g = plan.gpus[j]
        sub = problem.subset(list(g.adapters))
        jobs.append((sub, j, g.max_loras, g.max_cpu_loras, g.max_lora_rank, seed, profile))
    n_workers = DEFAULT_WORKERS if workers is None else max(1, int(workers))
    # a local pool gets no more processes than this machine has CPUs; a Ray cluster may have many more
    n_workers = min(n_workers, len(jobs), (os.cpu_count() or 1) if backend == "local" else len(jobs))
    by_gpu: dict[int, dict[str, Any]] = {}
    if progress is not None:
        progress(0, len(jobs))  # the total is known before the first GPU finishes
    if jobs:
        for row in map_unordered(_simulate_gpu, jobs, workers=n_workers, backend=backend):
            by_gpu[row["gpu"]] = row
            if progress is not None:
                progress(len(by_gpu), len(jobs))
    rows = [by_gpu[j] for j in chosen]  # plan order, whatever order the backend finished them in
    failures = [failure(row, problem.slo) for row in rows if not row.get("meets_criterion", True)]
    return VerifyReport(feasible=not failures and bool(rows), num_gpus=plan.num_gpus, simulated=tuple(chosen),
                        gpus=tuple(rows), failures=tuple(failures), seed=seed,
                        wall_s=time.perf_counter() - start, criterion=problem.slo.describe())


def failure(row: dict[str, Any], slo: Slo) -> str:
    """One line naming a failing GPU and by how much it misses the criterion."""
    if row.get("oom"):
        return (f"GPU {row['gpu']} fails to start (memory error): max_loras {row.get('max_loras')}, "
                f"max_lora_rank {row.get('max_lora_rank')}")
    parts = []
    served = row.get("served_fraction")
    if served is not None and served < slo.min_served_fraction:
        rule = "starves" if slo.min_served_fraction == 0.9 else "serves too little"
        parts.append(f"{rule}: throughput {row['throughput_tok_s']:,.0f} tok/s < "
                     f"{slo.min_served_fraction:g} × the {row['offered_tok_s']:,.0f} tok/s that arrived "
                     "in this run (offered load "
                     f"{row.get('expected_offered_tok_s') or math.nan:,.0f} tok/s)")
    parts += [f for f in row.get("criterion_failures", []) if not f.startswith("served fraction")]
    queue = f"; queue {row.get('queue_trend')}, {row.get('waiting_end')} waiting at the end" if parts else ""
    return f"GPU {row['gpu']} " + "; ".join(parts or ["fails the criterion"]) + queue
