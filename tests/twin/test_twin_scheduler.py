"""Tiny hand-checked runs through the twin's vLLM V1 scheduler and step-time model.

The profile has round numbers: a step costs base 10 ms (+ 0.1 ms per prefill token where stated, + 1 ms per
adapter load where stated), nothing else. Expected times are derived step by step in each test.
"""

from __future__ import annotations

import numpy as np
import pytest

from twin.errors import InputError
from twin.profile import MemoryModel, Profile, StepModel
from twin.simulate import simulate_requests
from twin.spec import ServerSettings
from twin.workload import Requests


def _profile(kv_tokens: float = 100_000, **step: float) -> Profile:
    mem = MemoryModel(kv_base_tokens=kv_tokens, kv_per_slot_rank=0.0, kv_per_slot=0.0, kv_bytes_per_token=1,
                      gpu_mem_gib=1.0)
    return Profile(model="toy", gpu="toy", max_model_len=32, memory=mem,
                   step=StepModel(base_ms=step.pop("base_ms", 10.0), per_seq_ms=0.0, **step))


def _reqs(rows: list[tuple[float, int, int, int]]) -> Requests:
    a = np.array(rows, dtype=np.float64)
    return Requests.from_arrays(a[:, 0], a[:, 1].astype(int), a[:, 2].astype(int), a[:, 3].astype(int))


def _run(rows, *, ranks=(8,), budget=2048, max_len=2048, **kw):  # type: ignore[no-untyped-def]
    prof = kw.pop("profile", _profile())
    srv = ServerSettings(max_num_batched_tokens=budget, max_model_len=max_len)
    return simulate_requests(_reqs(rows), list(ranks), duration_s=10.0, profile=prof, server=srv, **kw)


def test_single_request_prefill_then_decodes() -> None:
    # step 1 prefill (token 1 at 10 ms), steps 2 and 3 decode (20, 30 ms)
    res = _run([(0.0, 0, 10, 3)], max_loras=1)
    assert res.completed == 1 and res.arrived == 1
    assert res.ttft_mean_s == pytest.approx(0.010)
    assert res.itl_mean_s == pytest.approx(0.010)
    assert res.steps == 3
    assert res.throughput_tok_s == pytest.approx(13 / 10.0)
    assert res.offered_tok_s == pytest.approx(13 / 10.0)
    assert res.gpu_loads == 1 and res.disk_loads == 0 and res.preemptions == 0


def test_chunked_prefill_with_small_budget() -> None:
    # budget 64: step 1 prefills 64 tokens (10 + 6.4 ms, no token), step 2 the other 36 (10 + 3.6 ms, first
    # token at 30 ms), step 3 decodes (finish at 40 ms).
    prof = _profile(per_prefill_token_ms=0.1)
    res = _run([(0.0, 0, 100, 2)], max_loras=1, budget=64, profile=prof)
    assert res.steps == 3
    assert res.ttft_mean_s == pytest.approx(0.030)
    assert res.itl_mean_s == pytest.approx(0.010)


def test_max_loras_skip_and_lru_slot_loads() -> None:
    # max_loras 1; r0 (adapter 0, 2 tokens out), r1 (adapter 1, 1 out), r2 (adapter 0, 1 out), all at t=0.
    # step 1: r0 admitted (set {0} full), r1 skipped, r2 admitted; load adapter 0 (+1 ms) -> 11 ms; r2 done.
    # step 2: r0 decodes; r1 skipped again -> 21 ms, r0 done.
    # step 3: r1 admitted; adapter 0 evicted, adapter 1 loaded (+1 ms) -> 32 ms, r1 done.
    prof = _profile(load_gpu_ms=1.0)
    rows = [(0.0, 0, 10, 2), (0.0, 1, 10, 1), (0.0, 0, 10, 1)]
    res = _run(rows, ranks=(8, 8), max_loras=1, profile=prof)
    assert res.completed == 3 and res.steps == 3 and res.gpu_loads == 2
    # TTFT: r0 11 ms, r1 32 ms, r2 11 ms
    assert res.ttft_mean_s == pytest.approx((0.011 + 0.032 + 0.011) / 3)
    assert res.adapter_ttft_mean_s[1] == pytest.approx(0.032)
    assert res.itl_mean_s == pytest.approx(0.010)  # r0: 21 - 11 ms over one gap


