"""Placement solvers on tiny instances with hand-known optima, judged by the one evaluator.

The oracle is the deterministic analytic test double (a GPU carries ``capacity_rps`` requests per second; the
memory rule is the twin's exact one), so every optimum below can be checked by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from placer.check.evaluate import evaluate
from placer.heuristics.fill import paper_order, zigzag
from placer.oracle import AnalyticOracle
from placer.problem.generate import generate
from placer.solve import SOLVERS, register_solver, solve
from twin.errors import InputError
from twin.spec import Adapter, Instance

HEURISTICS = ("greedy-paper", "ffd-bisect", "loraserve", "dlora", "least-loaded", "round-robin")


def make(rates: list[float], ranks: list[int] | int = 8, model: str = "llama-3.1-8b-instruct") -> Instance:
    rk = [ranks] * len(rates) if isinstance(ranks, int) else ranks
    adapters = tuple(Adapter(f"a{i}", r, x) for i, (r, x) in enumerate(zip(rk, rates, strict=True)))
    return Instance(name="tiny", model=model, gpu="h100-64gb", adapters=adapters)


def run(problem: Instance, solver: str, **oracle_kw: float) -> tuple:
    oracle = AnalyticOracle(**oracle_kw)
    result = solve(problem, solver, time_limit=30, seed=0, oracle=oracle)
    verdict = evaluate(problem, result, AnalyticOracle(**oracle_kw))
    return result, verdict


def test_all_builtin_solvers_are_registered() -> None:
    assert set(HEURISTICS) <= set(SOLVERS)


@pytest.mark.parametrize("solver", HEURISTICS)
def test_six_adapters_need_three_gpus(solver: str) -> None:
    # capacity 10 req/s, total 21 req/s: at least 3 GPUs; {6,4} {5,3,2} {1} shows 3 suffice
    problem = make([6, 5, 4, 3, 2, 1])
    result, verdict = run(problem, solver, capacity_rps=10)
    assert verdict.feasible, verdict.errors
    assert result.num_gpus == 3


@pytest.mark.parametrize("solver", HEURISTICS)
def test_one_gpu_when_everything_fits(solver: str) -> None:
    problem = make([0.5] * 5)
    result, verdict = run(problem, solver, capacity_rps=10)
    assert verdict.feasible and result.num_gpus == 1
    assert result.status == "optimal"  # meets the lower bound of 1
    g = result.gpus[0]
    assert 1 <= g.max_loras <= 5 and g.max_lora_rank == 8 and g.max_cpu_loras == 5


def test_bisection_beats_the_fixed_test_points() -> None:
    # 24 equal adapters, a GPU carries 12: optimum 2. The paper's test points (8, 16) stop at 8 per GPU.
    problem = make([1.0] * 24)
    paper, v1 = run(problem, "greedy-paper", capacity_rps=12)
    best, v2 = run(problem, "ffd-bisect", capacity_rps=12)
    assert v1.feasible and v2.feasible
    assert paper.num_gpus == 3
    assert best.num_gpus == 2


def test_memory_limits_high_rank_gpus() -> None:
    # rank 512 on Llama: at most 7 slots fit memory; with one slot needed per adapter, 7 adapters per GPU
    problem = make([0.01] * 14, ranks=512)
    for solver in ("greedy-paper", "ffd-bisect"):
        result, verdict = run(problem, solver, capacity_rps=100, min_slot_fraction=1.0)
        assert verdict.feasible, verdict.errors
        assert result.num_gpus == 2
        assert all(len(g.adapters) == 7 and g.max_loras == 7 and g.max_lora_rank == 512 for g in result.gpus)


def test_an_adapter_that_fits_nowhere_makes_the_problem_infeasible() -> None:
    problem = make([1.0, 25.0, 2.0])
    result = solve(problem, "ffd-bisect", time_limit=10, oracle=AnalyticOracle(capacity_rps=10))
    assert result.status == "infeasible"
    assert result.num_gpus == 0 and not result.gpus
    assert result.reason is not None and "'a1'" in result.reason


def test_same_seed_same_plan() -> None:
    problem = generate("zipf", 300, 3)
    plans = [solve(problem, "ffd-bisect", time_limit=30, seed=5,
                   oracle=AnalyticOracle(capacity_rps=6, slot_cost=0.002, min_slot_fraction=0.2))
             for _ in range(2)]
    a, b = plans
    assert a.gpus == b.gpus and a.num_gpus == b.num_gpus and a.status == b.status
    assert a.extra["construction"] == b.extra["construction"]


@pytest.mark.parametrize("family,seed", [("paper", 0), ("zipf", 1), ("dirichlet", 2)])
def test_heuristic_never_worse_than_the_paper_greedy(family: str, seed: int) -> None:
    problem = generate(family, 400, seed)
    kw = {"capacity_rps": 5.0, "slot_cost": 0.003, "min_slot_fraction": 0.25}
    paper, v1 = run(problem, "greedy-paper", **kw)
    best, v2 = run(problem, "ffd-bisect", **kw)
    assert v1.feasible and v2.feasible
    assert best.num_gpus <= paper.num_gpus


def test_zigzag_and_paper_order() -> None:
    rates = np.array([1.0, 5.0, 3.0, 4.0, 2.0])
    assert zigzag(rates, np.arange(5)).tolist() == [1, 0, 3, 4, 2]  # 5, 1, 4, 2, 3
    problem = make([0.1, 0.3, 0.2, 0.4], ranks=[8, 32, 8, 32])
    assert paper_order(problem).tolist() == [3, 1, 2, 0]  # rank 32 first (0.4, 0.3), then rank 8 zig-zag


def test_registry_rejects_unknown_and_duplicate_names() -> None:
    with pytest.raises(InputError, match="unknown solver"):
        solve(make([1.0]), "no-such-solver", oracle=AnalyticOracle())
    with pytest.raises(ValueError, match="already registered"):
        register_solver("greedy-paper", lambda *a, **k: None)


class _SlowOracle(AnalyticOracle):
    """The analytic double, 1 ms per backend call: lets a test see whether solvers watch the clock."""

    def _predict(self, problem, queries):  # type: ignore[no-untyped-def]
        import time

        time.sleep(0.001)
        return super()._predict(problem, queries)


@pytest.mark.parametrize("solver", ["ffd-bisect", pytest.param("loraserve", marks=pytest.mark.slow),
                                    pytest.param("dlora", marks=pytest.mark.slow)])
def test_time_limit_is_respected(solver: str) -> None:
    problem = generate("zipf", 120, 0)
    kw = {"capacity_rps": 4.0, "min_slot_fraction": 0.3}
    greedy = _SlowOracle(**kw)
    greedy.tokens_per_request(problem)  # one-time length-table set-up, not the solvers' time
    t_greedy = solve(problem, "greedy-paper", time_limit=60, oracle=greedy).runtime_s
    result = solve(problem, solver, time_limit=0.3, oracle=_SlowOracle(**kw))
    # ffd-bisect always runs the greedy pass, one filling and two baselines; nothing else past the limit
    assert result.runtime_s < 0.3 + 3 * t_greedy + 0.5
    if result.gpus:
        assert evaluate(problem, result, AnalyticOracle(**kw)).feasible


@pytest.mark.slow  # loads the shipped CatBoost models and builds the linear bound: ~15 s on 2 busy cores
def test_default_surrogate_oracle_end_to_end() -> None:
    import surrogate
    from placer.oracle import make_oracle

    problem = generate("zipf", 64, 0, total_rate_rps=128.0)
    try:
        surrogate.load_default(problem.model, problem.gpu)
    except InputError:
        pytest.skip("no shipped surrogate models")
    paper = solve(problem, "greedy-paper", time_limit=30)  # default oracle: the shipped surrogates
    best = solve(problem, "ffd-bisect", time_limit=30)
    assert paper.oracle.startswith("surrogate(") and best.oracle == paper.oracle
    assert 1 <= best.num_gpus <= paper.num_gpus
    for plan in (paper, best):
        assert evaluate(problem, plan, make_oracle(problem)).feasible
