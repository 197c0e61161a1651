"""The Batching Configuration Advisor (placer.advise): B_opt on a hand-checkable twin curve, memory."""

from __future__ import annotations

import math

import pytest

from placer.advise import advise, choose_b_opt, default_grid, parse_grid
from placer.context import Context
from twin.errors import InputError
from twin.profile import MemoryModel, Profile, StepModel
from twin.spec import Adapter, Instance, Lengths, ServerSettings, Slo, Workload

LLAMA, GPU = "llama-3.1-8b-instruct", "h100-64gb"
MIB, GIB = 2**20, 2**30


def _toy_context() -> Context:
    """A step of 10 ms whatever the batch (no prefill, context or LoRA cost): a request of 100 output tokens
    takes 100 steps = 1 s, so a batch of B serves B requests per second. 1 MiB of KV per token on a
    100 GiB GPU: 0.001 of utilisation is 102.4 KV tokens; 50,000 KV tokens at utilisation 0.9."""
    mem = MemoryModel(kv_base_tokens=50_000, kv_per_slot_rank=2.0, kv_per_slot=4.0, kv_bytes_per_token=MIB,
                      gpu_mem_gib=100.0)
    prof = Profile(model=LLAMA, gpu=GPU, max_model_len=256, memory=mem, step=StepModel(base_ms=10.0,
                                                                                       per_seq_ms=0.0))
    return Context(profile=prof)


def _toy_instance(rate_rps: float = 3.5, slo: Slo | None = None) -> Instance:
    """One adapter at ``rate_rps``; every request 10 prompt + 100 output tokens (110 tokens)."""
    lengths = Lengths(kind="normal", input_mean=10, input_std=0, output_mean=100, output_std=0)
    return Instance(name="toy", model=LLAMA, gpu=GPU, adapters=(Adapter("a0", 8, rate_rps),),
                    server=ServerSettings(max_num_seqs=16, max_model_len=256),
                    workload=Workload(duration_s=600.0, lengths=lengths), slo=slo or Slo.paper())


def test_b_opt_is_where_the_hand_computed_curve_saturates() -> None:
    advice = advise(_toy_instance(), max_loras=1, context=_toy_context())
    thr = {p.max_num_seqs: p.throughput_tok_s for p in advice.points}
    assert tuple(thr) == (1, 2, 4, 8, 16)
    # B = 1, 2: the queue never drains; B requests per second × 110 tokens, less the few still running
    assert thr[1] == pytest.approx(110.0, rel=0.01)
    assert thr[2] == pytest.approx(220.0, rel=0.01)
    # B ≥ 4 serves the 3.5 rps (385 tok/s offered): the plateau
    for b in (4, 8, 16):
        assert thr[b] == pytest.approx(385.0, rel=0.05)
    assert advice.b_opt is not None and advice.b_opt.max_num_seqs == 4
    assert [p.meets_criterion for p in advice.points] == [False, False, True, True, True]


