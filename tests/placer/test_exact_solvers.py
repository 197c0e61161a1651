"""Exact placement solvers (cpsat, ilp): tiny instances with hand-known optima, cross-solver invariants.

The oracle is the deterministic analytic test double (:class:`placer.oracle.base.AnalyticOracle`): a GPU
carries
``capacity_rps`` requests per second and needs ``ceil(min_slot_fraction · n)`` slots; memory is the twin's
exact rule (at most 7 slots of rank 512 on Llama / H100). With ``slot_cost`` 0 its capacity does not depend on
the mix, so the linearised model is exact and a proven optimum is a true optimum.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from placer.check.evaluate import evaluate
from placer.exact.bounds import lower_bound, model_bounds
from placer.exact.capacity import build_linear_model
from placer.oracle import AnalyticOracle
from placer.oracle.base import Query
from placer.solve import SOLVERS, solve
from twin.spec import Adapter, Instance, Workload

EXACT = ("cpsat", "ilp")
HEURISTICS = ("greedy-paper", "ffd-bisect", "loraserve", "dlora", "least-loaded", "round-robin")


def make(rates: list[float], ranks: list[int] | int = 8, name: str = "tiny") -> Instance:
    rk = [ranks] * len(rates) if isinstance(ranks, int) else ranks
    return Instance(name=name, model="llama-3.1-8b-instruct", gpu="h100-64gb",
                    adapters=tuple(Adapter(f"a{i}", int(r), float(x))
                                   for i, (r, x) in enumerate(zip(rk, rates, strict=True))))


CASES = [
    # (rates, ranks, oracle options, optimum, why)
    ([6, 5, 4, 3, 2, 1], 8, {"capacity_rps": 10}, 3, "21 req/s on 10-req/s GPUs; {6,4} {5,3,2} {1}"),
    ([4, 4, 4, 4, 3], 8, {"capacity_rps": 10}, 3, "two 4s per GPU at most, then 3 does not fit: L1 = 2 < 3"),
    ([0.01] * 14, 512, {"capacity_rps": 100, "min_slot_fraction": 1.0}, 2, "7 rank-512 slots per GPU"),
    ([1.0] * 5, [8, 8, 512, 512, 8], {"capacity_rps": 100, "min_slot_fraction": 1.0}, 1, "5 slots fit"),
]


@pytest.mark.parametrize("solver", EXACT)
@pytest.mark.parametrize("rates,ranks,opts,optimum,why", CASES)
def test_hand_known_optima(solver: str, rates: list[float], ranks: list[int] | int, opts: dict,
                           optimum: int, why: str) -> None:
    problem = make(rates, ranks)
    result = solve(problem, solver, time_limit=20, seed=0, oracle=AnalyticOracle(**opts))
    assert result.status == "optimal", (why, result.reason, result.extra.get("detail"))
    assert result.num_gpus == optimum == result.lower_bound, why
    verdict = evaluate(problem, result, AnalyticOracle(**opts))
    assert verdict.feasible, verdict.errors


@pytest.mark.parametrize("rates,ranks,opts,optimum,why", CASES)
def test_no_heuristic_beats_the_proven_optimum(rates: list[float], ranks: list[int] | int, opts: dict,
                                               optimum: int, why: str) -> None:
    problem = make(rates, ranks)
    for name in HEURISTICS:
        result = solve(problem, name, time_limit=20, seed=0, oracle=AnalyticOracle(**opts))
        assert result.num_gpus >= optimum, (name, why)


def random_instance(seed: int, n: int, slot_cost: float) -> tuple[Instance, dict]:
    rng = np.random.default_rng(seed)
    rates = np.round(rng.uniform(1.0, 5.5, n), 2).tolist()
    ranks = rng.choice([8, 16, 512], size=n, p=[0.45, 0.35, 0.2]).tolist()
    opts = {"capacity_rps": 10, "min_slot_fraction": 0.5, "slot_cost": slot_cost}
    return make(rates, ranks, name=f"rand{seed}"), opts


@pytest.mark.parametrize("seed", range(4))
def test_cross_solver_invariants_when_the_model_is_exact(seed: int) -> None:
    # slot_cost 0: capacity does not depend on the mix, so proven optima are true optima under the oracle
    problem, opts = random_instance(seed, 14, 0.0)
    results = {name: solve(problem, name, time_limit=20, seed=0, oracle=AnalyticOracle(**opts))
               for name in (*EXACT, "ffd-bisect", "greedy-paper")}
    lb = lower_bound(problem, AnalyticOracle(**opts))
    for name, r in results.items():
        assert evaluate(problem, r, AnalyticOracle(**opts)).feasible, name  # the evaluator agrees
        assert lb <= r.lower_bound <= r.num_gpus, name  # bounds are below every feasible plan
    cp, ilp = results["cpsat"], results["ilp"]
    assert cp.status == ilp.status == "optimal" and cp.num_gpus == ilp.num_gpus
    for name in ("ffd-bisect", "greedy-paper"):
        assert results[name].num_gpus >= cp.num_gpus, name  # no heuristic beats a proven optimum


@pytest.mark.parametrize("seed", range(4))
def test_the_bound_is_at_least_the_light_one_and_at_most_the_proven_optimum(seed: int) -> None:
    # multi-class models (capacity falls with the count): the bound every solver reports is the full model's,
    # never below the light relaxation's (what large problems used to get) nor above cpsat's proven optimum
    problem, opts = random_instance(seed, 12, 0.03)
    lb = lower_bound(problem, AnalyticOracle(**opts))
    light = lower_bound(problem, AnalyticOracle(**opts), light=True)
    cp = solve(problem, "cpsat", time_limit=20, seed=0, oracle=AnalyticOracle(**opts))
    assert cp.status == "optimal"
    assert light <= lb <= cp.num_gpus


def test_large_problems_get_the_full_model_bound() -> None:
    # 3,000 adapters (above the old 2,000 cut-off to the light model): the bound is the full model's, and
    # the full model is stronger here (capacity falls with the count: the light model keeps the best one)
    rng = np.random.default_rng(0)
    problem = make(np.round(rng.uniform(0.001, 0.05, 3000), 4).tolist(),
                   rng.choice([8, 16, 32], size=3000).tolist(), name="large")
    opts = {"capacity_rps": 10, "min_slot_fraction": 0.5, "slot_cost": 0.03}
    full = model_bounds(build_linear_model(problem, AnalyticOracle(**opts)).bound_model).best
    light = model_bounds(build_linear_model(problem, AnalyticOracle(**opts), light=True).bound_model).best
    assert lower_bound(problem, AnalyticOracle(**opts)) == full > light


@pytest.mark.parametrize("seed", range(3))
def test_cpsat_and_ilp_agree_on_the_multi_class_model(seed: int) -> None:
    # slot_cost > 0: capacity falls with the adapter count, so the model has several classes (assignment
    # formulation, not arc-flow); both solvers must prove the same optimum of that model
    problem, opts = random_instance(seed, 12, 0.03)
    model = build_linear_model(problem, AnalyticOracle(**opts))
    assert len(model.classes) > 1
    cp = solve(problem, "cpsat", time_limit=20, seed=0, oracle=AnalyticOracle(**opts))
    ilp = solve(problem, "ilp", time_limit=20, seed=0, oracle=AnalyticOracle(**opts))
    assert cp.status == ilp.status == "optimal", (cp.extra["detail"], ilp.extra["detail"])
    assert cp.extra["model_objective"] == ilp.extra["model_objective"]
    assert not cp.extra["oracle_rejected"] and not ilp.extra["oracle_rejected"]


def test_linear_model_classes_follow_the_oracle() -> None:
    # rank 512 on Llama/H100: at most 7 slots; with one slot per adapter no class holds more than 7
    problem = make([0.5] * 10 + [0.2] * 4, [8] * 10 + [512] * 4)
    model = build_linear_model(problem, AnalyticOracle(capacity_rps=10, min_slot_fraction=1.0))
    top = {c.max_kind: c.max_items for c in model.classes}
    assert top[512] == 7
    assert all(c.capacity_tok_s == pytest.approx(10 * model.tokens_per_request, rel=1e-6)
               for c in model.classes)


class LoadRecordingOracle(AnalyticOracle):
    """The analytic oracle, remembering the largest total request rate it was asked to judge."""

    def __init__(self, **kwargs: float) -> None:
        super().__init__(**kwargs)
        self.max_rate_rps = 0.0

    def _predict(self, problem: Instance, queries: Sequence[Query]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        for idx, *_ in queries:
            self.max_rate_rps = max(self.max_rate_rps, float(problem.rates[idx].sum()))
        return super()._predict(problem, queries)


@pytest.mark.parametrize("light", [False, True])
def test_capacity_search_never_probes_far_beyond_the_capacity(light: bool) -> None:
    # A GPU carries 10 req/s; the problem's 3.6 req/s is far below. The gallop up from a feasible load
    # stops at its first infeasible ×4 step, so no probe exceeds 4 × 10 req/s. (It used to judge all 7
    # steps at once, up to 4^7 × the feasible load: with the twin oracle one simulated hour of ~9,000+
    # req/s, gigabytes of request arrays per probe, what blew up `placer solve --oracle twin`.)
    problem = make([0.6, 0.4, 0.3, 0.2, 0.1, 0.1] * 2, [8, 16] * 6)
    oracle = LoadRecordingOracle(capacity_rps=10)
    model = build_linear_model(problem, oracle, light=light)
    assert model.classes  # the capacities were found all the same
    assert 10 < oracle.max_rate_rps <= 4 * 10 * (1 + 1e-9)


def test_twin_lower_bound_probes_few_configurations_at_bounded_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    # The twin oracle simulates every configuration: its lower bound uses the light model (a few hundred
    # simulations; the full one judges thousands), and no probe offers more than a few times the ~40 req/s
    # a Llama / H100 GPU serves (a twin run's memory grows with its requests). Any simulation above
    # MAX_RPS is refused before its requests are drawn, so a regression fails here instead of allocating.
    import placer.oracle.backends as backends
    from placer.oracle import TwinOracle

    max_rps, rates = 300.0, []
    simulate_one = backends._simulate_one

    def guarded(args: tuple[Any, ...]) -> tuple[float, float, bool, bool]:
        rates.append(args[0].total_rate_rps)
        assert rates[-1] <= max_rps, f"simulating {rates[-1]:.0f} req/s"
        return simulate_one(args)

    monkeypatch.setattr(backends, "_simulate_one", guarded)
    problem = Instance(name="tw", model="llama-3.1-8b-instruct", gpu="h100-64gb",
                       workload=Workload(duration_s=300.0),
                       adapters=tuple(Adapter(f"a{i}", r, x) for i, (r, x) in
                                      enumerate(zip([8, 16, 32] * 3, [1.6, 0.8, 0.1] * 3, strict=True))))
    oracle = TwinOracle(seed=0)
    assert lower_bound(problem, oracle) == 1  # 7.5 req/s: one GPU
    assert 0 < len(rates) == oracle.predictions <= 400


def triplet_problem(n_triplets: int, seed: int) -> Instance:
    """Rates in triplets that fill a 10-req/s GPU exactly: optimum = n_triplets, hard to prove."""
    rng = np.random.default_rng(seed)
    rates: list[float] = []
    for _ in range(n_triplets):
        a = float(rng.integers(380, 491))
        b = float(rng.integers(251, int((1000 - a) // 2) + 1))
        rates += [a / 100, b / 100, (1000 - a - b) / 100]
    return make(list(rng.permutation(rates)), 8, name="triplets")


@pytest.mark.parametrize("solver", EXACT)
def test_time_limit_is_respected(solver: str) -> None:
    problem = triplet_problem(15, 0)
    oracle = AnalyticOracle(capacity_rps=10)
    build_linear_model(problem, oracle)  # the model's oracle probes are not the solver's search time
    start = time.perf_counter()
    result = solve(problem, solver, time_limit=1, seed=0, oracle=oracle)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, elapsed
    assert result.status in ("optimal", "timeout", "feasible")
    assert result.num_gpus >= 15 and result.lower_bound == 15
    assert evaluate(problem, result, AnalyticOracle(capacity_rps=10)).feasible


def test_solvers_are_registered() -> None:
    assert set(EXACT) <= set(SOLVERS)


@pytest.mark.parametrize("solver", EXACT)
def test_an_adapter_that_fits_nowhere_is_reported_infeasible(solver: str) -> None:
    problem = make([1.0, 25.0, 2.0])
    result = solve(problem, solver, time_limit=10, seed=0, oracle=AnalyticOracle(capacity_rps=10))
    assert result.status == "infeasible" and result.num_gpus == 0
    assert "a1" in (result.reason or "")


class ConflictOracle(AnalyticOracle):
    """The analytic double, except that adapters a0 and a1 starve whenever they share a GPU: a mix effect the
    linearised model cannot see, which the exact solvers must learn from the oracle's rejections."""

    kind = "conflict"

    def _predict(self, problem, queries):  # type: ignore[no-untyped-def]
        thr, prob, flag, off = super()._predict(problem, queries)
        clash = np.array([{"a0", "a1"} <= {problem.adapters[i].id for i in q[0]} for q in queries])
        return thr * np.where(clash, 0.5, 1.0), np.where(clash, 1.0, prob), flag | clash, off


@pytest.mark.parametrize("solver", EXACT)
def test_mix_effects_the_model_misses_are_learnt_from_the_oracle(solver: str) -> None:
    # 2 + 2 + 1 + 1 req/s fit one 10-req/s GPU by load, but a0 and a1 clash: optimum 2 GPUs
    problem = make([2.0, 2.0, 1.0, 1.0])
    result = solve(problem, solver, time_limit=20, seed=0, oracle=ConflictOracle(capacity_rps=10))
    assert evaluate(problem, result, ConflictOracle(capacity_rps=10)).feasible
    assert result.num_gpus == 2
    assert result.extra["rounds"] >= 2 and result.extra["no_goods"] >= 1
    assert not any({"a0", "a1"} <= set(g.adapters) for g in result.gpus)
