"""Baselines the papers compare against, each searched over the GPU count with the same oracle.

- ``loraserve``: LoRAServe-style. Per-rank *operating points* (the request rate one GPU of rank-r adapters
  carries, from the oracle); each adapter's demand is its rate over its rank's operating point; adapters by
  decreasing demand go to the GPU with the least total demand.
- ``dlora``: dLoRA's proactive placement. Adapters by decreasing rate go to the GPU that maximises the minimum
  burst tolerance over all GPUs (tolerance = operating point at the GPU's largest rank / its total rate).
- ``least-loaded``: adapters by decreasing rate, each to the GPU with the lowest total rate.
- ``round-robin``: adapter i (input order) to GPU i mod G.

A rule fixes the assignment for a given GPU count G; each baseline returns the smallest G (galloping upward
from the continuous bound, then bisection) for which the oracle calls every GPU feasible.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from placer.heuristics.fill import largest_prefix
from placer.oracle.base import Oracle
from placer.result import GpuPlan, Result
from twin.spec import Adapter, Instance

Rule = Callable[[int], np.ndarray]  # GPU count -> GPU index of every adapter
_OP_ADAPTERS = 2048  # size of the homogeneous probe instance behind an operating point


def operating_points(problem: Instance, oracle: Oracle) -> dict[int, float]:
    """Request rate (req/s) one GPU carries when it serves only rank-r adapters of the rank's mean rate."""
    memo = oracle.memo(problem)
    if ("operating_points",) in memo:
        return dict(memo[("operating_points",)])
    out: dict[int, float] = {}
    ranks = problem.ranks
    for r in sorted(set(ranks.tolist())):
        mean_rate = float(problem.rates[ranks == r].mean())
        probe = problem.replace(name=f"{problem.name}-op{r}", adapters=tuple(
            Adapter(f"op{i}", r, mean_rate) for i in range(_OP_ADAPTERS)))
        k, _ = largest_prefix(probe, np.arange(_OP_ADAPTERS), oracle, 64)
        out[r] = max(k, 1) * mean_rate
    memo[("operating_points",)] = dict(out)
    return out


def _loraserve_rule(problem: Instance, oracle: Oracle) -> tuple[Rule, float]:
    ops = operating_points(problem, oracle)
    demand = problem.rates / np.array([ops[int(r)] for r in problem.ranks])
    order = np.argsort(-demand, kind="stable")

    def rule(g: int) -> np.ndarray:
        assign, load = np.empty(problem.n_adapters, np.int64), np.zeros(g)
        for i in order:
            j = int(np.argmin(load))
            assign[i], load[j] = j, load[j] + demand[i]
        return assign

    return rule, float(demand.sum())


def _dlora_rule(problem: Instance, oracle: Oracle) -> tuple[Rule, float]:
    ops = operating_points(problem, oracle)
    op_of = np.zeros(max(ops) + 1)
    for r, v in ops.items():
        op_of[r] = v
    order = np.argsort(-problem.rates, kind="stable")

    def rule(g: int) -> np.ndarray:
        assign = np.empty(problem.n_adapters, np.int64)
        load, rank = np.zeros(g), np.zeros(g, np.int64)
        tol = np.full(g, np.inf)
        for i in order:
            r, x = int(problem.ranks[i]), float(problem.rates[i])
            new_tol = op_of[np.maximum(rank, r)] / (load + x)
            two = np.partition(tol, 1)[:2] if g > 1 else np.array([np.inf, np.inf])
            others = np.where(tol == two[0], two[1], two[0])  # min tolerance over the other GPUs
            j = int(np.argmax(np.minimum(new_tol, others)))
            assign[i], load[j], rank[j] = j, load[j] + x, max(rank[j], r)
            tol[j] = new_tol[j]
        return assign

    return rule, float((problem.rates / np.array([ops[int(r)] for r in problem.ranks])).sum())