def test_two_slots_serve_both_adapters_in_one_step() -> None:
    rows = [(0.0, 0, 10, 1), (0.0, 1, 10, 1)]
    res = _run(rows, ranks=(8, 8), max_loras=2)
    assert res.steps == 1 and res.ttft_mean_s == pytest.approx(0.010)


def test_lora_weight_read_is_per_distinct_adapter_times_max_rank() -> None:
    # 0.05 ms per adapter per rank unit. r0, r1 (adapters 0, 1; 2 tokens out), r2 (adapter 0; 1 out), all at
    # t=0, max_lora_rank 16, two slots. Steps 1 and 2 hold both adapters: 10 + 0.05·2·16 = 11.6 ms each (r2
    # and then r0, r1 finish). With max_lora_rank 32 the same steps cost 10 + 0.05·2·32 = 13.2 ms: the term is
    # additive (the 10 ms forward is not scaled) and counts the padded rank, not the adapters' own ranks.
    prof = _profile(lora_ms_per_adapter_rank=0.05)
    rows = [(0.0, 0, 10, 2), (0.0, 1, 10, 2), (0.0, 0, 10, 1)]
    for max_rank, step_s in ((16, 0.0116), (32, 0.0132)):
        res = _run(rows, ranks=(8, 16), max_loras=2, max_lora_rank=max_rank, profile=prof)
        assert res.steps == 2
        assert res.ttft_mean_s == pytest.approx(step_s)
        assert res.itl_mean_s == pytest.approx(step_s)


def test_adapter_square_term_grows_with_distinct_adapters_squared() -> None:
    # 0.5 ms per squared distinct adapter. Three requests of three adapters at t=0, 1 token out each, three
    # slots: one step holding A = 3 adapters: 10 + 0.5·9 = 14.5 ms. With two slots the first step holds
    # 2 adapters (10 + 0.5·4 = 12 ms), the second 1 adapter (12 + 10 + 0.5·1 = 22.5 ms): TTFT mean
    # (12 + 12 + 22.5) / 3.
    prof = _profile(lora_ms_per_adapter_sq=0.5)
    rows = [(0.0, 0, 10, 1), (0.0, 1, 10, 1), (0.0, 2, 10, 1)]
    res = _run(rows, ranks=(8, 8, 8), max_loras=3, profile=prof)
    assert res.steps == 1 and res.ttft_mean_s == pytest.approx(0.0145)
    res = _run(rows, ranks=(8, 8, 8), max_loras=2, profile=prof)
    assert res.steps == 2 and res.ttft_mean_s == pytest.approx((0.012 + 0.012 + 0.0225) / 3)


def test_preemption_keeps_generated_tokens_and_readmits_at_the_front() -> None:
    # KV = 32 tokens = 2 blocks of 16. rA: 16 prompt + 3 out; rB: 15 prompt + 3 out; both at t=0.
    # step 1: both admitted (1 block each), prefill 31 tokens: 10 + 3.1 ms -> 13.1 ms; both have token 1.
    # step 2: rA needs a 2nd block, none free -> rB (most recent) preempted; rA decodes -> 23.1 ms.
    #         (no waiting scan in a step that preempted)
    # step 3: rA decodes (17 -> 18 tokens, 2 blocks held); rB (16 tokens = prompt + 1 generated) needs 1
    #         block, none free -> scan ends. 33.1 ms: rA done (3 tokens), 2 blocks freed.
    # step 4: rB re-prefills its 16 tokens: 10 + 1.6 ms -> 44.7 ms, token 2.
    # step 5: rB decodes -> 54.7 ms, token 3, done.
    prof = _profile(kv_tokens=32, per_prefill_token_ms=0.1)
    res = _run([(0.0, 0, 16, 3), (0.0, 0, 15, 3)], max_loras=1, profile=prof, max_len=32)
    assert res.kv_cache_tokens == 32
    assert res.preemptions == 1 and res.steps == 5 and res.completed == 2
    assert res.ttft_mean_s == pytest.approx(0.0131)
    # ITL: rA (33.1 - 13.1) / 2, rB (54.7 - 13.1) / 2
    assert res.itl_mean_s == pytest.approx(((0.0331 - 0.0131) + (0.0547 - 0.0131)) / 4)
    assert res.throughput_tok_s == pytest.approx((19 + 18) / 10.0)


