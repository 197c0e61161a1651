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
- ``assign``: the assignment LP on weight buckets (:func:`assignment_bound`): how many items of each
  (rank, weight bucket) go to bins of each class, the bucket's total weight conserved: much stronger than
  ``lp`` when the classes trade capacity for count, and small whatever the number of items;
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
BUCKET_RATIO = 1.2  # weight buckets of the assignment LP: heaviest / lightest of a bucket < this
LP_ROUNDING = 1e-4  # an LP bound v counts as ceil(v - this) bins: GLOP's tolerances cannot add a bin


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
    assign: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"l1": self.l1, "count": self.count, "l2": self.l2, "lp": self.lp, "assign": self.assign,
                "best": self.best}


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


def count_limits(model: PackingModel) -> list[int]:
    """Per class: its count limit, cut to how many of the lightest items it admits fit its capacity (≥ 1)."""
    cap, cnt, knd = model.class_arrays
    prefix = {int(r): np.cumsum(np.sort(model.weights[model.kinds <= r])) for r in np.unique(knd)}
    return [min(int(n), max(1, int(np.searchsorted(prefix[int(r)], int(c), side="right"))))
            for c, n, r in zip(cap, cnt, knd, strict=True)]


def _class_lp(model: PackingModel) -> tuple[Any, list[Any], list[int]] | None:
    """A GLOP solver with one bin-count variable u_k ≥ 0 per class, and the classes' :func:`count_limits`
    (None when GLOP is unavailable)."""
    from ortools.linear_solver import pywraplp  # a required dependency: missing is an import error

    solver = pywraplp.Solver.CreateSolver("GLOP")
    if solver is None:  # pragma: no cover
        return None
    u = [solver.NumVar(0, solver.infinity(), f"u{k}") for k in range(len(model.classes))]
    return solver, u, count_limits(model)


def _minimise_bins(solver: Any, u: list[Any]) -> float | None:
    """The LP optimum of Σ u_k, or None when GLOP does not prove one."""
    from ortools.linear_solver import pywraplp

    solver.Minimize(sum(u))
    if solver.Solve() != pywraplp.Solver.OPTIMAL:
        return None
    return float(solver.Objective().Value())


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
    cap, _, knd = model.class_arrays
    kinds, w = model.kinds, model.weights
    lp = _class_lp(model)
    if lp is None:  # pragma: no cover
        return None
    solver, u, eff_cnt = lp
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
    return _minimise_bins(solver, u)


def weight_buckets(weights: np.ndarray, kinds: np.ndarray,
                   ratio: float = BUCKET_RATIO) -> list[tuple[int, int, int, int, int]]:
    """The items grouped per kind into weight buckets: (kind, lightest, heaviest, count, total weight) each.

    Inside a kind, sorted by weight, a bucket starts at an item of weight w₀ and takes every item lighter than
    w₀ · ``ratio``; a function of the weights and kinds alone (deterministic)."""
    out: list[tuple[int, int, int, int, int]] = []
    w = np.asarray(weights, dtype=np.int64)
    k = np.asarray(kinds, dtype=np.int64)
    for g in np.unique(k):
        wg = np.sort(w[k == g])
        pos = 0
        while pos < wg.size:
            end = int(np.searchsorted(wg, wg[pos] * ratio, side="left"))
            end = max(end, pos + 1)
            out.append((int(g), int(wg[pos]), int(wg[end - 1]), end - pos, int(wg[pos:end].sum())))
            pos = end
    return out


