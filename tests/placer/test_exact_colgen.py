"""Pattern (Gilmore–Gomory) LP bound and the valid aggregated LP: hand-known optima, validity against brute
force, the exact solvers' time limit and honest statuses."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placer.check.evaluate import evaluate
from placer.exact.bounds import assignment_bound, lp_bound, model_bounds, weight_buckets
from placer.exact.capacity import build_linear_model
from placer.exact.colgen import pattern_bound, pattern_dive, pattern_packing
from placer.exact.packing import BinClass, PackingModel, first_fit_decreasing
from placer.oracle import AnalyticOracle
from placer.solve import solve
from twin.spec import Adapter, Instance


def brute_force(model: PackingModel) -> int:
    """Exact optimum of a tiny multi-class packing model by enumerating bin labels."""
    n = model.n_items
    for m in range(1, n + 1):
        for labels in itertools.product(range(m), repeat=n):
            if labels[0] != 0 or max(labels) != m - 1:
                continue
            bins = [[i for i in range(n) if labels[i] == j] for j in range(m)]
            if all(model.class_for(b) is not None for b in bins):
                return m
    return n


def test_aggregated_lp_is_a_relaxation_when_classes_split_heavy_and_light_items() -> None:
    # one heavy item fills a one-item class; ten light ones fit one high-count class: optimum 2. A
    # proportional split of the kind's weight over the classes (the previous LP) claimed 6.
    model = PackingModel(np.array([100] + [2] * 10), np.zeros(11, dtype=np.int64),
                         (BinClass(100, 1, 0), BinClass(20, 10, 0)))
    lp = lp_bound(model)
    assert lp is not None and lp <= 2 + 1e-6
    assert model_bounds(model).best == 2 == first_fit_decreasing(model).num_bins


def test_assignment_lp_sees_that_two_classes_cannot_both_take_the_heavy_items() -> None:
    # 60, 60 and twenty 1s; class A (100, 2 items), class B (40, 20 items). The 60s need two A bins (one item
    # of room each), so 18 light items are left for B: optimum 3. The per-kind LP lets each class take "the
    # heaviest" items of its envelope and says 2; the assignment LP moves every item once: 2.18, so 3.
    model = PackingModel(np.array([60, 60] + [1] * 20), np.zeros(22, dtype=np.int64),
                         (BinClass(100, 2, 0), BinClass(40, 20, 0)))
    lp, assign = lp_bound(model), assignment_bound(model)
    assert lp is not None and assign is not None
    assert math.ceil(lp - 1e-6) == 2 and 2.1 < assign < 3
    assert model_bounds(model).best == 3 == first_fit_decreasing(model).num_bins


def test_weight_buckets_partition_the_items_of_each_kind() -> None:
    rng = np.random.default_rng(3)
    w, kinds = rng.integers(1, 5000, 2000), rng.choice([8, 16, 32], 2000)
    rows = weight_buckets(w, kinds, 1.2)
    for g in (8, 16, 32):
        mine = [r for r in rows if r[0] == g]
        assert sum(r[3] for r in mine) == int((kinds == g).sum())
        assert sum(r[4] for r in mine) == int(w[kinds == g].sum())
        assert all(lo <= hi < 1.2 * lo for _, lo, hi, _, _ in mine)
        assert all(a[2] < b[1] for a, b in zip(mine, mine[1:], strict=False))  # disjoint, increasing
    assert len(rows) < 3 * 50  # log(5000) / log(1.2) ≈ 47 buckets per kind at most


@settings(max_examples=60, deadline=None)
@given(st.integers(3, 7), st.integers(0, 2**32 - 1), st.sampled_from([1.0001, 1.2, 2.0]))
def test_assignment_bound_never_exceeds_the_optimum(n: int, seed: int, ratio: float) -> None:
    # random multi-class models (capacity falls with the count limit, kinds limit the classes): the LP, at
    # any bucket width, is at most the brute-force optimum, and model_bounds stays at least the old bounds
    rng = np.random.default_rng(seed)
    counts = sorted(rng.choice(np.arange(1, n + 1), size=int(rng.integers(1, 4)), replace=False).tolist())
    caps = sorted(rng.integers(40, 120, len(counts)).tolist(), reverse=True)
    classes = tuple(BinClass(int(c), int(k), int(rng.integers(1, 3)))
                    for c, k in zip(caps, counts, strict=True))
    classes += (BinClass(int(caps[0]), 1, 2),)  # every item fits somewhere alone
    model = PackingModel(rng.integers(1, int(caps[0]) + 1, n), rng.integers(1, 3, n), classes)
    opt = brute_force(model)
    assign = assignment_bound(model, ratio=ratio)
    assert assign is not None and assign <= opt + 1e-6
    report = model_bounds(model)
    assert max(report.l1, report.count, report.l2, math.ceil((report.lp or 0) - 1e-4)) <= report.best <= opt


def test_pattern_bound_proves_what_l1_l2_and_the_lp_cannot() -> None:
    # capacity 100: 54 and 48 never share a bin, and no bin of them has room for two of 39, 29, 25 (spare 46
    # and 52): optimum 3, while L1 = L2 = ceil(195 / 100) = 2; the pattern LP is 7/3
    model = PackingModel(np.array([54, 48, 39, 29, 25]), np.zeros(5, dtype=np.int64), (BinClass(100, 5, 0),))
    assert model_bounds(model).best == 2
    pb = pattern_bound(model)
    assert pb.converged and pb.bound == pytest.approx(7 / 3, abs=1e-6) and pb.best == 3 == brute_force(model)
    packing = pattern_packing(model, pb)
    assert packing is not None and packing.is_valid(model) and packing.num_bins == 3


def test_the_dive_finds_the_optimum_first_fit_decreasing_misses() -> None:
    # capacity 100: {52, 46} {50, 34, 16} {41, 30, 24} is a perfect-enough 3-bin packing; FFD puts 52+46,
    # 50+41, 34+30+24 and has no room left for 16: 4 bins
    model = PackingModel(np.array([52, 50, 46, 41, 34, 30, 24, 16]), np.zeros(8, dtype=np.int64),
                         (BinClass(100, 8, 0),))
    assert first_fit_decreasing(model).num_bins == 4
    pb = pattern_bound(model)
    dive = pattern_dive(model, columns=pb.patterns)
    assert pb.best == 3 and dive is not None and dive.is_valid(model) and dive.num_bins == 3


@pytest.mark.parametrize("seed", range(10))
def test_pattern_bound_is_valid_and_its_packing_feasible(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 8))
    classes = (BinClass(100, 2, 1), BinClass(80, 4, 1), BinClass(60, 6, 2))
    model = PackingModel(rng.integers(5, 60, n), rng.integers(1, 3, n), classes)
    pb = pattern_bound(model)
    opt = brute_force(model)
    assert pb.best <= opt and model_bounds(model).best <= opt
    for packing in (pattern_packing(model, pb), pattern_dive(model, columns=pb.patterns)):
        assert packing is not None and packing.is_valid(model) and packing.num_bins >= opt


def test_pattern_bound_respects_the_kind_limits() -> None:
    # kind-2 items only fit the one-item class: three bins for them, however light, and the kind-1 item cannot
    # join any of them: 4 bins; the rank-threshold count bound only sees the three
    model = PackingModel(np.array([1, 1, 1, 1]), np.array([2, 2, 2, 1]),
                         (BinClass(10, 1, 2), BinClass(10, 10, 1)))
    assert model_bounds(model).count == 3
    assert pattern_bound(model).best == 4 == brute_force(model)


def make(rates: list[float], ranks: list[int], name: str) -> Instance:
    return Instance(name=name, model="llama-3.1-8b-instruct", gpu="h100-64gb",
                    adapters=tuple(Adapter(f"a{i}", int(r), float(x))
                                   for i, (r, x) in enumerate(zip(ranks, rates, strict=True))))


@pytest.mark.parametrize("solver", ("cpsat", "ilp"))
def test_exact_solvers_prove_the_pattern_bound_optimum_without_search(solver: str) -> None:
    # the instance above as adapters on 10-req/s GPUs: optimum 3, L1 = L2 = LP = 2; the pattern LP proves 3
    problem = make([5.4, 4.8, 3.9, 2.9, 2.5], [8] * 5, "five")
    oracle = AnalyticOracle(capacity_rps=10)
    result = solve(problem, solver, time_limit=20, seed=0, oracle=oracle)
    assert result.extra["model_bounds"]["best"] == 2
    assert result.status == "optimal" and result.num_gpus == 3 == result.lower_bound
    assert result.extra["pattern_lp"]["bound"] == pytest.approx(7 / 3, abs=1e-3)
    assert evaluate(problem, result, oracle).feasible


def hard_problem() -> Instance:
    """60 adapters of 2–4 req/s (about 3 per 10-req/s GPU), three ranks: a multi-class model whose bounds
    (21) and first-fit packing (23 GPUs) are far apart; closing that gap takes more than 2 s."""
    rng = np.random.default_rng(1)
    rates = np.round(rng.uniform(2.0, 4.0, 60), 3).tolist()
    ranks = rng.choice([8, 16, 512], size=60, p=[0.45, 0.35, 0.2]).tolist()
    return make(rates, ranks, "hard60")


@pytest.mark.parametrize("solver", ("cpsat", "ilp"))
def test_time_limit_is_respected_and_the_status_is_honest(solver: str) -> None:
    problem = hard_problem()
    oracle = AnalyticOracle(capacity_rps=10, min_slot_fraction=0.5, slot_cost=0.03)
    start = time.perf_counter()
    result = solve(problem, solver, time_limit=2, seed=0, oracle=oracle)
    elapsed = time.perf_counter() - start
    # the solvers keep 10 % of the limit in reserve; the slack absorbs a loaded shared machine
    assert result.runtime_s <= 2.2 and elapsed <= 2.6, (result.runtime_s, elapsed)
    assert result.status in ("optimal", "timeout", "feasible")
    assert (result.status == "optimal") == (result.lower_bound == result.num_gpus)
    model_opt = result.extra["model_status"] == "optimal"
    assert model_opt == (result.extra["model_objective"] <= np.ceil(result.extra["model_bound"] - 1e-6))
    assert evaluate(problem, result, oracle).feasible
    assert len(build_linear_model(problem, oracle).classes) > 1
