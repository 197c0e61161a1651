"""Lower bounds on the number of bins (GPUs) of a :class:`~placer.exact.packing.PackingModel`.

All bounds are with respect to the linearised model (:mod:`placer.exact.capacity`): a GPU of class k carries
at most
``capacity`` token load, ``max_items`` adapters and ranks up to ``max_kind``.

- ``l1``: continuous bound, total weight / largest capacity (rounded up);
- ``count``: number of items / largest count limit;
- ``l2``: Martello–Toth L2 on the weight dimension (bins relaxed to the largest capacity);
- each of these is also taken per rank threshold ρ: the items of rank ≥ ρ can only use classes with
  ``max_kind`` ≥ ρ, so their own L1/count/L2 with those classes' limits is a bound too;
- ``lp``: an LP relaxation aggregated per rank (counts and loads per class, tied by the envelopes of each
  rank's weights), solved with GLOP: tiny whatever the number of items;
- the pattern (Gilmore–Gomory) LP bound, much stronger on small problems, is :mod:`placer.exact.colgen`.

The pure-numpy bounds run in O(n log n): 10,000 items take a few milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from placer.exact.packing import PackingModel, max_items_that_fit

_EPS = 1e-9
TANGENTS = 16  # tangent lines per weight envelope in the LP bound (more: slower, hardly stronger)


def l1_bound(weights: np.ndarray, capacity: int) -> int:
    """ceil(Σ w / capacity)."""
    return int(math.ceil(float(np.sum(weights, dtype=np.float64)) / capacity - _EPS)) if len(weights) else 0


def count_bound(n_items: int, max_items: int) -> int:
    """ceil(n / max items per bin)."""
    return -(-n_items // max_items) if n_items else 0


def l2_bound(weights: np.ndarray, capacity: int) -> int:
    """Martello–Toth L2 for 1-D bin packing with bin capacity ``capacity`` (all weights ≤ capacity).

    L(α) = |J1| + |J2| + max(0, ⌈(Σ_{J3} w − (|J2|·C − Σ_{J2} w)) / C⌉) with J1 = {w > C − α},
    J2 = {C − α ≥ w > C/2}, J3 = {C/2 ≥ w ≥ α}; L2 = max over α ∈ {0} ∪ {w ≤ C/2}. Vectorised over α.
    """
    w = np.sort(np.asarray(weights, dtype=np.int64))
    n = w.size
    if n == 0:
        return 0
    c = int(capacity)
    prefix = np.concatenate(([0], np.cumsum(w, dtype=np.int64)))
    half_hi = np.searchsorted(w, c / 2, side="right")  # w[:half_hi] ≤ C/2
    alphas = np.unique(np.concatenate(([0], w[:half_hi])))
    j1_lo = np.searchsorted(w, c - alphas, side="right")  # J1 = w[j1_lo:]
    n1 = n - j1_lo
    n2 = j1_lo - half_hi
    s2 = prefix[j1_lo] - prefix[half_hi]
    j3_lo = np.searchsorted(w, alphas, side="left")
    s3 = prefix[half_hi] - prefix[j3_lo]
    rest = s3 - (n2 * c - s2)
    extra = np.where(rest > 0, -(-rest // c), 0)
    return int((n1 + n2 + extra).max())


@dataclass(frozen=True)
class BoundReport:
    """Every bound computed for one model, and the best of them."""

    l1: int
    count: int
    l2: int
    lp: float | None
    best: int

    def to_dict(self) -> dict[str, Any]:
        return {"l1": self.l1, "count": self.count, "l2": self.l2, "lp": self.lp, "best": self.best}


def _combinatorial(model: PackingModel) -> tuple[int, int, int]:
    cap, cnt, knd = model.class_arrays
    w, kinds = model.weights, model.kinds
    best_l1 = best_cnt = best_l2 = 0
    for rho in np.unique(kinds):
        items = kinds >= rho
        usable = knd >= rho
        if not usable.any():
            return (10**9,) * 3  # an item fits nowhere: no finite packing
        c_max = int(cap[usable].max())
        wr = w[items]
        n_max = min(int(cnt[usable].max()), max_items_that_fit(wr, c_max))
        best_l1 = max(best_l1, l1_bound(wr, c_max))
        best_cnt = max(best_cnt, count_bound(int(items.sum()), max(n_max, 1)))
        if wr.max() <= c_max:
            best_l2 = max(best_l2, l2_bound(wr, c_max))
    return best_l1, best_cnt, best_l2


def _tangents(n: int) -> list[int]:
    """Breakpoints m where a kind of n items gets tangent lines on its weight envelopes (all when few)."""
    if n <= TANGENTS:
        return list(range(n))
    return sorted({int(x) for x in np.round(np.linspace(0, n - 1, TANGENTS))})


def lp_bound(model: PackingModel) -> float | None:
    """Optimum of an LP relaxation aggregated per kind; None if the LP solver is unavailable or fails.

    Per kind g and class k: how many items ``n_gk`` and how much weight ``W_gk`` go to bins of class k, with
    Σ_k n_gk = n_g, Σ_k W_gk = W_g; per class, Σ_g W_gk ≤ C_k·u_k and Σ_g n_gk ≤ N_k·u_k (N_k: at most the
    lightest admissible items that fit); minimise Σ_k u_k. The items of one kind are *not* interchangeable
    (a class with a high capacity and a low count limit takes the heavy ones), so ``W_gk`` is only tied to
    ``n_gk`` by the envelopes of the kind's weights: between the sum of the n_gk lightest and of the n_gk
    heaviest items (tangent lines of these convex / concave piecewise-linear functions at up to
    :data:`TANGENTS` points). Every packing satisfies these rows, so the optimum is a valid bound. Tiny
    whatever the number of items. (A proportional split, W_gk = W_g·n_gk/n_g, is *not* a relaxation: it
    over-estimated.)
    """
    from ortools.linear_solver import pywraplp  # a required dependency: missing is an import error

    cap, cnt, knd = model.class_arrays
    kinds, w = model.kinds, model.weights
    solver = pywraplp.Solver.CreateSolver("GLOP")
    if solver is None:  # pragma: no cover
        return None
    inf = solver.infinity()
    eff_cnt = [min(int(cnt[k]), max(1, max_items_that_fit(w[kinds <= knd[k]], int(cap[k]))))
               for k in range(len(cap))]
    u = [solver.NumVar(0, inf, f"u{k}") for k in range(len(cap))]
    load_terms: list[list[Any]] = [[] for _ in cap]
    count_terms: list[list[Any]] = [[] for _ in cap]
    for g in np.unique(kinds):
        wg = np.sort(w[kinds == g]).astype(np.float64)
        ng = wg.size
        light = np.concatenate(([0.0], np.cumsum(wg)))  # sum of the m lightest
        heavy = np.concatenate(([0.0], np.cumsum(wg[::-1])))  # sum of the m heaviest
        ks = [k for k in range(len(cap)) if knd[k] >= g]
        if not ks:
            return None
        nv = [solver.NumVar(0, ng, f"n{g}_{k}") for k in ks]
        wv = [solver.NumVar(0, float(heavy[-1]), f"w{g}_{k}") for k in ks]
        solver.Add(sum(nv) == ng)
        solver.Add(sum(wv) == float(heavy[-1]))
        for k, n_k, w_k in zip(ks, nv, wv, strict=True):
            for m in _tangents(ng):  # W ≥ light(m) + w_(m+1)·(n − m); W ≤ heavy(m) + w'_(m+1)·(n − m)
                solver.Add(w_k >= float(light[m]) + float(wg[m]) * (n_k - m))
                solver.Add(w_k <= float(heavy[m]) + float(wg[ng - 1 - m]) * (n_k - m))
            load_terms[k].append(w_k)
            count_terms[k].append(n_k)
    for k in range(len(cap)):
        if load_terms[k]:
            solver.Add(sum(load_terms[k]) <= float(cap[k]) * u[k])
            solver.Add(sum(count_terms[k]) <= float(eff_cnt[k]) * u[k])
    solver.Minimize(sum(u))
    if solver.Solve() != pywraplp.Solver.OPTIMAL:
        return None
    return float(solver.Objective().Value())


def model_bounds(model: PackingModel, *, lp: bool = True) -> BoundReport:
    """All bounds of a packing model; ``best`` is the largest (an integer lower bound on the bin count)."""
    l1, cnt, l2 = _combinatorial(model)
    lpv = lp_bound(model) if lp else None
    best = max(l1, cnt, l2, int(math.ceil(lpv - 1e-6)) if lpv is not None else 0)
    return BoundReport(l1=l1, count=cnt, l2=l2, lp=lpv, best=best)


FULL_MODEL_MAX_ADAPTERS = 2_000  # above this, lower_bound() uses the light model (unless told otherwise)


def lower_bound(problem: Any, oracle: Any = None, *, light: bool | None = None) -> int:
    """A lower bound on the GPUs of ``problem`` under the linearised model built from ``oracle``.

    The same bound the exact solvers start from (:func:`model_bounds` of the full model's relaxation, kept on
    the oracle), so every solver reports the same bound for one instance: a few seconds of surrogate calls
    for 2,000 adapters. Above :data:`FULL_MODEL_MAX_ADAPTERS` adapters, for an ``expensive`` oracle (the twin:
    one simulation per prediction; the full model judges 5,000+ configurations on 48 adapters, the light one
    a few hundred), or with ``light=True``, the light one-class-per-rank relaxation instead (weaker). The
    choice depends on the problem's size and the oracle's kind alone, never on what ran before. Raises
    :class:`twin.errors.InfeasibleError` when an adapter fits on no GPU.
    """
    from placer.exact.capacity import build_linear_model

    if light is None:
        light = problem.n_adapters > FULL_MODEL_MAX_ADAPTERS or bool(getattr(oracle, "expensive", False))
    return model_bounds(build_linear_model(problem, oracle, light=light).bound_model).best
