"""Column generation on a :class:`~placer.exact.packing.PackingModel`: the Gilmore–Gomory (pattern) LP bound
and a
price-and-branch packing.

The pattern LP — min Σ_p λ_p subject to every item covered, over every *pattern* (a set of items some class
admits) — is far stronger than the LPs that only see loads and counts (items 54, 48, 39, 29, 25 with C = 100:
load LP 1.95, pattern LP 7/3, optimum 3); for classic bin packing its rounded-up optimum equals the integer
optimum on almost all instances. It is solved by column generation: a restricted master LP (GLOP) over the
patterns found so far, and a pricing problem per class — a knapsack with a load row and a count row over the
items of admitted kinds — solved by dynamic programming on *floored* weights (⌊w / q⌋ with capacities
⌊C / q⌋, a grid of :data:`GRID` steps): every real pattern stays feasible there, so the DP value bounds the
true pricing value from above.

The bound is Farley's: for the master duals π ≥ 0 and v ≥ the best pattern value Σ_{i∈p} π_i (the DP's),
π / v is dual feasible for the full pattern LP, so Σ π / v is a valid lower bound at every iteration, whatever
the LP tolerances, and it converges to the LP optimum. Patterns that only fit with floored weights are kept in
the master (it stays a relaxation) but never used in packings.

Packings (warm starts for the exact solvers): :func:`pattern_dive` fixes the patterns the LP likes best and
solves the LP again on the items left; :func:`pattern_packing` solves the master as an integer set cover over
the real patterns (CP-SAT, time-limited) and turns the cover into a packing (an item covered twice stays in
its first bin).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from placer.exact.packing import Packing, PackingModel, first_fit_decreasing, max_items_that_fit

GRID = 4000  # capacity steps of the pricing DP
MAX_DP_CELLS = 50_000_000  # items x counts x capacity steps; beyond this no pattern LP is attempted
MAX_ITERATIONS = 200
MIN_SOLVE_S = 0.1  # below this time limit no CP-SAT model is built (its start-up alone can take longer)
_TOL = 1e-9


@dataclass(frozen=True)
class PatternBound:
    """What column generation proved and found: the LP bound (Farley's, valid at every iteration), whether
    the LP converged, the patterns generated (item tuples) and which are real (admitted with real weights)."""

    bound: float
    lp_value: float
    converged: bool
    patterns: tuple[tuple[int, ...], ...]
    real: tuple[bool, ...]
    iterations: int
    runtime_s: float
    values: tuple[float, ...] = ()  # the patterns' values in the last master LP solved

    @property
    def best(self) -> int:
        """The bound as an integer number of bins."""
        return int(math.ceil(self.bound - 1e-6)) if self.bound > 0 else 0


class _Pricer:
    """Knapsack DP per group of classes that admit the same kinds: best pattern value with floored weights."""

    def __init__(self, model: PackingModel) -> None:
        cap, cnt, knd = model.class_arrays
        self.q = max(1, int(cap.max()) // GRID)
        self.wq = model.weights // self.q
        self.groups: list[tuple[np.ndarray, list[int]]] = []  # (admitted items, classes)
        for r in np.unique(knd):
            items = np.flatnonzero(model.kinds <= r)
            if items.size:
                self.groups.append((items, [int(k) for k in np.flatnonzero(knd == r)]))
        self.cap_q = cap // self.q
        self.cnt = np.array([min(int(c), max(1, max_items_that_fit(self.wq[model.kinds <= r], int(cq))))
                             for c, r, cq in zip(cnt, knd, self.cap_q, strict=True)])

    def price(self, pi: np.ndarray) -> tuple[float, list[tuple[int, ...]]]:
        """(an upper bound on the best pattern value under duals ``pi``, a best pattern per class group)."""
        best, found = 0.0, []
        for items, classes in self.groups:
            useful = items[pi[items] > _TOL]
            if not useful.size:
                continue
            g_max = int(self.cap_q[classes].max())
            n_max = int(self.cnt[classes].max())
            dp = np.full((n_max + 1, g_max + 1), -np.inf)
            dp[0, :] = 0.0
            keep = np.zeros((useful.size, n_max + 1, g_max + 1), dtype=bool)
            for t, i in enumerate(useful.tolist()):
                w = int(self.wq[i])
                if w > g_max:
                    continue
                cand = dp[:-1, :g_max + 1 - w] + pi[i]
                better = cand > dp[1:, w:]
                dp[1:, w:] = np.where(better, cand, dp[1:, w:])
                keep[t, 1:, w:] = better
            for k in classes:
                c_lim, g = int(self.cnt[k]), int(self.cap_q[k])
                col = dp[:c_lim + 1, g]
                c = int(np.argmax(col))
                val = float(col[c])
                if val > best:
                    best = val
                pattern = []
                for t in range(useful.size - 1, -1, -1):  # backtrack the DP decisions
                    if c > 0 and keep[t, c, g]:
                        pattern.append(int(useful[t]))
                        g -= int(self.wq[useful[t]])
                        c -= 1
                found.append(tuple(sorted(pattern)))
        return best, found


def pattern_bound(model: PackingModel, *, columns: Sequence[Sequence[int]] = (), time_limit: float = 10.0,
                  target: int | None = None) -> PatternBound:
    """The Gilmore–Gomory LP bound of ``model`` by column generation (stops early when the bound reaches
    ``target``, e.g. a known packing's bin count, or when time runs out: the bound is valid either way)."""
    from ortools.linear_solver import pywraplp

    t0 = time.perf_counter()
    n = model.n_items
    if n * (int(model.class_arrays[1].max()) + 1) * (GRID + 1) > MAX_DP_CELLS:  # too large: no bound
        return PatternBound(0.0, math.inf, False, (), (), 0, time.perf_counter() - t0)
    pricer = _Pricer(model)
    solver = pywraplp.Solver.CreateSolver("GLOP")
    rows = [solver.Constraint(1.0, solver.infinity()) for _ in range(n)]
    obj = solver.Objective()
    obj.SetMinimization()
    patterns: list[tuple[int, ...]] = []
    seen: set[tuple[int, ...]] = set()

    def add(p: Sequence[int]) -> bool:
        key = tuple(sorted(int(i) for i in p))
        if not key or key in seen:
            return False
        seen.add(key)
        v = solver.NumVar(0.0, solver.infinity(), "")
        obj.SetCoefficient(v, 1.0)
        for i in key:
            rows[i].SetCoefficient(v, 1.0)
        patterns.append(key)
        return True

    for i in range(n):
        add((i,))
    for p in columns:
        add(p)
    bound, lp_value, converged, it = 0.0, math.inf, False, 0
    values: list[float] = []
    while it < MAX_ITERATIONS and time.perf_counter() - t0 < time_limit:
        it += 1
        if solver.Solve() != pywraplp.Solver.OPTIMAL:
            break
        lp_value = obj.Value()
        values = [solver.variable(k).solution_value() for k in range(len(patterns))]
        pi = np.maximum(0.0, np.array([r.dual_value() for r in rows]))
        v, new = pricer.price(pi)
        if v > _TOL:
            bound = max(bound, float(pi.sum()) / v)
        added = [add(p) for p in new if sum(pi[list(p)]) > 1.0 + 1e-9]
        if v <= 1.0 + 1e-9 or not any(added):
            converged = v <= 1.0 + 1e-9
            break
        if target is not None and math.ceil(bound - 1e-6) >= target:
            break
    real = tuple(model.class_for(p) is not None for p in patterns)
    values += [0.0] * (len(patterns) - len(values))
    return PatternBound(bound, lp_value, converged, tuple(patterns), real, it, time.perf_counter() - t0,
                        tuple(values))


def pattern_dive(model: PackingModel, *, columns: Sequence[Sequence[int]] = (), time_limit: float = 10.0,
                 pool: set[tuple[int, ...]] | None = None) -> Packing | None:
    """A packing by diving on the pattern LP: solve it, fix the real patterns at value ≈ 1 (or else the one
    of largest value), solve it again on the items left (warm-started with the patterns restricted to them),
    until first-fit decreasing on the rest meets the rest's bound. None when time runs out first.

    ``pool``, if given, receives every real pattern generated on the way (as items of ``model``): columns for
    :func:`pattern_packing`."""
    t0 = time.perf_counter()
    left = np.arange(model.n_items)
    cols = [tuple(int(i) for i in c) for c in columns]
    bins: list[list[int]] = []
    while left.size:
        budget = time_limit - (time.perf_counter() - t0)
        if budget <= 0:
            return None
        pos = {int(i): k for k, i in enumerate(left)}
        sub = PackingModel(model.weights[left], model.kinds[left], model.classes, scale=model.scale)
        sub_cols = [tuple(pos[i] for i in c if i in pos) for c in cols]
        pb = pattern_bound(sub, columns=[c for c in sub_cols if c], time_limit=budget)
        if pool is not None:
            pool.update(tuple(int(left[i]) for i in p)
                        for p, ok in zip(pb.patterns, pb.real, strict=True) if ok)
        rest = first_fit_decreasing(sub)
        ranked = sorted((v, int(sub.weights[list(p)].sum()), p)
                        for p, ok, v in zip(pb.patterns, pb.real, pb.values, strict=True) if ok and v > 1e-6)
        if rest.num_bins <= pb.best or not ranked:
            bins += [[int(left[i]) for i in b] for b in rest.bins]
            break
        fixed: list[tuple[int, ...]] = [ranked[-1][2]]
        taken = set(fixed[0])
        for v, _, p in reversed(ranked[:-1]):
            if v >= 1.0 - 1e-6 and not taken & set(p):
                fixed.append(p)
                taken |= set(p)
        bins += [[int(left[i]) for i in p] for p in fixed]
        cols = [tuple(int(left[i]) for i in p) for p in pb.patterns]
        left = np.array([i for k, i in enumerate(left.tolist()) if k not in taken], dtype=np.int64)
    return Packing.from_bins(model, bins)


def pattern_packing(model: PackingModel, result: PatternBound, *, time_limit: float = 5.0, seed: int = 0,
                    cuts: Sequence[tuple[int, ...]] = (), hint: Packing | None = None,
                    extra: Sequence[tuple[int, ...]] = ()) -> Packing | None:
    """The best packing built from the real generated patterns and the ``extra`` ones (e.g. a dive's pool):
    an integer set cover by CP-SAT, hinted with ``hint``; None if they do not cover every item."""
    t0 = time.perf_counter()
    if time_limit < MIN_SOLVE_S:
        return None
    from ortools.sat.python import cp_model

    cut_sets = [set(c) for c in cuts]
    found = {p for p, ok in zip(result.patterns, result.real, strict=True) if ok}
    found |= {tuple(sorted(x)) for x in extra}
    if hint is not None:
        found |= {tuple(sorted(b)) for b in hint.bins}
    cols = sorted(p for p in found if not any(c <= set(p) for c in cut_sets))
    covered = {i for p in cols for i in p}
    if len(covered) < model.n_items:
        return None
    m = cp_model.CpModel()
    lam = [m.new_bool_var(f"p{k}") for k in range(len(cols))]
    by_item: list[list[int]] = [[] for _ in range(model.n_items)]
    for k, p in enumerate(cols):
        for i in p:
            by_item[i].append(k)
    for i in range(model.n_items):
        m.add_bool_or(lam[k] for k in by_item[i])
    m.add(sum(lam) >= max(1, result.best))
    m.minimize(sum(lam))
    if hint is not None:
        index = {p: k for k, p in enumerate(cols)}
        chosen = {index.get(tuple(sorted(b)), -1) for b in hint.bins}
        for k, v in enumerate(lam):
            m.add_hint(v, 1 if k in chosen else 0)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.01, float(time_limit) - (time.perf_counter() - t0))
    solver.parameters.num_workers = 2
    solver.parameters.random_seed = int(seed)
    solver.parameters.linearization_level = 2
    if solver.solve(m) not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    taken: set[int] = set()
    bins: list[list[int]] = []
    for k, v in enumerate(lam):
        if solver.value(v):
            b = [i for i in cols[k] if i not in taken]
            taken.update(b)
            if b:
                bins.append(b)
    return Packing.from_bins(model, bins)
