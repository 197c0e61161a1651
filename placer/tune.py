"""``placer solve --tune-batch``: every GPU of a plan gets its own max_num_seqs and gpu_memory_utilization.

The minimal, honest version of issue 17 part 2. The placement is **not** changed: the solver places the
adapters as usual (same GPU count, same adapters per GPU, same LoRA settings), then :func:`tune_batch` runs
the Batching Configuration Advisor (:func:`placer.advise.advise`, the twin) on every GPU at that GPU's
settings and records

- ``max_num_seqs`` = the GPU's B_opt (the smallest batch cap within 5 % of the best throughput of the sweep
  that meets the criterion in force), and
- ``gpu_memory_utilization`` = the smallest utilisation whose KV cache holds B_opt's KV need (never above the
  instance's),

when the advisor finds a B_opt and its own re-run at the smaller utilisation meets the criterion; otherwise
the GPU keeps the instance's settings (recorded explicitly). The tuned plan is re-verified in the twin on the
tuned GPUs (:func:`placer.check.verify.verify`, which simulates each GPU with its own fields); a tuned GPU
that fails there goes back to the instance's settings. By construction the GPU count never grows.

Limit of this version: the oracle and the surrogates' features do not treat ``max_num_seqs`` as a decision
variable during the search; the tuning is per GPU, after the placement.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from placer.advise import advise
from placer.check.verify import verify
from placer.context import DEFAULT_CONTEXT, Context
from placer.result import GpuPlan, Result
from twin.parallel import map_unordered
from twin.profile import Profile
from twin.spec import Instance

__all__ = ["TunedGpu", "tune_batch"]


@dataclass(frozen=True)
class TunedGpu:
    """One GPU's outcome: the settings recorded in the plan and the KV memory they free."""

    gpu: int
    max_num_seqs: int
    gpu_memory_utilization: float
    tuned: bool  # False: the instance's settings were kept
    freed_gib: float  # KV memory freed against the instance's gpu_memory_utilization (0 when not tuned)
    note: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _advise_gpu(args: tuple[Instance, int, GpuPlan, int, Profile]) -> tuple[int, TunedGpu]:
    sub, j, g, seed, profile = args
    srv = sub.server
    advice = advise(sub, max_loras=g.max_loras, max_cpu_loras=g.max_cpu_loras, max_lora_rank=g.max_lora_rank,
                    seed=seed, context=Context(profile=profile))
    b, check = advice.b_opt, advice.check
    if b is None or check is None or not check.meets_criterion or check.oom:
        return j, TunedGpu(j, srv.max_num_seqs, srv.gpu_memory_utilization, False, 0.0,
                           f"instance settings kept ({advice.note})")
    util = min(float(b.gpu_memory_utilization), float(srv.gpu_memory_utilization))
    return j, TunedGpu(j, min(b.max_num_seqs, srv.max_num_seqs), util, True, float(advice.freed_gib or 0.0),
                       advice.note)


def _with(plan: Result, rows: dict[int, TunedGpu]) -> Result:
    gpus = tuple(dataclasses.replace(g, max_num_seqs=rows[j].max_num_seqs,
                                     gpu_memory_utilization=rows[j].gpu_memory_utilization)
                 for j, g in enumerate(plan.gpus))
    return plan.replace(gpus=gpus)


def tune_batch(problem: Instance, plan: Result, *, seed: int = 0, workers: int = 1,
               context: Context | None = None,
               progress: Callable[[int, int], None] | None = None) -> tuple[Result, tuple[TunedGpu, ...]]:
    """``plan`` with every GPU's ``max_num_seqs`` and ``gpu_memory_utilization`` chosen by the advisor (see
    the module doc) and the per-GPU outcome. The GPUs, their adapters and LoRA settings are unchanged."""
    if not plan.gpus:
        return plan, ()
    profile = (context or DEFAULT_CONTEXT).profile_for(problem)
    jobs = [(problem.subset(list(g.adapters)), j, g, seed, profile) for j, g in enumerate(plan.gpus)]
    rows: dict[int, TunedGpu] = {}
    if progress is not None:
        progress(0, len(jobs))
    for j, row in map_unordered(_advise_gpu, jobs, workers=max(1, min(int(workers), len(jobs)))):
        rows[j] = row
        if progress is not None:
            progress(len(rows), len(jobs))
    tuned = _with(plan, rows)
    changed = [j for j, r in rows.items() if r.tuned]
    if changed:  # the twin's verdict on the tuned GPUs, each at its own settings
        report = verify(problem, tuned, seed=seed, workers=workers, only=changed,
                        context=Context(profile=profile))
        srv = problem.server
        for row in report.gpus:
            if row.get("oom") or not row.get("meets_criterion"):  # passes() on the merged row
                j = int(row["gpu"])
                rows[j] = TunedGpu(j, srv.max_num_seqs, srv.gpu_memory_utilization, False, 0.0,
                                   "instance settings kept: the tuned settings fail the twin verification")
        tuned = _with(plan, rows)
    return tuned, tuple(rows[j] for j in range(len(plan.gpus)))