def assignment_bound(model: PackingModel, *, ratio: float = BUCKET_RATIO) -> float | None:
    """Optimum of the assignment LP on weight buckets; None if the LP solver fails.

    Items are grouped into buckets j (one kind g_j, weights in [L_j, U_j], d_j items of total weight W_j:
    :func:`weight_buckets`). Variables: u_k ≥ 0 bins of class k; x_jk ≥ 0 items of bucket j in bins of
    class k, of total weight y_jk, for the classes that admit kind g_j and weight L_j. Rows:

    - Σ_k x_jk = d_j and Σ_k y_jk = W_j (every item placed once, its weight with it);
    - L_j·x_jk ≤ y_jk ≤ U_j·x_jk (the items of a bucket weigh between its lightest and heaviest);
    - Σ_j y_jk ≤ C_k·u_k and Σ_j x_jk ≤ N_k·u_k, with N_k the class's count limit, cut to how many of
      the lightest admitted items fit its capacity.

    Minimise Σ_k u_k. **Validity**: take any packing and give each bin the first class that admits it; let
    u_k be the number of bins of class k, x_jk the number of bucket-j items in them and y_jk their weight.
    Every row holds (a bin of class k holds at most C_k weight and N_k items, all of kinds ≤ its rank, and
    a class admits no item heavier than C_k), so Σ u_k — the bin count — is at least the LP optimum: the LP
    optimum, rounded up, is a lower bound on every packing, whatever the buckets. It equals the pattern
    (Gilmore–Gomory) LP with the pricing knapsack relaxed to its LP when the buckets are single weights, and
    is close to it when items are small against capacities (a GPU's heaviest adapter is a small share of
    what it carries). Size: buckets × classes, whatever the number of items (``ratio`` 1.2: a few hundred
    buckets for weights spanning 1:100).
    """
    cap, _, knd = model.class_arrays
    lp = _class_lp(model)
    if lp is None:  # pragma: no cover
        return None
    solver, u, eff_cnt = lp
    inf = solver.infinity()
    load = [solver.Constraint(-inf, 0.0) for _ in cap]  # Σ_j y_jk / C_k − u_k ≤ 0 (scaled rows)
    count = [solver.Constraint(-inf, 0.0) for _ in cap]  # Σ_j x_jk / N_k − u_k ≤ 0
    for k in range(len(cap)):
        load[k].SetCoefficient(u[k], -1.0)
        count[k].SetCoefficient(u[k], -1.0)
    for g, lo, hi, d, total in weight_buckets(model.weights, model.kinds, ratio):
        ks = [k for k in range(len(cap)) if knd[k] >= g and cap[k] >= lo]
        if not ks:
            return None  # an item fits in no class: no packing (callers check feasibility first)
        placed = solver.Constraint(float(d), float(d))
        weighed = solver.Constraint(total / hi, total / hi)  # weights in units of the bucket's heaviest
        for k in ks:
            x = solver.NumVar(0.0, inf, "")
            y = solver.NumVar(0.0, inf, "")  # y_jk / U_j
            placed.SetCoefficient(x, 1.0)
            weighed.SetCoefficient(y, 1.0)
            light = solver.Constraint(0.0, inf)  # y − (L/U)·x ≥ 0
            light.SetCoefficient(y, 1.0)
            light.SetCoefficient(x, -lo / hi)
            heavy = solver.Constraint(0.0, inf)  # x − y ≥ 0
            heavy.SetCoefficient(x, 1.0)
            heavy.SetCoefficient(y, -1.0)
            load[k].SetCoefficient(y, hi / float(cap[k]))
            count[k].SetCoefficient(x, 1.0 / eff_cnt[k])
    return _minimise_bins(solver, u)


def _lp_bins(value: float | None) -> int:
    return int(math.ceil(value - LP_ROUNDING)) if value is not None else 0


def model_bounds(model: PackingModel, *, lp: bool = True) -> BoundReport:
    """All bounds of a packing model; ``best`` is the largest (an integer lower bound on the bin count)."""
    l1, cnt, l2 = _combinatorial(model)
    lpv = lp_bound(model) if lp else None
    assign = assignment_bound(model) if lp else None
    best = max(l1, cnt, l2, _lp_bins(lpv), _lp_bins(assign))
    return BoundReport(l1=l1, count=cnt, l2=l2, lp=lpv, best=best, assign=assign)


def lower_bound(problem: Any, oracle: Any = None, *, light: bool | None = None) -> int:
    """A lower bound on the GPUs of ``problem`` under the linearised model built from ``oracle``.

    The same bound the exact solvers start from (:func:`model_bounds` of the full model's relaxation, kept on
    the oracle), so every solver reports the same bound for one instance, at any size: the model's probes
    are mixes of at most a few hundred adapters whatever the problem's size, and the assignment LP has
    buckets × classes variables (zipf instances with the shipped surrogates,
    ``bench/results/slo_scale-2026-12-05-bound.md``: 7 s at 10,000 adapters and 13 s at 100,000, wall time
    on the shared 2-core machine at a load of 10, most of it building the model). For an ``expensive``
    oracle (the twin: one simulation per prediction; the full model judges 5,000+ configurations on 48
    adapters, the light one a few hundred), or with ``light=True``, the light one-class-per-rank relaxation
    instead (much weaker). The choice depends on the oracle's kind alone, never on what ran before. Raises
    :class:`twin.errors.InfeasibleError` when an adapter fits on no GPU.
    """
    from placer.exact.capacity import build_linear_model

    if light is None:
        light = bool(getattr(oracle, "expensive", False))
    return model_bounds(build_linear_model(problem, oracle, light=light).bound_model).best