def test_memory_freed_at_b_opt_follows_the_memory_model() -> None:
    ctx = _toy_context()
    advice = advise(_toy_instance(), max_loras=1, context=ctx)
    b = advice.b_opt
    assert b is not None
    # at most 4 requests of 110 tokens (7 blocks each) are in the cache at once
    assert 0 < b.kv_cache_tokens <= 4 * 7 * 16
    needed = math.ceil(max(b.kv_cache_tokens * 1.1, 256) / 16) * 16
    assert b.kv_needed_tokens == needed
    cap = 50_000 - 2.0 * 1 * 8 - 4.0 * 1  # the slot's LoRA buffers at rank 8
    assert advice.kv_capacity_tokens == pytest.approx(cap)
    # the smallest utilisation, to 0.001, whose cache (102.4 tokens per 0.001) holds what is needed
    u = math.ceil((0.9 - (cap - needed) / 102_400) * 1000) / 1000
    assert b.gpu_memory_utilization == pytest.approx(u)
    freed = int((0.9 - u) * 102_400 + 1e-6)
    assert advice.freed_tokens == pytest.approx(freed, abs=1)
    assert advice.freed_gib == pytest.approx(advice.freed_tokens * MIB / GIB, abs=1e-3)
    uses = advice.uses
    assert uses is not None
    assert uses.extra_max_loras == int(advice.freed_tokens // (2.0 * 8 + 4.0))
    assert uses.max_lora_rank == 512  # 512 − 8 ranks × 2 tokens for one slot fit many times over
    assert advice.check is not None and advice.check.meets_criterion  # the smaller cache still serves it
    assert advice.check.gpu_memory_utilization == b.gpu_memory_utilization


def test_a_latency_bound_moves_b_opt_to_a_larger_batch() -> None:
    # at B = 4 the 3.5 rps load runs at 88 % of capacity and requests queue; at B = 8 no request waits
    slo = Slo(ttft_p99_s=0.5, tpot_p99_ms=None)
    advice = advise(_toy_instance(slo=slo), max_loras=1, context=_toy_context())
    by_b = {p.max_num_seqs: p for p in advice.points}
    assert by_b[8].ttft_p99_s < 0.5 < by_b[4].ttft_p99_s
    assert advice.b_opt is not None and advice.b_opt.max_num_seqs == 8
    assert "TTFT p99 ≤ 0.5 s" in advice.criterion


def test_no_b_opt_when_no_point_meets_the_criterion() -> None:
    advice = advise(_toy_instance(rate_rps=40.0), max_loras=1, context=_toy_context(), grid=[1, 2, 4])
    assert advice.b_opt is None and advice.freed_gib is None and advice.uses is None
    assert advice.note.startswith("no B_opt")
    d = advice.to_dict()
    assert d["b_opt"] is None and d["freed_gib"] is None and len(d["points"]) == 3


def test_same_seed_same_advice() -> None:
    a = advise(_toy_instance(), max_loras=1, context=_toy_context(), grid=[2, 4], seed=3)
    b = advise(_toy_instance(), max_loras=1, context=_toy_context(), grid=[2, 4], seed=3)
    assert a.to_dict() == b.to_dict()


def test_grid() -> None:
    assert default_grid(2048) == (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
    assert default_grid(100) == (1, 2, 4, 8, 16, 32, 64, 100)
    assert default_grid(1) == (1,)
    assert parse_grid("8, 2,2,1") == (1, 2, 8)
    for bad in ("1,x", "0", "-4", "", "2.5"):
        with pytest.raises(InputError, match="--grid") as exc:
            parse_grid(bad, "--grid")
        assert exc.value.field == "--grid"


@pytest.mark.parametrize("max_loras", [0, 2, True])
def test_bad_max_loras(max_loras: int) -> None:
    with pytest.raises(InputError, match="--max-loras") as exc:
        advise(_toy_instance(), max_loras=max_loras, context=_toy_context())
    assert exc.value.value == max_loras


def test_choose_b_opt_is_the_smallest_within_tolerance_that_meets() -> None:
    advice = advise(_toy_instance(), max_loras=1, context=_toy_context(), grid=[1, 2, 4, 8])
    pts = advice.points
    assert choose_b_opt(pts, 0.05) is not None
    assert choose_b_opt(pts, 0.05).max_num_seqs == 4  # type: ignore[union-attr]
    assert choose_b_opt(pts, 0.5).max_num_seqs == 4  # type: ignore[union-attr]  # B = 2 is starved
    assert choose_b_opt((), 0.05) is None


def test_a_configuration_that_cannot_start_has_no_b_opt(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from placer.reporting.advise_chart import advise_chart

    ctx = _toy_context()
    assert ctx.profile is not None
    small = MemoryModel(kv_base_tokens=100, kv_per_slot_rank=0, kv_per_slot=0, kv_bytes_per_token=MIB,
                        gpu_mem_gib=100.0)  # 100 KV tokens < max_model_len 256: vLLM refuses to start
    advice = advise(_toy_instance(), max_loras=1, context=Context(profile=ctx.profile.replace(memory=small)),
                    grid=[1, 4])
    assert all(p.oom for p in advice.points) and advice.b_opt is None
    assert advice.note == "no B_opt: the configuration cannot start (memory error)"
    assert advise_chart(advice, tmp_path / "oom.png", kv_bytes_per_token=MIB).stat().st_size > 0


def _two_adapter_instance(rate_rps: float, slo: Slo) -> Instance:
    lengths = Lengths(kind="normal", input_mean=10, input_std=0, output_mean=100, output_std=0)
    return Instance(name="toy2", model=LLAMA, gpu=GPU,
                    adapters=(Adapter("a0", 8, rate_rps / 2), Adapter("a1", 8, rate_rps / 2)),
                    server=ServerSettings(max_num_seqs=16, max_model_len=256),
                    workload=Workload(duration_s=600.0, lengths=lengths), slo=slo)


def test_a_replica_pays_only_when_host_time_leaves_the_gpu_idle() -> None:
    """Host time 30 ms + forward 10 ms per step: one server at B = 16 serves 16 requests per 4 s = 4 rps of
    the 6 offered. Two replicas (u / 2 each: 50,000 − 0.45 · 102,400 = 3,920 KV tokens, room for 16 × 110)
    overlap one's host time with the other's forward: slowdown s = 1 + φ < 1.31 (φ ≤ 10s / (30 + 10s),
    saturated s² + s − 3 = 0), a step of at most 43.1 ms, 3.7 rps each ≥ the 3 offered: all 6 rps served."""
    ctx = _toy_context()
    step = StepModel(base_ms=10.0, per_seq_ms=0.0, sched_base_ms=30.0)
    host = Context(profile=ctx.profile.replace(step=step))
    slo = Slo(ttft_p99_s=None, tpot_p99_ms=None, min_served_fraction=0.5)
    advice = advise(_two_adapter_instance(6.0, slo), max_loras=2, context=host)
    assert advice.b_opt is not None and advice.b_opt.max_num_seqs == 16
    v = advice.replica
    assert v is not None and not v.oom and v.meets_criterion and v.pays
    assert v.single_tok_s == pytest.approx(4.0 * 110, rel=0.03)
    # less the requests still running when the window ends
    assert v.throughput_tok_s == pytest.approx(6.0 * 110, rel=0.05)
    assert all(1.0 < s <= (math.sqrt(13) - 1) / 2 + 2e-3 for s in v.slowdowns)
    assert advice.to_dict()["replica"]["pays"] is True
    # forward time only, light load: one server already serves everything; a replica adds nothing
    light = advise(_two_adapter_instance(3.5, Slo.paper()), max_loras=2, context=ctx)
    assert light.replica is not None and not light.replica.pays
    assert light.replica.throughput_tok_s == pytest.approx(light.replica.single_tok_s, rel=0.03)