def _least_loaded_rule(problem: Instance, oracle: Oracle) -> tuple[Rule, float]:
    order = np.argsort(-problem.rates, kind="stable")

    def rule(g: int) -> np.ndarray:
        assign, load = np.empty(problem.n_adapters, np.int64), np.zeros(g)
        for i in order:
            j = int(np.argmin(load))
            assign[i], load[j] = j, load[j] + problem.rates[i]
        return assign

    return rule, 1.0


def _round_robin_rule(problem: Instance, oracle: Oracle) -> tuple[Rule, float]:
    return (lambda g: np.arange(problem.n_adapters) % g), 1.0


def _bins(assign: np.ndarray, g: int) -> list[np.ndarray]:
    return [b for b in (np.flatnonzero(assign == j) for j in range(g)) if b.size]


def search_gpu_count(problem: Instance, oracle: Oracle, rule: Rule, start: int, stop: Callable[[], bool]
                     ) -> list[np.ndarray] | None:
    """The bins of the smallest feasible GPU count found (galloping up from ``start``, then bisection)."""
    n = problem.n_adapters
    cache: dict[int, list[np.ndarray] | None] = {}

    def feasible(g: int) -> list[np.ndarray] | None:
        if g not in cache:
            bins = _bins(rule(g), g)
            cache[g] = bins if bool(oracle.feasible_many(problem, bins).all()) else None
        return cache[g]

    lo, g, step = max(1, start) - 1, max(1, min(start, n)), 1
    while feasible(g) is None:
        if stop() or g >= n:
            return None
        lo, g = g, min(n, g + step)
        step = step * 2 if g - start > 4 else 1
    hi = g
    while hi - lo > 1 and not stop():
        mid = (lo + hi) // 2
        if feasible(mid) is not None:
            hi = mid
        else:
            lo = mid
    return cache[hi]


def baseline_bins(problem: Instance, oracle: Oracle, name: str,
                  stop: Callable[[], bool]) -> list[np.ndarray] | None:
    """The bins of baseline ``name`` at its smallest feasible GPU count (None: none found in time)."""
    make_rule = RULES[name]
    rule, demand = make_rule(problem, oracle)
    return search_gpu_count(problem, oracle, rule, max(1, math.ceil(demand - 1e-9)), stop)


def _make_solver(name: str, make_rule: Callable[[Instance, Oracle], tuple[Rule, float]]
                 ) -> Callable[..., Result]:
    def solve(problem: Instance, *, time_limit: float, seed: int, oracle: Oracle) -> Result:
        start = time.perf_counter()
        bins = baseline_bins(problem, oracle, name, lambda: time.perf_counter() > start + time_limit)
        if bins is None:
            return Result(solver=name, status="timeout", num_gpus=0, lower_bound=0,
                          runtime_s=time.perf_counter() - start, gpus=(),
                          reason=f"no feasible GPU count found within {time_limit:g} s")
        verdicts = oracle.evaluate_many(problem, bins)
        gpus: list[GpuPlan] = [v.gpu_plan([problem.ids[i] for i in b]) for b, v in zip(bins, verdicts,
                                                                                          strict=True)]
        return Result(solver=name, status="feasible", num_gpus=len(gpus), lower_bound=1,
                      runtime_s=time.perf_counter() - start, gpus=tuple(gpus))

    solve.__name__ = solve.__qualname__ = f"solve_{name.replace('-', '_')}"
    solve.__doc__ = f"The ``{name}`` baseline (see :mod:`placer.heuristics.baselines`)."
    return solve


RULES: dict[str, Callable[[Instance, Oracle], tuple[Rule, float]]] = {
    "loraserve": _loraserve_rule, "dlora": _dlora_rule, "least-loaded": _least_loaded_rule,
    "round-robin": _round_robin_rule,
}
BASELINES: dict[str, Callable[..., Result]] = {
    "loraserve": _make_solver("loraserve", _loraserve_rule),
    "dlora": _make_solver("dlora", _dlora_rule),
    "least-loaded": _make_solver("least-loaded", _least_loaded_rule),
    "round-robin": _make_solver("round-robin", _round_robin_rule),
}
