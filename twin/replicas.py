"""Replicas: N vLLM servers sharing one GPU, each with its own adapters (issue 17 part 3).

**Memory split.** vLLM's ``--gpu-memory-utilization`` is the fraction of the GPU one server may take, weights
included; N replicas launched as "Mind the Memory Gap" does (arXiv 2503.08311) each get utilisation u / N.
Each replica holds its own copy of the weights, its own activation/graph overhead, its own LoRA buffers and
the KV cache its share leaves: that is exactly :meth:`twin.profile.MemoryModel.kv_tokens` at utilisation
u / N (the model's KV base already pays weights and overhead once per server), so the one KV/OOM rule of the
toolkit applies per replica unchanged: a replica cannot start (OOM) when its share holds fewer KV tokens
than ``max_model_len``. Total weights are N copies; total KV is the sum of the shares.

**Shared GPU (step times).** A twin step is a forward pass (GPU: weight and KV reads from HBM, matrix
products on the SMs) plus host-side time (scheduling, sampling and output handling: the profile's
``sched_*`` terms; adapter loads are also counted host-side). Replicas run their host parts in parallel
(separate processes) but their forward passes share one HBM and one set of SMs. A memory-bound decode of k
replicas at once moves the sum of their bytes through one HBM, a compute-bound prefill needs the sum of
their FLOPs: either way, k concurrent forward passes progress at 1/k of their lone speed (processor
sharing of the GPU). A replica's forward pass is therefore stretched by its **slowdown**

    s_i = 1 + Σ_{j≠i} φ_j,   φ_j = F_j / max(T_i, T_j),

the expected number of other replicas in a forward pass while replica i is in one, where F_j is replica
j's (stretched) forward time and T its active span (the run's window, or its makespan for a closed batch).
Checks: no host time (φ = 1) gives s = N (N forwards in turn: the GPU is the bottleneck and replication
cannot add throughput); idle replicas (φ = 0) give s = 1.

**Approximation (stated).** The N engines are not stepped in one event loop: each replica is simulated
alone with its forward terms multiplied by s_i (:func:`gpu_scaled`), and s is the fixed point of the formula
above (damped iteration, at most :data:`MAX_ITERATIONS` rounds, stopped when no s_i moves by more than
:data:`TOLERANCE`). This is a mean-field model: it assumes the replicas' forward passes overlap at random
(uniformly over the span), so bursts (two replicas prefilling at the same instant) and phase locking are
averaged out, and the GPU's own ability to overlap one small kernel with another (MPS fills idle SMs) is
ignored: a forward pass that leaves HBM or SMs idle alone still counts as occupying the whole GPU. It is
deterministic: the same inputs give the same slowdowns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from twin.errors import InputError
from twin.metrics import SimResult
from twin.profile import MemoryModel, Profile, is_oom
from twin.spec import Instance

__all__ = ["FORWARD_FIELDS", "ReplicasResult", "gpu_scaled", "replica_kv_tokens", "replica_utilization",
           "shared_gpu_fixed_point", "simulate_replicas", "split_adapters"]

T = TypeVar("T")
TOLERANCE = 1e-3
MAX_ITERATIONS = 40
#: the StepModel terms of the forward pass (GPU time); the others (sched_*, loads) are host time
FORWARD_FIELDS = ("base_ms", "per_seq_ms", "per_prefill_token_ms", "per_ctx_ktoken_ms",
                  "lora_ms_per_adapter_rank", "lora_ms_per_adapter_sq")


def check_replicas(replicas: Any, field: str = "replicas") -> int:
    """``replicas`` as an integer ≥ 1 (else an input error naming ``field``)."""
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise InputError(f"must be an integer ≥ 1 (got {replicas!r})", field=field, value=replicas)
    return replicas


def replica_utilization(gpu_memory_utilization: float, replicas: int) -> float:
    """Each replica's ``--gpu-memory-utilization``: the GPU's share u split evenly, u / N."""
    return float(gpu_memory_utilization) / check_replicas(replicas)


def replica_kv_tokens(memory: MemoryModel, replicas: int, max_loras: int, max_lora_rank: int,
                      gpu_memory_utilization: float = 0.9) -> float | None:
    """KV tokens of one replica (its weights, overhead and LoRA buffers paid from its share u / N)."""
    return memory.kv_tokens(max_loras, max_lora_rank, replica_utilization(gpu_memory_utilization, replicas))


def replica_oom(memory: MemoryModel, replicas: int, max_loras: int, max_lora_rank: int, max_model_len: int,
                gpu_memory_utilization: float = 0.9) -> bool:
    """A replica cannot start: its share holds fewer KV tokens than ``max_model_len`` (the one OOM rule)."""
    return is_oom(replica_kv_tokens(memory, replicas, max_loras, max_lora_rank, gpu_memory_utilization),
                  max_model_len)


def gpu_scaled(profile: Profile, slowdown: float) -> Profile:
    """``profile`` with its forward-pass terms (:data:`FORWARD_FIELDS`) multiplied by ``slowdown``."""
    if slowdown == 1.0:
        return profile
    step = replace(profile.step, **{f: getattr(profile.step, f) * slowdown for f in FORWARD_FIELDS})
    return profile.replace(step=step)


def shared_gpu_fixed_point(n: int, run: Callable[[int, float], tuple[T, float, float]]
                           ) -> tuple[list[T], tuple[float, ...], int]:
    """Solve the slowdowns of ``n`` replicas (module doc). ``run(i, s)`` simulates replica i with its forward
    terms stretched by s and returns (result, forward seconds, active span seconds). Returns the last
    results, the slowdowns and the number of rounds."""
    s = [1.0] * n
    rounds = 0
    while True:
        rounds += 1
        outs = [run(i, s[i]) for i in range(n)]
        fwd = [o[1] for o in outs]
        span = [max(o[2], 1e-12) for o in outs]
        new = [min(1.0 + sum(fwd[j] / max(span[i], span[j]) for j in range(n) if j != i), float(n))
               for i in range(n)]
        if n == 1 or max(abs(a - b) for a, b in zip(new, s, strict=True)) <= TOLERANCE \
                or rounds >= MAX_ITERATIONS:
            return [o[0] for o in outs], tuple(round(x, 4) for x in s), rounds
        s = [0.5 * (a + b) for a, b in zip(s, new, strict=True)]


def split_adapters(instance: Instance, replicas: int) -> list[list[int]]:
    """Adapters dealt to ``replicas`` groups, largest request rate first, each to the group with the least
    rate so far (ties: fewest adapters, then lowest index): balanced loads, deterministic."""
    check_replicas(replicas)
    if replicas > instance.n_adapters:
        raise InputError(f"must be at most the instance's {instance.n_adapters} adapters (each replica "
                         f"serves at least one) (got {replicas})", field="replicas", value=replicas)
    order = sorted(range(instance.n_adapters), key=lambda i: (-float(instance.rates[i]), i))
    groups: list[list[int]] = [[] for _ in range(replicas)]
    load = [0.0] * replicas
    for i in order:
        g = min(range(replicas), key=lambda k: (load[k], len(groups[k]), k))
        groups[g].append(i)
        load[g] += float(instance.rates[i])
    return [sorted(g) for g in groups]


@dataclass(frozen=True)
class ReplicasResult(Generic[T]):
    """N replicas on one GPU: each replica's result, the slowdowns of their forward passes, the rounds."""

    results: tuple[T, ...]
    slowdowns: tuple[float, ...]
    rounds: int
    gpu_memory_utilization: float  # the GPU's, split evenly
    groups: tuple[tuple[int, ...], ...] = ()  # adapter indices of each replica (simulate_replicas)

    @property
    def replicas(self) -> int:
        return len(self.results)


