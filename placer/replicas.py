"""Replicas per GPU (``placer solve --replicas-per-gpu N``): several vLLM servers on one GPU, where they pay.

After a normal placement, :func:`merge_replicas` tries to host the adapters of whole GPUs as replicas on one
GPU, each replica keeping its GPU's adapters and LoRA settings and getting an even share of the instance's
``gpu_memory_utilization`` (u / k for k replicas). A merge is accepted only when the twin
(:func:`twin.replicas.simulate_replicas`: the memory split and the shared-GPU slowdown) says every replica
starts and meets the criterion in force; then the plan has one GPU fewer. Otherwise the GPUs stay as they
were: a plan uses replicas only where the twin says they pay.

The search is greedy and deterministic: GPUs in order of offered load (lightest first, then by index); a GPU
that is not yet merged opens a group and takes the lightest unmerged GPUs one by one while the group has
fewer than N servers and the twin accepts the larger group; the first refusal closes the group (a heavier
partner would load the shared GPU more). A group whose servers cannot all start at u / k is refused by the
memory rule before anything is simulated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from placer.context import DEFAULT_CONTEXT, Context
from placer.problem.memory import memory_fits
from placer.result import GpuPlan, ReplicaPlan, Result
from twin.metrics import SimResult
from twin.profile import Profile
from twin.replicas import ReplicasResult, check_replicas, simulate_replicas
from twin.spec import Instance

__all__ = ["merge_replicas", "simulate_gpu"]


def _servers(g: GpuPlan, u: float) -> tuple[ReplicaPlan, ...]:
    """The servers of a GPU: its replicas, or itself as one server at utilisation ``u``."""
    return g.replicas or (ReplicaPlan(g.adapters, g.max_loras, g.max_cpu_loras, g.max_lora_rank, u,
                                      g.max_num_seqs),)


def simulate_gpu(problem: Instance, servers: Sequence[ReplicaPlan], *, profile: Profile, seed: int = 0,
                 gpu_memory_utilization: float | None = None) -> ReplicasResult[SimResult]:
    """The twin's run of ``servers`` sharing one GPU (their adapters are a subset of ``problem``'s)."""
    ids = [a for s in servers for a in s.adapters]
    sub = problem.subset(ids)
    groups, start = [], 0
    for s in servers:
        groups.append(list(range(start, start + len(s.adapters))))
        start += len(s.adapters)
    u = gpu_memory_utilization if gpu_memory_utilization is not None else \
        sum(s.gpu_memory_utilization for s in servers)
    return simulate_replicas(sub, len(servers), groups=groups, max_loras=[s.max_loras for s in servers],
                             max_cpu_loras=[s.max_cpu_loras for s in servers],
                             max_lora_rank=[s.max_lora_rank for s in servers], seed=seed, profile=profile,
                             max_num_seqs=[s.max_num_seqs for s in servers], gpu_memory_utilization=u)


def _merged(servers: list[ReplicaPlan], u: float, parts: Sequence[GpuPlan]) -> GpuPlan:
    """One GPU hosting ``servers`` at u / k each; the GPU-level fields summarise them."""
    k = len(servers)
    shared = tuple(dataclasses.replace(s, gpu_memory_utilization=round(u / k, 6)) for s in servers)
    offered = [g.offered_tok_s for g in parts]
    return GpuPlan(adapters=tuple(a for s in shared for a in s.adapters),
                   max_loras=sum(s.max_loras for s in shared),
                   max_cpu_loras=sum(s.max_cpu_loras for s in shared),
                   max_lora_rank=max(s.max_lora_rank for s in shared),
                   offered_tok_s=None if any(o is None for o in offered)
                   else float(sum(o for o in offered if o is not None)), replicas=shared)


def merge_replicas(problem: Instance, plan: Result, replicas_per_gpu: int, *, seed: int = 0,
                   context: Context | None = None, progress: Callable[[int, int], None] | None = None
                   ) -> Result:
    """``plan`` with GPUs merged as replicas where the twin accepts it (module doc); N = 1: ``plan`` itself.
    The result's ``extra.replicas`` records N, the GPUs saved and the twin checks made. A merged plan is
    ``feasible`` (an ``optimal`` status was for one server per GPU) and its lower bound at most its GPUs."""
    n = check_replicas(replicas_per_gpu, "--replicas-per-gpu")
    if n == 1 or plan.num_gpus < 2:
        return plan
    prof = (context or DEFAULT_CONTEXT).profile_for(problem)
    u = float(problem.server.gpu_memory_utilization)
    rate = problem.rates
    index = problem.index

    def load(j: int) -> float:
        return float(sum(rate[index[a]] for a in plan.gpus[j].adapters))

    order = sorted(range(plan.num_gpus), key=lambda j: (load(j), j))
    used: set[int] = set()
    gpus: list[GpuPlan] = []
    tried = 0
    for j in order:
        if j in used:
            continue
        used.add(j)
        group = [j]
        for k in order:
            if len(group) >= n or k in used:
                continue
            trial = group + [k]
            servers = [s for m in trial for s in _servers(plan.gpus[m], u)]
            if len(servers) > n:
                break
            tried += 1
            if progress is not None:
                progress(tried, plan.num_gpus)
            share = u / len(servers)
            fits = all(memory_fits(problem, s.max_loras, s.max_lora_rank, prof, share) for s in servers)
            if fits and all(r.meets() for r in simulate_gpu(problem, servers, profile=prof, seed=seed,
                                                              gpu_memory_utilization=u).results):
                group = trial
                used.add(k)
            else:
                break
        if len(group) == 1:
            gpus.append(plan.gpus[j])
        else:
            gpus.append(_merged([s for m in group for s in _servers(plan.gpus[m], u)], u,
                                [plan.gpus[m] for m in group]))
    merged = plan.num_gpus - len(gpus)
    # the plan's ``extra.replicas``: what was asked, what the twin accepted, how many merges were tried
    record = {"per_gpu": n, "gpus_saved": merged, "twin_checks": tried,
              "gpus_with_replicas": sum(1 for g in gpus if g.replicas)}
    stats = plan.stats.replace(other={**plan.stats.other, "replicas": record})
    return plan.replace(gpus=tuple(gpus), num_gpus=len(gpus), stats=stats,
                        status=plan.status if merged == 0 else "feasible",
                        lower_bound=min(plan.lower_bound, len(gpus)))
