"""Repair a plan with the twin: split every GPU that fails the criterion or to start until each part passes.

The surrogate oracle can be wrong near a GPU's capacity. :func:`repair` re-simulates every GPU of a plan
in the twin (:func:`placer.check.verify.verify`); a failing GPU is split into two GPUs of about equal load
(its
adapters in zig-zag rate order, alternately), each configured by the oracle's best slot count, and the parts
are simulated again — recursively, until every GPU passes or is a single adapter. The result is a new plan
(solver ``<name>+repair``) whose GPUs passed the twin with the same seed; ``extra.repair`` says what changed.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from placer.check.verify import verify
from placer.heuristics.fill import plan_gpu, zigzag
from placer.oracle.base import Oracle
from placer.result import GpuPlan, Result
from placer.stats import RepairStats
from twin.spec import Instance

MAX_ROUNDS = 8


def _split(problem: Instance, gpu: GpuPlan, oracle: Oracle) -> list[GpuPlan]:
    idx = np.array([problem.index[a] for a in gpu.adapters], dtype=np.int64)
    order = zigzag(problem.rates, idx)
    parts = [np.sort(order[0::2]), np.sort(order[1::2])]
    out = []
    for part in parts:
        v = oracle.evaluate(problem, part)
        point = oracle.points(problem, [(part, int(v.best_max_loras or 1), None, None)])[0]
        out.append(plan_gpu(problem, part, point))
    return out


def repair(problem: Instance, plan: Result, oracle: Oracle, *, seed: int = 0, workers: int | None = None
           ) -> Result:
    """A plan whose every GPU passed the twin (seed ``seed``): failing GPUs split until they pass."""
    start = time.perf_counter()
    gpus = list(plan.gpus)
    passed: set[int] = set()  # positions in ``gpus`` already simulated and fine
    split = 0
    sims = 0
    for _ in range(MAX_ROUNDS):
        todo = [j for j in range(len(gpus)) if j not in passed]
        if not todo:
            break
        sub = Result(solver=plan.solver, status="feasible", num_gpus=len(gpus), lower_bound=plan.lower_bound,
                     runtime_s=0.0, gpus=tuple(gpus))
        report = verify(problem, sub, seed=seed, workers=workers, only=todo, context=oracle.context)
        sims += len(report.gpus)
        failing = {row["gpu"] for row in report.gpus if row["oom"] or not row["meets_criterion"]}  # SLO too
        passed |= set(todo) - failing
        if not failing:
            break
        new: list[GpuPlan] = []
        kept: set[int] = set()
        for j, g in enumerate(gpus):
            if j in failing and len(g.adapters) > 1:
                new.extend(_split(problem, g, oracle))
                split += 1
            else:
                if j in passed:
                    kept.add(len(new))
                new.append(g)
        gpus, passed = new, kept
    record = RepairStats(split_gpus=split, simulations=sims, gpus_before=plan.num_gpus,
                         all_pass=len(passed) == len(gpus), seconds=round(time.perf_counter() - start, 2))
    stats = plan.stats.replace(repair=record)
    return replace(plan, solver=f"{plan.solver}+repair", num_gpus=len(gpus), gpus=tuple(gpus),
                   status="feasible" if plan.status != "infeasible" else plan.status, stats=stats)
