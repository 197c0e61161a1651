"""simulate(): conservation, determinism, monotonicity with common random numbers, the OOM rule, the API."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin import (
    Adapter,
    Instance,
    Requests,
    Workload,
    generate_requests,
    is_oom,
    kv_capacity_tokens,
    load_profile,
    simulate,
    simulate_requests,
    smape_paper,
    smape_symmetric,
)
from twin.engine import run_engine
from twin.profile import MemoryModel, Profile, StepModel
from twin.spec import ServerSettings

LLAMA = "llama-3.1-8b-instruct"


def _inst(rates, ranks=(8, 16), duration_s=300.0) -> Instance:  # type: ignore[no-untyped-def]
    ads = tuple(Adapter(f"a{i}", ranks[i % len(ranks)], float(r)) for i, r in enumerate(rates))
    return Instance(name="t", model=LLAMA, gpu="h100-64gb", adapters=ads,
                    workload=Workload(duration_s=duration_s))


def test_kv_capacity_and_oom_rule_against_the_profile() -> None:
    shipped = load_profile(LLAMA, "h100-64gb")
    for slots, rank, tokens in shipped.memory.table:  # measured entries are used as they are
        assert kv_capacity_tokens(shipped, slots, rank) == tokens
    prof = shipped.replace(memory=MemoryModel(**{**shipped.memory.__dict__, "table": ()}))
    m = prof.memory
    kv = kv_capacity_tokens(prof, 32, 16)
    assert kv == pytest.approx(m.kv_base_tokens - m.kv_per_slot_rank * 32 * 16 - m.kv_per_slot * 32)
    assert not is_oom(kv, prof.max_model_len)
    res = simulate(_inst([0.5] * 4), max_loras=384, max_lora_rank=16, profile=prof)  # ~18 k < 131,072
    assert res.oom and res.completed == 0 and res.throughput_tok_s == 0.0 and not res.starved
    # 4 × 0.5 req/s × (prompt + output shortened by the profile's EOS shortfall)
    assert res.expected_offered_tok_s == pytest.approx(2.0 * (222.7 + prof.output_scale * 196.5))
    assert res.kv_cache_tokens == pytest.approx(kv_capacity_tokens(prof, 384, 16))
    assert simulate(_inst([0.5] * 4), max_loras=384, max_lora_rank=16).oom  # shipped profile too
    # a lower memory utilisation removes (0.9 - 0.5) * GPU memory / bytes per token
    low = kv_capacity_tokens(prof, 32, 16, 0.5)
    assert low == pytest.approx(kv - 0.4 * m.gpu_mem_gib * 2**30 / m.kv_bytes_per_token)


def test_measured_table_entry_overrides_the_fit_and_none_is_oom() -> None:
    prof = load_profile(LLAMA, "h100-64gb")
    table = ((8, 8, 200_000), (8, 16, None))
    p2 = prof.replace(memory=MemoryModel(**{**prof.memory.__dict__, "table": table}))
    assert kv_capacity_tokens(p2, 8, 8) == 200_000
    assert kv_capacity_tokens(p2, 8, 16) is None and is_oom(None, 1)
    assert simulate(_inst([0.1]), max_loras=8, max_lora_rank=16, profile=p2).oom


def test_conservation_and_determinism() -> None:
    inst = _inst([2.0, 1.0, 0.5, 0.25], duration_s=200.0)
    a = simulate(inst, max_loras=2, seed=4)
    b = simulate(inst, max_loras=2, seed=4)
    assert a.to_dict() | {"wall_s": 0} == b.to_dict() | {"wall_s": 0}
    assert a.arrived == a.completed + a.running_end + a.waiting_end
    assert a.adapter_arrived.sum() == a.arrived and a.adapter_completed.sum() == a.completed
    req = generate_requests(inst, seed=4, output_scale=load_profile(LLAMA, "h100-64gb").output_scale)
    assert a.arrived == len(req)
    # the throughput is the completed requests' tokens: at most the offered tokens
    assert 0 < a.throughput_tok_s <= a.offered_tok_s
    assert a.offered_tok_s == pytest.approx(float((req.input_tokens + req.output_tokens).sum()) / 200.0)
    c = simulate(inst, max_loras=2, seed=5)
    assert c.arrived != a.arrived or c.throughput_tok_s != a.throughput_tok_s


def test_scaling_every_rate_up_does_not_raise_the_served_fraction() -> None:
    base = _inst([0.6, 0.3, 0.15, 0.6, 0.3, 0.15, 0.6, 0.3], duration_s=300.0)
    fractions = []
    for scale in (1, 4, 16, 64):
        inst = base.replace(adapters=tuple(Adapter(a.id, a.rank, a.rate_rps * scale) for a in base.adapters))
        res = simulate(inst, max_loras=4, seed=1)  # same seed: the same stream, compressed in time
        fractions.append(res.served_fraction)
    assert all(later <= earlier + 0.01 for earlier, later in zip(fractions, fractions[1:], strict=False))
    assert fractions[0] > 0.9 and fractions[-1] < 0.5


def test_to_dict_has_the_interface_fields_and_is_json() -> None:
    res = simulate(_inst([0.5, 0.5]), max_loras=2, timeseries=30.0)
    d = res.to_dict()
    for key in ("throughput_tok_s", "offered_tok_s", "starved", "oom", "completed", "arrived",
                "ttft_mean_s", "itl_mean_s", "kv_cache_tokens", "wall_s"):
        assert key in d
    assert isinstance(d["starved"], bool) and len(d["adapters"]) == 2
    json.dumps(d, allow_nan=False)
    ts = res.timeseries
    assert ts is not None and ts["t_s"][1] == 30.0 and len(ts["running"]) == 10
    oom = simulate(_inst([0.5]), max_loras=384, max_lora_rank=16).to_dict()
    json.dumps(oom, allow_nan=False)


def test_bad_configuration_is_an_input_error() -> None:
    from twin.errors import InputError

    with pytest.raises(InputError, match="max_cpu_loras"):
        simulate(_inst([0.5, 0.5]), max_loras=2, max_cpu_loras=1)
    with pytest.raises(InputError, match="max_lora_rank"):
        simulate(_inst([0.5, 0.5]), max_loras=2, max_lora_rank=8)


def test_host_cache_misses_load_from_disk() -> None:
    prof = load_profile(LLAMA, "h100-64gb")
    prof = prof.replace(step=StepModel(**{**prof.step.__dict__, "load_disk_ms": 50.0}))
    inst = _inst([1.0] * 6, duration_s=120.0)
    full = simulate(inst, max_loras=2, profile=prof)
    small = simulate(inst, max_loras=2, max_cpu_loras=2, profile=prof)
    assert full.disk_loads == 0 and small.disk_loads > 0
    assert small.gpu_loads >= small.disk_loads


def test_smape_forms() -> None:
    assert smape_paper([100.0, 0.0], [80.0, 0.0]) == pytest.approx(100 * (20 / 180) / 2)
    assert smape_symmetric([100.0], [80.0]) == pytest.approx(200 * 20 / 180)


# ---------------------------------------------------------------- property: every request is accounted for
def _toy_profile(kv_tokens: int) -> Profile:
    mem = MemoryModel(kv_base_tokens=kv_tokens, kv_per_slot_rank=0, kv_per_slot=0, kv_bytes_per_token=1,
                      gpu_mem_gib=1.0)
    return Profile(model="toy", gpu="toy", max_model_len=64,
                   memory=mem, step=StepModel(base_ms=5.0, per_seq_ms=0.1, per_prefill_token_ms=0.01,
                                              load_gpu_ms=1.0))


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(st.tuples(st.floats(0, 5), st.integers(0, 3), st.integers(1, 40), st.integers(1, 24)),
                  min_size=1, max_size=30),
    kv_blocks=st.integers(4, 12),
    budget=st.integers(1, 64),
    max_loras=st.integers(1, 4),
    max_seqs=st.integers(1, 8),
)
def test_every_request_finishes_with_exact_tokens(rows, kv_blocks, budget, max_loras, max_seqs):  # type: ignore[no-untyped-def]
    a = np.array(rows, dtype=np.float64)
    req = Requests.from_arrays(a[:, 0], a[:, 1].astype(int), a[:, 2].astype(int), a[:, 3].astype(int))
    prof = _toy_profile(16 * kv_blocks)
    run = run_engine(req.arrival_s, req.adapter, req.input_tokens, req.output_tokens, np.array([8] * 4),
                     max_loras=max_loras, max_cpu_loras=4, max_lora_rank=8, kv_blocks=kv_blocks, profile=prof,
                     max_num_batched_tokens=budget, max_num_seqs=max_seqs, duration_s=1e6)
    assert not run.stalled  # every request fits in the KV cache alone (≤ 64 tokens ≤ 4 blocks)
    assert np.all(run.status == 3)
    assert np.array_equal(run.generated, req.output_tokens)
    assert np.all(run.first_token_s > req.arrival_s) and np.all(run.finish_s >= run.first_token_s)
    srv = ServerSettings(max_num_batched_tokens=budget, max_num_seqs=max_seqs, max_model_len=64)
    res = simulate_requests(req, [8] * 4, max_loras=max_loras, duration_s=1e6, profile=prof, server=srv)
    assert res.completed == res.arrived == len(req)
    assert res.throughput_tok_s * 1e6 == pytest.approx(float((req.input_tokens + req.output_tokens).sum()))
    assert math.isfinite(res.ttft_mean_s)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), kv_blocks=st.integers(30, 120), budget=st.integers(1, 512),
       max_loras=st.integers(1, 5), max_seqs=st.integers(1, 200),
       cap=st.one_of(st.none(), st.integers(1, 60)), drop=st.booleans())
def test_fast_path_matches_the_request_by_request_pass(seed, kv_blocks, budget, max_loras, max_seqs,  # type: ignore[no-untyped-def]
                                                       cap, drop):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    arrival = np.sort(rng.uniform(0.0, 20.0, n))
    args = (arrival, rng.integers(0, 5, n), rng.integers(1, 300, n), rng.integers(1, 180, n),
            np.array([8] * 5))
    prof = _toy_profile(16 * kv_blocks)
    kw = dict(max_loras=max_loras, max_cpu_loras=5, max_lora_rank=8, kv_blocks=kv_blocks, profile=prof,
              max_num_batched_tokens=budget, max_num_seqs=max_seqs, duration_s=15.0, timeseries_dt=1.0,
              max_inflight=cap, drop=drop)
    fast = run_engine(*args, **kw)  # type: ignore[arg-type]
    slow = run_engine(*args, fast_path=False, **kw)  # type: ignore[arg-type]
    assert fast.steps == slow.steps and fast.preemptions == slow.preemptions and fast.dropped == slow.dropped
    assert fast.dropped == int((fast.status == 4).sum()) and (fast.dropped == 0 or drop)
    assert not np.any((fast.status != 0) & (args[0] >= 15.0))  # nothing happens to later arrivals
    for name in ("first_token_s", "finish_s", "generated", "status", "itl_hist", "timeseries"):
        assert np.array_equal(getattr(fast, name), getattr(slow, name), equal_nan=True), name