def test_window_is_exact() -> None:
    # a request that would finish after the window end counts zero; arrivals at or after the end are ignored
    prof = _profile(base_ms=1000.0)
    rows = [(0.0, 0, 10, 5), (9.5, 0, 10, 1), (10.0, 0, 10, 1)]
    res = _run(rows, max_loras=1, profile=prof)
    assert res.arrived == 2
    assert res.completed == 1  # r0 done at 5 s; r1 starts at 9.5 s and would finish at 10.5 s
    assert res.throughput_tok_s == pytest.approx(15 / 10.0)
    assert res.running_end == 1 and res.waiting_end == 0


def test_idle_server_jumps_to_next_arrival() -> None:
    res = _run([(1.0, 0, 10, 1), (3.0, 0, 10, 2)], max_loras=1)
    assert res.steps == 3 and res.completed == 2
    assert res.ttft_mean_s == pytest.approx(0.010)


def test_client_connection_cap_holds_requests_back() -> None:
    # max_inflight 1: r1 (arrived at 0) reaches the server only when r0 finishes at 20 ms; its TTFT counts
    # from its arrival: step 3 ends at 30 ms. Without the cap both prefill together in step 1.
    rows = [(0.0, 0, 10, 2), (0.0, 0, 10, 1)]
    capped = _run(rows, max_loras=1, max_inflight=1)
    assert capped.steps == 3
    assert capped.ttft_mean_s == pytest.approx((0.010 + 0.030) / 2)
    free = _run(rows, max_loras=1)
    assert free.steps == 2 and free.ttft_mean_s == pytest.approx(0.010)


def test_client_at_its_limit_can_refuse_requests() -> None:
    # max_inflight 1 with drops: r1 arrives at 5 ms while r0 is in flight -> refused; r2 arrives at 30 ms,
    # after r0 finished at 20 ms -> served (finishes at 40 ms).
    rows = [(0.0, 0, 10, 2), (0.005, 0, 10, 1), (0.030, 0, 10, 1)]
    res = _run(rows, max_loras=1, max_inflight=1, drop_over_limit=True)
    assert res.dropped == 1 and res.arrived == 3 and res.completed == 2
    assert res.waiting_end == 0 and res.unfinished == 1
    assert res.ttft_mean_s == pytest.approx(0.010)


