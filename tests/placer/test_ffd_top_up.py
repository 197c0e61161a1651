"""ffd-bisect's top-up: after its prefix, a GPU takes the longest run of the coldest adapters left."""

from __future__ import annotations

import numpy as np

from placer.heuristics.ffd_bisect import candidate_orders, fill_bisect
from placer.oracle import AnalyticOracle
from placer.solve import solve
from twin.spec import Adapter, Instance


def make(rates: list[float], ranks: list[int]) -> Instance:
    adapters = tuple(Adapter(f"a{i}", r, x) for i, (r, x) in enumerate(zip(ranks, rates, strict=True)))
    return Instance(name="tiny", model="llama-3.1-8b-instruct", gpu="h100-64gb", adapters=adapters)


def never() -> bool:
    return False


def check_partition(problem: Instance, order: np.ndarray, bins: list[np.ndarray],
                    oracle: AnalyticOracle) -> None:
    placed = np.concatenate(bins)
    assert sorted(placed.tolist()) == sorted(order.tolist())  # each adapter of the order once, no other
    assert all(v.feasible for v in oracle.evaluate_many(problem, bins))


def test_top_up_fills_the_room_a_hot_adapter_leaves() -> None:
    # capacity 10 req/s. Plain: {5,4} stops at 6 (15 > 10), then {6,3,1}, then {1}: 3 GPUs. Topped up, the
    # first GPU also takes a cold 1 (10): {5,4,1} {6,3,1}, 2 GPUs (total 20: optimal).
    problem = make([5, 4, 6, 3, 1, 1], [8] * 6)
    order = np.arange(6)
    oracle = AnalyticOracle(capacity_rps=10)
    plain = fill_bisect(problem, order, oracle, never)
    topped = fill_bisect(problem, order, oracle, never, top_up=True)
    assert plain is not None and topped is not None
    assert len(plain) == 3 and len(topped) == 2
    check_partition(problem, order, topped, oracle)
    assert sorted(topped[0].tolist()) == [0, 1, 4]  # the prefix {5,4} and the first of the coldest


def test_top_up_never_raises_a_gpus_rank() -> None:
    # the cold rank-32 adapter would fit the first GPU by load, but not by its rank: it stays for later
    problem = make([5, 4, 6, 1], [8, 8, 8, 32])
    order = np.arange(4)
    oracle = AnalyticOracle(capacity_rps=10)
    bins = fill_bisect(problem, order, oracle, never, top_up=True)
    assert bins is not None
    check_partition(problem, order, bins, oracle)
    assert 3 not in bins[0].tolist()
    assert [int(problem.ranks[b].max()) for b in bins] == [8, 32]


def test_top_up_takes_only_adapters_of_the_order() -> None:
    # a sub-order (as re-planning passes): the coldest adapters outside it are never taken
    problem = make([5, 4, 6, 3, 0.1, 0.1, 1, 1], [8] * 8)
    order = np.array([0, 1, 2, 3, 6, 7])
    oracle = AnalyticOracle(capacity_rps=10)
    bins = fill_bisect(problem, order, oracle, never, top_up=True)
    assert bins is not None
    check_partition(problem, order, bins, oracle)
    assert len(bins) == 2


def test_ffd_bisect_reports_its_topped_up_fillings() -> None:
    problem = make([5, 4, 6, 3, 1, 1], [8] * 6)
    result = solve(problem, "ffd-bisect", time_limit=30, seed=0, oracle=AnalyticOracle(capacity_rps=10))
    assert result.num_gpus == 2
    assert result.stats.candidates is not None
    assert any(name.endswith("+top-up") for name in result.stats.candidates)


def test_decreasing_order_with_the_largest_rank_zigzagged() -> None:
    # rank groups smallest first; decreasing rate inside each, except the largest rank: hot, cold, hot, ...
    problem = make([3, 1, 2, 9, 7, 8, 4, 5], [8, 8, 8, 32, 32, 32, 16, 16])
    order = dict(candidate_orders(problem, seed=0))["decreasing-rank-asc-zigzag-top"]
    assert problem.rates[order].tolist() == [3, 2, 1, 5, 4, 9, 7, 8]
