"""The surrogate oracle's slot-occupancy guard: a GPU with more adapters than LoRA slots whose requests hold
their slots long enough to fill them fails a TTFT bound, whatever the latency regressors say."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from placer.oracle import make_oracle
from placer.oracle.backends import SLOT_OCCUPANCY_MAX, slot_occupancy
from surrogate.bundle import BatchPrediction
from twin.spec import Adapter, Instance, Slo, Workload


def test_occupancy_by_hand() -> None:
    rates = np.array([math.log(2)] * 3 + [0.0])
    # hold 1 s: each adapter busy with probability 1 - exp(-ln 2) = 1/2
    occ = slot_occupancy(rates, [np.array([0, 1, 2]), np.array([0, 1, 2]), np.array([0]), np.array([0, 3])],
                         [1, 2, 1, 1], np.array([1.0, 1.0, 1.0, 1.0]))
    assert np.allclose(occ, [1.5, 0.75, 0.0, 0.5])
    # as many slots as adapters: no contention, whatever the hold; an unknown hold: no guard
    assert slot_occupancy(rates, [np.array([0, 1])], [2], np.array([100.0]))[0] == 0.0
    assert slot_occupancy(rates, [np.array([0, 1])], [1], np.array([math.nan]))[0] == 0.0


class _Fake:
    """Latency regressors that always say the GPU is fast: TTFT p99 0.1 s, p50 0.05 s, TPOT p50 50 ms."""

    name = ""
    profile = None

    def latency_targets(self) -> tuple[str, ...]:
        return ("ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s")

    def trained_range(self, feature: str) -> None:
        return None

    def predict_groups(self, instance: Instance, groups: Any, max_loras: Any, max_cpu_loras: Any = None,
                       max_lora_rank: Any = None, latency: Any = ()) -> BatchPrediction:
        n = len(groups)
        const = {"ttft_p50_s": 0.05, "ttft_p99_s": 0.1, "tpot_p50_s": 0.05, "tpot_p99_s": 0.06}
        return BatchPrediction(throughput_tok_s=np.full(n, 1e9), starved=np.zeros(n, bool),
                               starved_probability=np.zeros(n), oom=np.zeros(n, bool),
                               offered_tok_s=np.ones(n), latency={t: np.full(n, const[t]) for t in latency})


def _problem(rate: float, slo: Slo) -> Instance:
    return Instance(name="g", model="llama-3.1-8b-instruct", gpu="h100-64gb",
                    workload=Workload(duration_s=600.0), slo=slo,
                    adapters=tuple(Adapter(f"a{i}", 8, rate) for i in range(40)))


def test_busy_slots_fail_a_ttft_bound_that_the_regressors_would_pass() -> None:
    oracle = make_oracle(None, "surrogate", bundle=_Fake())
    everyone = np.arange(40)
    hot = _problem(0.2, Slo())  # a request holds its slot ~(0.05 + ~200 tokens x 0.05) s: ~36 of 40 busy
    few, all_slots = oracle.points(hot, [(everyone, 8, None, None), (everyone, 40, None, None)])
    assert few.slo_ratio > 1 and few.starved  # ~36 busy adapters want 8 slots
    # a slot each: the regressors decide (the worst of TTFT p99 0.1 / 2 s and TPOT p99 60 / 200 ms)
    assert all_slots.slo_ratio == 0.06 / 0.2 and not all_slots.starved
    cold = _problem(0.001, Slo())
    (quiet,) = oracle.points(cold, [(everyone, 8, None, None)])
    assert quiet.slo_ratio == 0.06 / 0.2 and not quiet.starved  # under 1 busy slot in 8: no effect
    assert slot_occupancy(cold.rates, [everyone], [8], np.array([10.0]))[0] < 0.1 * SLOT_OCCUPANCY_MAX
    paper = _problem(0.2, Slo.paper())  # the papers' rule has no TTFT bound: no guard
    (p,) = oracle.points(paper, [(everyone, 8, None, None)])
    assert not p.starved