def _sim_total(res: ReplicasResult[SimResult]) -> dict[str, Any]:
    ok = res.results
    return {"replicas": res.replicas, "gpu_memory_utilization": res.gpu_memory_utilization,
            "replica_gpu_memory_utilization": replica_utilization(res.gpu_memory_utilization, res.replicas),
            "throughput_tok_s": sum(r.throughput_tok_s for r in ok),
            "oom": any(r.oom for r in ok), "meets_criterion": all(r.meets() for r in ok),
            "slowdowns": list(res.slowdowns), "rounds": res.rounds}


def replicas_to_dict(res: ReplicasResult[SimResult], instance: Instance) -> dict[str, Any]:
    """JSON of a :func:`simulate_replicas` result: the totals and one record per replica."""
    out = _sim_total(res)
    out["per_replica"] = [
        {"replica": i, "adapters": [instance.ids[a] for a in res.groups[i]], "slowdown": res.slowdowns[i],
         **r.to_dict(per_adapter=False)} for i, r in enumerate(res.results)]
    return out


def simulate_replicas(instance: Instance, replicas: int, *, groups: Sequence[Sequence[int]] | None = None,
                      max_loras: Sequence[int] | int, max_cpu_loras: Sequence[int | None] | int | None = None,
                      max_lora_rank: Sequence[int | None] | int | None = None, seed: int = 0,
                      profile: Profile | None = None, max_num_seqs: Sequence[int | None] | None = None,
                      gpu_memory_utilization: float | None = None) -> ReplicasResult[SimResult]:
    """Simulate ``replicas`` servers on one GPU of ``instance`` (the module doc): replica i serves the
    adapters ``groups[i]`` (default :func:`split_adapters`) at utilisation u / N, with the instance's server
    settings and its own LoRA settings (one value for all, or one per replica; ``max_loras`` is capped at
    the replica's adapter count; ``max_num_seqs`` one per replica, None = the instance's). The GPU's
    utilisation u is ``gpu_memory_utilization`` (default the instance's). A replica that cannot start is an
    OOM result; the others still share."""
    from twin.catalogue import load_profile
    from twin.simulate import simulate

    n = check_replicas(replicas)
    grp = [list(g) for g in groups] if groups is not None else split_adapters(instance, n)
    if len(grp) != n or any(not g for g in grp):
        raise InputError(f"needs {n} non-empty adapter groups (got {len(grp)})", field="groups",
                         value=[len(g) for g in grp])
    prof = profile if profile is not None else load_profile(instance.model, instance.gpu)
    u = float(instance.server.gpu_memory_utilization if gpu_memory_utilization is None
              else gpu_memory_utilization)
    server = dataclasses.replace(instance.server, gpu_memory_utilization=replica_utilization(u, n))

    def per(v: Any, i: int) -> Any:
        return v[i] if isinstance(v, (list, tuple)) else v

    seqs = [None] * n if max_num_seqs is None else list(max_num_seqs)
    subs = [instance.subset(g).replace(server=server if seqs[i] is None else dataclasses.replace(
        server, max_num_seqs=int(seqs[i]))) for i, g in enumerate(grp)]  # type: ignore[arg-type]

    def run(i: int, s: float) -> tuple[SimResult, float, float]:
        k = min(int(per(max_loras, i)), subs[i].n_adapters)
        r = simulate(subs[i], max_loras=k, max_cpu_loras=per(max_cpu_loras, i),
                     max_lora_rank=per(max_lora_rank, i), seed=seed, profile=gpu_scaled(prof, s))
        return r, r.forward_fraction * r.duration_s, r.duration_s

    results, slow, rounds = shared_gpu_fixed_point(n, run)
    return ReplicasResult(tuple(results), slow, rounds, u, tuple(tuple(g) for g in grp))
