"""``placer solve --tune-batch``: the batch as a decision variable of placement, then per GPU the advisor.

:func:`place_with_batch` (what the CLI calls) has two steps:

1. **Search** — the solver places again with the oracle's batch dimension on
   (:meth:`placer.oracle.Oracle.batch_searching`: a set that fails at the instance's ``max_num_seqs`` is
   judged at smaller batch caps, each at the utilisation its KV need requires; see
   :mod:`placer.oracle.base`). The searched plan is adopted only when it has **fewer** GPUs than the plan
   without the flag and every GPU with its own settings passes the twin (:func:`placer.check.verify.verify`);
   otherwise the plan without the flag stays (never more GPUs). The surrogate oracle searches the batch only
   within the range its models were trained on (``Surrogate.trained_range("max_num_seqs")``; the shipped
   models record none, so with them only the twin oracle searches; :meth:`Oracle.batch_note` says so).
2. **Refinement** — :func:`tune_batch` (below) on the kept plan: the advisor per GPU frees KV memory.

What the search changes, measured (bench/results/tune_batch-2026-12-05.md): on the placement benchmark's
16-adapter instances with the twin oracle the searched plans had as many GPUs as the fixed ones — under the
default SLO a set that fails at 2048 saturates the GPU (TTFT and the served fraction fail before TPOT), and a
smaller cap lowers TPOT but serves less; the memory comes from the refinement. Where TPOT binds (a tighter
bound, a step time that grows faster with the batch) the search saves GPUs (tests/placer/test_tune_batch.py).

:func:`tune_batch` keeps the placement (same GPU count, same adapters per GPU, same LoRA settings) and runs
the Batching Configuration Advisor (:func:`placer.advise.advise`, the twin) on every GPU at that GPU's
settings and records

- ``max_num_seqs`` = the GPU's B_opt (the smallest batch cap within 5 % of the best throughput of the sweep
  that meets the criterion in force), and
- ``gpu_memory_utilization`` = the smallest utilisation whose KV cache holds B_opt's KV need (never above the
  instance's),

when the advisor finds a B_opt and its own re-run at the smaller utilisation meets the criterion; otherwise
the GPU keeps its settings (the search's, else the instance's; recorded explicitly). The tuned plan is
re-verified in the twin on the tuned GPUs (:func:`placer.check.verify.verify`, which simulates each GPU with
its own fields); a tuned GPU that fails there goes back to its settings before the advisor. By construction
the GPU count never grows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from placer.advise import advise
from placer.check.verify import verify
from placer.context import DEFAULT_CONTEXT, Context
from placer.oracle import Oracle
from placer.result import GpuPlan, Result, plural
from placer.solve import DEFAULT_SOLVER, DEFAULT_TIME_LIMIT, solve
from twin.hardware import GIB
from twin.parallel import map_unordered
from twin.profile import Profile
from twin.spec import Instance, ServerSettings

__all__ = ["BatchPlacement", "TunedGpu", "place_with_batch", "tune_batch"]


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


def _freed_gib(profile: Profile, g: GpuPlan, instance_util: float, util: float) -> float:
    """KV memory (GiB) that ``util`` gives back against the instance's utilisation, at the GPU's settings."""
    mem = profile.memory
    cap_now = mem.kv_tokens(g.max_loras, g.max_lora_rank, instance_util) or 0.0
    cap = mem.kv_tokens(g.max_loras, g.max_lora_rank, util) or 0.0
    return round(max(cap_now - cap, 0.0) * mem.kv_bytes_per_token / GIB, 3)


def _kept(j: int, g: GpuPlan, srv: ServerSettings, profile: Profile, why: str) -> TunedGpu:
    """The GPU's settings before the advisor: its own (from the search) or the instance's."""
    own = g.server(srv)
    searched = g.max_num_seqs is not None or g.gpu_memory_utilization is not None
    return TunedGpu(j, own.max_num_seqs, own.gpu_memory_utilization, searched,
                    _freed_gib(profile, g, srv.gpu_memory_utilization, own.gpu_memory_utilization),
                    f"{'searched' if searched else 'instance'} settings kept: {why}")


def _advise_gpu(args: tuple[Instance, int, GpuPlan, int, Profile]) -> tuple[int, TunedGpu]:
    sub, j, g, seed, profile = args
    srv = sub.server
    own = g.server(srv)  # the advisor sweeps from the GPU's own batch and utilisation
    advice = advise(sub.replace(server=own), max_loras=g.max_loras, max_cpu_loras=g.max_cpu_loras,
                    max_lora_rank=g.max_lora_rank, seed=seed, context=Context(profile=profile))
    b, check = advice.b_opt, advice.check
    if b is None or check is None or not check.meets_criterion or check.oom:
        return j, _kept(j, g, srv, profile, advice.note)
    util = min(float(b.gpu_memory_utilization), float(own.gpu_memory_utilization))
    return j, TunedGpu(j, min(b.max_num_seqs, own.max_num_seqs), util, True,
                       _freed_gib(profile, g, srv.gpu_memory_utilization, util), advice.note)


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
    srv = problem.server
    changed = [j for j, r in rows.items()
               if (r.max_num_seqs, r.gpu_memory_utilization) != (plan.gpus[j].server(srv).max_num_seqs,
                                                                  plan.gpus[j].server(srv).gpu_memory_utilization)]
    if changed:  # the twin's verdict on the GPUs the advisor changed, each at its own settings
        report = verify(problem, tuned, seed=seed, workers=workers, only=changed,
                        context=Context(profile=profile))
        for row in report.gpus:
            if row.get("oom") or not row.get("meets_criterion"):  # passes() on the merged row
                j = int(row["gpu"])
                rows[j] = _kept(j, plan.gpus[j], srv, profile,
                                "the advisor's settings fail the twin verification")
        tuned = _with(plan, rows)
    return tuned, tuple(rows[j] for j in range(len(plan.gpus)))


@dataclass(frozen=True)
class BatchPlacement:
    """``placer solve --tune-batch``: the plan kept, its per-GPU tuning and what the batch search did."""

    plan: Result
    tuned: tuple[TunedGpu, ...]
    gpus_fixed: int  # the plan without the flag
    gpus_searched: int | None  # the plan with the batch searched (None: the oracle could not search it)
    adopted: bool  # True: the searched plan was kept (fewer GPUs, twin-verified)
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {"gpus_fixed": self.gpus_fixed, "gpus_searched": self.gpus_searched, "adopted": self.adopted,
                "note": self.note, "gpus": [t.to_dict() for t in self.tuned]}


def place_with_batch(problem: Instance, plan: Result, oracle: Oracle, *, solver: str = DEFAULT_SOLVER,
                     time_limit: float = DEFAULT_TIME_LIMIT, seed: int = 0, workers: int = 1,
                     context: Context | None = None,
                     progress: Callable[[int, int], None] | None = None) -> BatchPlacement:
    """``plan`` (placed without the flag by ``solver`` with ``oracle``) against a placement that searches the
    batch too; the better, twin-verified one, then :func:`tune_batch` on it (see the module doc)."""
    fixed = plan.num_gpus
    searching = oracle.batch_searching()
    note = searching.batch_note(problem)
    searched: int | None = None
    adopted = False
    if note is None and plan.num_gpus == 1:
        note = "one GPU without searching the batch: nothing to save"
    if note is None and plan.num_gpus > 1:
        other = solve(problem, solver, time_limit=time_limit, seed=seed, oracle=searching)
        searched = other.num_gpus if other.gpus else None
        own = [j for j, g in enumerate(other.gpus) if g.max_num_seqs is not None]
        if searched is None or searched >= fixed:
            note = (f"searching the batch: {'no plan' if searched is None else plural(searched, 'GPU')} "
                    f"against {fixed} without it; the plan without it is kept")
        else:
            report = verify(problem, other, seed=seed, workers=workers, only=own or None, context=context)
            adopted = report.feasible
            note = (f"searching the batch: {plural(searched, 'GPU')} against {fixed} without it"
                    + ("" if adopted else
                       "; a GPU with its own batch fails the twin, the plan without it is kept"))
            if adopted:
                plan = other
    if not plan.gpus:
        return BatchPlacement(plan, (), fixed, searched, adopted, note or "")
    plan, rows = tune_batch(problem, plan, seed=seed, workers=workers, context=context, progress=progress)
    return BatchPlacement(plan, rows, fixed, searched, adopted, note or "")
