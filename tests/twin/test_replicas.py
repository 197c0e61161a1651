"""twin.replicas: the memory split of N servers on one GPU, the shared-GPU slowdown, the joint simulation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from twin import Adapter, Instance, Workload, load_profile, simulate
from twin.engine import run_engine
from twin.errors import InputError
from twin.profile import MemoryModel, Profile, StepModel
from twin.replicas import (
    gpu_scaled,
    replica_kv_tokens,
    replica_oom,
    replica_utilization,
    shared_gpu_fixed_point,
    simulate_replicas,
    split_adapters,
)

LLAMA = "llama-3.1-8b-instruct"
# 80 GiB, 128 KiB of KV per token: one percent of utilisation is 0.8 GiB = 6,553.6 tokens
MEM = MemoryModel(kv_base_tokens=400_000.0, kv_per_slot_rank=10.0, kv_per_slot=100.0,
                  kv_bytes_per_token=131072, gpu_mem_gib=80.0, ref_utilization=0.9)


def test_memory_split_by_hand() -> None:
    assert replica_utilization(0.9, 2) == pytest.approx(0.45)
    assert replica_utilization(0.9, 4) == pytest.approx(0.225)
    # each replica pays weights and overhead from its own share: KV = base + (u/N − 0.9) · 655,360 tokens
    assert replica_kv_tokens(MEM, 1, 0, 0, 0.9) == pytest.approx(400_000.0)
    assert replica_kv_tokens(MEM, 2, 0, 0, 0.9) == pytest.approx(400_000.0 - 0.45 * 655_360)  # 105,088
    # its own LoRA buffers: 4 slots at rank 16 cost 4·16·10 + 4·100 = 1,040 tokens per replica
    assert replica_kv_tokens(MEM, 2, 4, 16, 0.9) == pytest.approx(105_088.0 - 1_040.0)
    # 4 replicas at 0.225: 400,000 − 0.675 · 655,360 < 0 → none can start; 3 at 0.3 hold 6,784 tokens
    assert replica_kv_tokens(MEM, 4, 0, 0, 0.9) == pytest.approx(400_000.0 - 0.675 * 655_360)
    assert replica_oom(MEM, 4, 1, 8, 2048, 0.9)
    assert replica_kv_tokens(MEM, 3, 0, 0, 0.9) == pytest.approx(400_000.0 - 0.6 * 655_360)
    assert not replica_oom(MEM, 3, 0, 0, 2048, 0.9)
    assert replica_oom(MEM, 3, 0, 0, 8192, 0.9)  # 6,784 < max_model_len 8,192
    with pytest.raises(InputError, match="replicas"):
        replica_utilization(0.9, 0)


def test_slowdown_fixed_point_by_hand() -> None:
    """Two identical replicas, forward g and host c per step: s = 1 + s·g / (c + s·g).
    c = 0: s = 2 (the GPU takes the forwards in turn); c = g: s² − s − 1 = 0, s = golden ratio."""
    def runner(c: float, g: float, steps: int = 100) -> Any:
        def run(i: int, s: float) -> tuple[None, float, float]:
            return None, steps * s * g, steps * (c + s * g)
        return run

    _, s0, _ = shared_gpu_fixed_point(2, runner(0.0, 1.0))
    assert s0 == pytest.approx((2.0, 2.0), abs=2e-3)
    _, s1, rounds = shared_gpu_fixed_point(2, runner(1.0, 1.0))
    assert s1 == pytest.approx(((1 + math.sqrt(5)) / 2,) * 2, abs=2e-3)
    assert rounds > 1
    _, s2, _ = shared_gpu_fixed_point(1, runner(1.0, 1.0))
    assert s2 == (1.0,)
    # a replica that never uses the GPU does not slow the other one
    def lopsided(i: int, s: float) -> tuple[None, float, float]:
        return None, (50.0 * s if i == 0 else 0.0), 100.0
    _, s3, _ = shared_gpu_fixed_point(2, lopsided)
    assert s3[0] == pytest.approx(1.0) and s3[1] == pytest.approx(1.5, abs=2e-3)


def _forward_only_profile() -> Profile:
    mem = MemoryModel(kv_base_tokens=200_000.0, kv_per_slot_rank=0.0, kv_per_slot=0.0,
                      kv_bytes_per_token=131072, gpu_mem_gib=80.0)
    return Profile(model=LLAMA, gpu="h100-64gb", max_model_len=4096, memory=mem,
                   step=StepModel(base_ms=10.0, per_seq_ms=0.1))


def test_saturated_replicas_without_host_time_gain_nothing() -> None:
    """A closed batch, forward time only: two replicas each take twice as long per step (s → 2), so two
    replicas of n/2 requests finish when one server of n requests would (within the fixed point's
    tolerance)."""
    prof = _forward_only_profile()

    def batch(p: Profile, n: int) -> Any:
        return run_engine(np.zeros(n), np.zeros(n, np.int64), np.full(n, 100, np.int64),
                          np.full(n, 50, np.int64), np.array([8]), max_loras=1, max_cpu_loras=1,
                          max_lora_rank=8, kv_blocks=5000, profile=p, max_num_batched_tokens=2048,
                          max_num_seqs=8, duration_s=1e9)

    one = float(np.max(batch(prof, 64).finish_s))
    runs, slow, _ = shared_gpu_fixed_point(
        2, lambda i, s: (r := batch(gpu_scaled(prof, s), 32), r.forward_s, float(np.max(r.finish_s))))
    assert slow == pytest.approx((2.0, 2.0), abs=3e-3)
    assert max(float(np.max(r.finish_s)) for r in runs) == pytest.approx(one, rel=3e-3)
    assert gpu_scaled(prof, 2.0).step.base_ms == 20.0 and gpu_scaled(prof, 2.0).step.sched_base_ms == 0.0


def _inst(rates: list[float], u: float = 0.9, max_model_len: int | None = 8192) -> Instance:
    from twin.spec import ServerSettings

    ads = tuple(Adapter(f"a{i}", 8 if i % 2 else 16, float(r)) for i, r in enumerate(rates))
    return Instance(name="t", model=LLAMA, gpu="h100-64gb", adapters=ads, workload=Workload(duration_s=120.0),
                    server=ServerSettings(gpu_memory_utilization=u, max_model_len=max_model_len))


def test_split_adapters_balances_rates() -> None:
    inst = _inst([4.0, 3.0, 2.0, 1.0, 1.0])
    groups = split_adapters(inst, 2)
    assert sorted(i for g in groups for i in g) == list(range(5))
    loads = [sum(inst.rates[g]) for g in groups]
    assert loads == [5.0, 6.0] or loads == [6.0, 5.0]
    with pytest.raises(InputError, match="at most"):
        split_adapters(inst, 6)


def test_simulate_replicas_one_replica_is_simulate() -> None:
    inst = _inst([0.5, 0.3, 0.2])
    prof = load_profile(LLAMA, "h100-64gb")
    res = simulate_replicas(inst, 1, max_loras=2, profile=prof)
    ref = simulate(inst, max_loras=2, profile=prof)
    assert res.slowdowns == (1.0,) and res.rounds == 1
    assert res.results[0].throughput_tok_s == ref.throughput_tok_s
    assert res.results[0].forward_fraction > 0


def test_simulate_replicas_memory_and_sharing() -> None:
    inst = _inst([0.5, 0.4, 0.3, 0.2])
    prof = load_profile(LLAMA, "h100-64gb")
    res = simulate_replicas(inst, 2, max_loras=2, profile=prof)
    assert res.replicas == 2 and sorted(i for g in res.groups for i in g) == [0, 1, 2, 3]
    for r in res.results:  # each at 0.45: the MemoryModel's KV at that utilisation
        assert r.kv_cache_tokens == pytest.approx(prof.memory.kv_tokens(r.max_loras, r.max_lora_rank, 0.45))
    assert not any(r.oom for r in res.results)
    assert all(1.0 < s < 2.0 for s in res.slowdowns)  # light load: the GPU is shared, not saturated
    alone = [simulate(inst.subset(g).replace(server=inst.server.__class__(gpu_memory_utilization=0.45,
                                                                           max_model_len=8192)),
                      max_loras=2, profile=prof) for g in res.groups]
    for shared, own in zip(res.results, alone, strict=True):  # sharing only slows a replica down
        assert shared.itl_mean_s > own.itl_mean_s
    # Llama-3.1-8B at 0.9 / 4 = 0.225 cannot hold its weights and one 8,192-token request: memory errors
    oom = simulate_replicas(inst, 4, max_loras=1, profile=prof)
    assert all(r.oom for r in oom.results)
    # the model's own max_model_len (131,072) does not fit even half the GPU
    assert all(r.oom for r in simulate_replicas(_inst([0.5, 0.4], max_model_len=None), 2, max_loras=1,
                                                profile=prof).results)