@pytest.mark.parametrize("in_batch", [False, True])
@pytest.mark.parametrize("z_first", [True, False])
def test_in_batch_eviction_reloads_an_adapter_of_the_batch(in_batch: bool, z_first: bool) -> None:
    # 3 adapters, 2 slots (max_loras 2), 10 ms per step + 1 ms per GPU load. Adapters X, Y, Z are picked from
    # the activation (hash) order the twin draws for seed 0, so that Z comes before X (z_first) or after.
    # step 1 (0-12 ms): r0 (X, 1 out) and r1 (Y, 2 out) admitted; X and Y loaded (2 ms); r0 done.
    # step 2 (12-22 ms): r1 decodes and finishes; Y touched, X is now the least recently used slot.
    # r2 (X) and r3 (Z) arrive at 15 ms; step 3 (from 22 ms) batches {X, Z}.
    #   vLLM 0.8.5 (in_batch) with Z activated first: Z evicts the LRU slot, X — of this batch —, then X
    #   evicts Y and is loaded again: 2 loads, 12 ms, first tokens at 34 ms (TTFT 19 ms).
    #   X activated first (touched), or the old rule (never evict a batch adapter): Z evicts Y: 1 load, 11 ms.
    from twin.engine import adapter_hash_order

    by_key = [int(a) for a in np.argsort(adapter_hash_order(3, 0))]  # adapters in activation order
    first, middle, last = by_key
    z, y, x = (first, middle, last) if z_first else (last, middle, first)
    prof = _profile(load_gpu_ms=1.0, in_batch_eviction=in_batch)
    rows = [(0.0, x, 10, 1), (0.0, y, 10, 2), (0.015, x, 10, 1), (0.015, z, 10, 1)]
    res = _run(rows, ranks=(8, 8, 8), max_loras=2, profile=prof)
    reload = in_batch and z_first
    assert res.completed == 4 and res.steps == 3
    assert res.gpu_loads == (4 if reload else 3)
    t3 = 0.034 if reload else 0.033
    assert res.ttft_p99_s == pytest.approx(t3 - 0.015, abs=1e-4)
    assert res.ttft_mean_s == pytest.approx((0.012 + 0.012 + 2 * (t3 - 0.015)) / 4)


def test_adapter_hash_order_is_a_seeded_permutation() -> None:
    from twin.engine import adapter_hash_order

    a, b, c = adapter_hash_order(50, 3), adapter_hash_order(50, 3), adapter_hash_order(50, 4)
    assert sorted(a.tolist()) == list(range(50))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# ---- the metrics scraper's frontend stalls (StepModel.metrics_scrape_*) ----
# 8 ms steps (no tie with the scrape instants); a scrape every 0.1 s after the previous one ends, 25 ms
# + 1 ms per label set held.
_SCRAPE = dict(metrics_scrape_interval_s=0.1, metrics_scrape_base_ms=25.0,
               metrics_scrape_us_per_series=1000.0)


@pytest.mark.parametrize("arrival, ttft_on", [(0.095, 0.030), (0.110, 0.023)])
def test_scrape_stall_delays_the_first_token_and_holds_arrivals(arrival: float, ttft_on: float) -> None:
    # One request, 1 token out. Arriving at 95 ms: its prefill step runs 95-103 ms, but the scrape at 100 ms
    # (no label set yet: 25 ms) stalls the frontend until 125 ms, so the token reaches the client then:
    # TTFT 30 ms. Arriving at 110 ms, inside the stall: it reaches the engine at 125 ms, token at 133 ms:
    # TTFT 23 ms. Without the scraper: 8 ms.
    rows = [(arrival, 0, 4, 1)]
    off = _run(rows, max_loras=1, profile=_profile(base_ms=8.0))
    on = _run(rows, max_loras=1, profile=_profile(base_ms=8.0, **_SCRAPE))
    assert off.ttft_mean_s == pytest.approx(0.008)
    assert on.ttft_mean_s == pytest.approx(ttft_on)
    assert on.scrapes == 1 and on.scrape_stall_s == pytest.approx(0.025) and on.scrape_series_mean == 0.0
    assert off.scrapes == 0 and off.steps == on.steps == 1


def test_scrape_stall_merges_the_stalled_tokens_into_one_gap() -> None:
    # One request from t=0, 20 tokens out: steps end at 8, 16, ..., 160 ms. One label set (running {0},
    # waiting {}), so the scrape at 100 ms stalls 26 ms: the tokens of the steps ending at 104, 112 and
    # 120 ms reach the client at 126 ms in one chunk, one gap of 126 - 96 = 30 ms. ITL samples: 11 gaps
    # of 8 ms before, that one, 5 of 8 ms after (the step ending at 128 ms and on).
    res = _run([(0.0, 0, 4, 20)], max_loras=1, profile=_profile(base_ms=8.0, **_SCRAPE))
    assert res.scrapes == 1 and res.scrape_stall_s == pytest.approx(0.026) and res.scrape_series_mean == 1.0
    assert res.ttft_mean_s == pytest.approx(0.008)
    assert res.itl_p50_s == pytest.approx(0.008, rel=0.01)
    assert res.itl_p99_s == pytest.approx(0.030, rel=0.01)
    assert res.itl_mean_s == pytest.approx((0.160 - 0.008) / 19)  # per token, from the request's times


