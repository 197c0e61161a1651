"""Latency metrics of the twin: censored TTFT percentiles, TPOT, queue trend and the criterion, on hand-built
traces whose every number is derived in the comments (a toy profile: every step costs exactly 10 ms)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from twin.metrics import queue_trend
from twin.profile import MemoryModel, Profile, StepModel
from twin.simulate import simulate_requests
from twin.spec import ServerSettings, Slo
from twin.workload import Requests

T = 10.0


def _profile() -> Profile:
    mem = MemoryModel(kv_base_tokens=100_000, kv_per_slot_rank=0.0, kv_per_slot=0.0, kv_bytes_per_token=1,
                      gpu_mem_gib=1.0)
    return Profile(model="toy", gpu="toy", max_model_len=32, memory=mem,
                   step=StepModel(base_ms=10.0, per_seq_ms=0.0))


def _run(rows: list[tuple[float, int, int, int]], *, max_num_seqs: int = 2048,  # type: ignore[no-untyped-def]
         ranks=(8, 8), slo=None):
    a = np.array(rows, dtype=np.float64)
    reqs = Requests.from_arrays(a[:, 0], a[:, 1].astype(int), a[:, 2].astype(int), a[:, 3].astype(int))
    srv = ServerSettings(max_num_seqs=max_num_seqs, max_model_len=4096)
    return simulate_requests(reqs, list(ranks), max_loras=2, duration_s=T, profile=_profile(), server=srv,
                             slo=slo)


def test_a_request_still_queued_at_the_end_counts_with_its_wait_so_far() -> None:
    # One sequence at a time (max_num_seqs 1). r0 arrives at 0 with 2000 output tokens: its prefill step ends
    # at 10 ms (first token), then one token per 10 ms step, so it is still running at T = 10 s. r1 arrives
    # at 1 s and waits behind it for the whole window: no first token, so its TTFT counts as T - 1 = 9 s.
    # r2 arrives after the window and is ignored.
    res = _run([(0.0, 0, 10, 2000), (1.0, 1, 10, 5), (10.5, 1, 10, 5)], max_num_seqs=1)
    assert res.arrived == 2 and res.completed == 0 and res.waiting_end == 1 and res.running_end == 1
    # censored TTFTs = [0.010, 9.0]: numpy's linear percentiles
    assert res.ttft_p50_s == pytest.approx(0.010 + 0.5 * 8.99)
    assert res.ttft_p99_s == pytest.approx(0.010 + 0.99 * 8.99)
    assert math.isnan(res.ttft_mean_s)  # the mean is over completed requests only: none
    # per adapter: adapter 0 has r0 (0.010 s), adapter 1 has r1 (9 s, censored)
    assert res.adapter_ttft_p99_s.tolist() == pytest.approx([0.010, 9.0])
    # r0's TPOT so far: one token per 10 ms since its first token
    assert res.tpot_p99_s == pytest.approx(0.010, rel=2e-3)
    # the criterion: the waiting request alone breaks a 2 s p99 TTFT, though r0 is served fine
    assert not res.meets(Slo())
    # (nothing completed, so the served fraction is 0 too)
    assert res.slo_failures(Slo(tpot_p99_ms=None)) == ["served fraction 0.000 < 0.9",
                                                       "TTFT p99 8.91 s > 2 s (×4.46)"]
    assert res.meets(Slo(ttft_p99_s=9.0, min_served_fraction=0.0))
    doc = res.to_dict()
    assert doc["ttft_p99_s"] == pytest.approx(8.9101) and doc["waiting_end"] == 1
    assert doc["meets_criterion"] is False
    assert doc["criterion"] == "SLO: TTFT p99 ≤ 2 s, TPOT p99 ≤ 200 ms, served fraction ≥ 0.9"


def test_tiny_run_with_a_hand_checkable_verdict() -> None:
    # r0 (adapter 0, 3 output tokens) and r1 (adapter 1, 2 output tokens) both arrive at 0 and share every
    # step: first tokens at 10 ms, r1 finishes at 20 ms, r0 at 30 ms. TTFT = 0.010 s for both; TPOT: r0
    # (30 - 10) / 2 = 10 ms, r1 (20 - 10) / 1 = 10 ms. Everything is served.
    res = _run([(0.0, 0, 10, 3), (0.0, 1, 10, 2)])
    assert res.completed == 2 and res.served_fraction == pytest.approx(1.0)
    assert (res.ttft_p50_s, res.ttft_p99_s) == pytest.approx((0.010, 0.010))
    assert (res.tpot_p50_s, res.tpot_p99_s) == pytest.approx((0.010, 0.010))
    assert res.meets(Slo())                                    # 10 ms ≤ 2 s, 10 ms ≤ 200 ms
    assert res.meets(Slo(ttft_p99_s=0.011, tpot_p99_ms=11))   # just inside
    assert res.slo_failures(Slo(ttft_p99_s=None, tpot_p99_ms=5)) == ["TPOT p99 10 ms > 5 ms (×2.00)"]
    assert res.slo_failures(Slo(ttft_p50_s=0.005, tpot_p99_ms=None)) == ["TTFT p50 0.01 s > 0.005 s (×2.00)"]
    assert res.meets(Slo(ttft_p99_s=0.001, criterion="paper"))  # the papers' rule ignores latency
    assert res.queue_trend == "stable"


def test_slo_given_to_simulate_requests_is_the_one_reported() -> None:
    res = _run([(0.0, 0, 10, 3)], slo=Slo(ttft_p99_s=0.001))
    assert res.to_dict()["meets_criterion"] is False
    assert res.meets(Slo())  # judged by another criterion on demand


def test_queue_trend_growing_and_stable() -> None:
    # backlog b(t) = arrived by t - completed by t. Growing: 1 request in the server at T/2, 21 at T.
    arr = np.array([0.0] + [6.0 + 0.1 * k for k in range(20)])
    fin = np.full(arr.size, np.inf)
    assert queue_trend(arr, fin, T) == "growing"
    # the same arrivals, each finished 0.5 s after it arrived: the backlog stays ~5
    assert queue_trend(arr, arr + 0.5, T) == "stable"


def test_oom_fails_every_criterion() -> None:
    from twin.metrics import SimResult

    fields = {f: 0 for f in SimResult.__dataclass_fields__ if f not in ("adapter_ids", "timeseries", "slo",
                                                                         "queue_trend")}
    fields.update(oom=True, starved=False, served_fraction=math.nan, kv_cache_tokens=None, seed=None,
                  profile="x", profile_version="1", profile_calibrated=True)
    for k in [f for f in fields if f.startswith("adapter_")]:
        fields[k] = np.empty(0)
    res = SimResult(**fields)  # type: ignore[arg-type]
    assert not res.meets(Slo.paper())
    assert res.slo_failures() == ["memory error (the server cannot start)"]
