"""Lower bounds: Martello–Toth L2 against its definition, validity against brute-force optima, speed."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from placer.exact.bounds import count_bound, l1_bound, l2_bound, model_bounds
from placer.exact.packing import (
    BinClass,
    Packing,
    PackingModel,
    first_fit_decreasing,
    max_items_that_fit,
)


def l2_by_definition(w: list[int], c: int) -> int:
    best = 0
    for a in [0] + [x for x in w if x <= c / 2]:
        j1 = [x for x in w if x > c - a]
        j2 = [x for x in w if c - a >= x > c / 2]
        j3 = [x for x in w if c / 2 >= x >= a]
        rest = sum(j3) - (len(j2) * c - sum(j2))
        best = max(best, len(j1) + len(j2) + max(0, -(-rest // c)))
    return best


def test_l2_hand_example() -> None:
    # capacity 10: three items of 6 cannot share bins, so L2 = 3 while L1 = ceil(18 / 10) = 2
    w = np.array([6, 6, 6, 4, 4, 4, 1])
    assert l1_bound(w, 10) == 4 and l2_bound(w, 10) == 4
    assert l2_bound(np.array([6, 6, 6]), 10) == 3 and l1_bound(np.array([6, 6, 6]), 10) == 2


def test_l2_matches_its_definition_on_random_instances() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        c = int(rng.integers(5, 40))
        w = rng.integers(1, c + 1, size=int(rng.integers(1, 14)))
        assert l2_bound(w, c) == l2_by_definition([int(x) for x in w], c)


def brute_force_bins(w: list[int], c: int, max_items: int) -> int:
    """Exact optimum of tiny 1-D bin packing by enumerating bin labels."""
    n = len(w)
    for m in range(1, n + 1):
        for labels in itertools.product(range(m), repeat=n):
            if labels[0] != 0:
                continue
            loads = [0] * m
            counts = [0] * m
            for x, b in zip(w, labels, strict=True):
                loads[b] += x
                counts[b] += 1
            if max(loads) <= c and max(counts) <= max_items:
                return m
    return n


@pytest.mark.parametrize("seed", range(12))
def test_bounds_never_exceed_the_optimum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    c = int(rng.integers(10, 30))
    w = [int(x) for x in rng.integers(1, c + 1, size=int(rng.integers(2, 8)))]
    max_items = int(rng.integers(1, 5))
    model = PackingModel(np.array(w), np.zeros(len(w), dtype=np.int64), (BinClass(c, max_items),))
    opt = brute_force_bins(w, c, max_items)
    report = model_bounds(model)
    assert max(report.l1, report.count, report.l2) <= report.best <= opt
    assert report.lp is not None and report.lp <= opt + 1e-6
    assert first_fit_decreasing(model).num_bins >= opt


def test_rank_thresholds_tighten_the_bound() -> None:
    # Two classes: small capacity for high ranks. Rank-64 items (kind 64) can only use the 6-capacity class.
    model = PackingModel(np.array([5, 5, 5, 1]), np.array([64, 64, 64, 8]),
                         (BinClass(capacity=20, max_items=10, max_kind=8), BinClass(6, 10, 64)))
    report = model_bounds(model)
    assert report.best == 3  # each rank-64 item needs its own bin; global L1 alone would say 1
    packing = first_fit_decreasing(model)
    assert packing.is_valid(model) and packing.num_bins == 3


def test_count_and_fit_helpers() -> None:
    assert count_bound(10, 3) == 4 and count_bound(0, 3) == 0
    assert max_items_that_fit(np.array([5, 1, 2, 3]), 6) == 3  # 1 + 2 + 3


def test_invalid_packings_are_detected() -> None:
    model = PackingModel(np.array([6, 5]), np.zeros(2, dtype=np.int64), (BinClass(10, 5),))
    assert not Packing(((0, 1),), (0,)).is_valid(model)  # 11 > 10
    assert not Packing(((0,),), (0,)).is_valid(model)  # item 1 missing
    assert Packing(((0,), (1,)), (0, 0)).is_valid(model)


def test_bounds_on_ten_thousand_items_are_fast() -> None:
    rng = np.random.default_rng(1)
    n = 10_000
    model = PackingModel(rng.integers(1, 1000, size=n), rng.choice([8, 16, 32, 64], size=n),
                         tuple(BinClass(int(c), int(k), int(r)) for c, k, r in
                               [(5000, 64, 16), (4500, 128, 16), (4000, 64, 64), (3000, 256, 64)]))
    start = time.perf_counter()
    report = model_bounds(model)
    elapsed = time.perf_counter() - start
    assert report.best >= report.l1 > 0
    assert elapsed < 1.0, f"bounds took {elapsed:.2f} s"