def test_scrape_stall_grows_with_the_label_sets_held() -> None:
    # r0 (adapter 0, 20 out) from t=0; r1 (adapter 1, 3 out) arrives at 50 ms, during the step 48-56 ms:
    # label sets ({0}, {}), then ({0}, {1}) at 56 ms (r1 waits in the frontend), ({0, 1}, {}) from 64 ms,
    # ({0}, {}) again after r1 finishes at 80 ms: 3 distinct, so the scrape at 100 ms stalls 25 + 3 ms.
    rows = [(0.0, 0, 4, 20), (0.05, 1, 4, 3)]
    res = _run(rows, ranks=(8, 8), max_loras=2, profile=_profile(base_ms=8.0, **_SCRAPE))
    assert res.scrape_series_mean == 3.0 and res.scrape_stall_s == pytest.approx(0.028)
    assert res.ttft_mean_s == pytest.approx((0.008 + 0.014) / 2)


def test_profiles_omit_the_scraper_when_off() -> None:
    off, on = _profile(), _profile(**_SCRAPE)
    assert "metrics_scrape_interval_s" not in off.to_dict()["step"]
    assert on.to_dict()["step"]["metrics_scrape_us_per_series"] == 1000.0
    assert Profile.from_dict(on.to_dict()) == on and Profile.from_dict(off.to_dict()) == off


def test_fitted_scrape_costs_are_kept_without_a_scraper_and_do_not_change_the_runs() -> None:
    # A profile may carry fitted scrape costs with no scraper (the shipped ones): they are written and read
    # back, the twin's runs are those of the profile without them, and with_scraper switches them on.
    costs = {k: v for k, v in _SCRAPE.items() if k != "metrics_scrape_interval_s"}
    plain, priced = _profile(base_ms=8.0), _profile(base_ms=8.0, **costs)
    assert priced.has_scrape_costs and not plain.has_scrape_costs
    assert priced.to_dict()["step"]["metrics_scrape_base_ms"] == 25.0
    assert Profile.from_dict(priced.to_dict()) == priced
    assert priced.simulation_dict() == plain.simulation_dict()  # what decides the runs: equal
    assert priced.with_scraper(0.1).simulation_dict() != plain.simulation_dict()
    rows = [(0.0, 0, 4, 20)]
    same = _run(rows, max_loras=1, profile=plain)
    assert _run(rows, max_loras=1, profile=priced).itl_p99_s == same.itl_p99_s
    on = _run(rows, max_loras=1, profile=priced.with_scraper(0.1))
    assert on.scrapes == 1 and on.itl_p99_s == pytest.approx(0.030, rel=0.01)  # as the merged-gap test
    with pytest.raises(InputError, match="≥ 0"):
        priced.with_scraper(-1.0)


def test_completed_only_ttft_percentiles_are_what_a_client_reports() -> None:
    # r0 at 0 s (3 tokens, first at 10 ms) completes; r1 arrives at 9.995 s and its first token comes at
    # 10.005 s, after the 10 s window: the censored percentiles count it with 5 ms (10 - 9.995), the
    # completed-only ones (a benchmark client's view) leave it out.
    res = _run([(0.0, 0, 10, 3), (9.995, 0, 10, 3)], max_loras=1)
    assert res.completed == 1
    assert res.ttft_p50_s == pytest.approx(0.0075)
    assert res.ttft_completed_p50_s == pytest.approx(0.010)
    assert res.ttft_completed_p99_s == pytest.approx(0.010)
