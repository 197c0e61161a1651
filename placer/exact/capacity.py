"""The linearised placement model: GPU configuration classes with token-rate capacities from the oracle.

Per-GPU capacity is not additive (it depends on the mix), so the exact solvers use a linearisation:

- an adapter's **load** is its offered token rate, ``rate_rps × tokens_per_request`` (the oracle's own
  :meth:`~placer.oracle.base.Oracle.tokens_per_request`: the twin's expected prompt + output tokens of the
  instance's length law);
- a GPU picks one **class** (max rank r, max adapter count n) and may hold at most n adapters, all of rank
  ≤ r, of total load ≤ C(r, n);
- **C(r, n)** is measured with the oracle on a *representative mix* of the problem's own adapters: n adapters
  taken at evenly spaced rate quantiles among those of rank ≤ r (repeated when there are fewer, one of them
  forced to rank r), their rates scaled by a common factor; C is the largest total load the oracle still
  calls feasible, found by a batched geometric bisection (relative precision ``rtol``, 1e-7).
  ``max_loras`` of the class is the oracle's best slot count at that point;
- counts n: :data:`SMALL_COUNTS` first (every count to 14, then steps of about ×1.1 to 64); then steps of
  ×:data:`COUNT_STEP` up to the largest count the oracle accepts at a light load (bisection), capped by the
  eligible adapters and by how many of the lightest ones fit twice the largest capacity seen on the small
  mixes. Classes with C = 0 are dropped, as are dominated classes (another class with r', n', C' all ≥).

Two class sets are kept: the *model* (above: a GPU of n adapters gets the capacity measured at the next
grid count ≥ n, conservative) which the exact solvers optimise, and a *relaxation* (a grid count gets the
over-estimate — the first infeasible load of the bisection — measured at that count, a count between two
grid points the over-estimate of the smaller one) on which lower bounds are computed
(:mod:`placer.exact.bounds`,
:mod:`placer.exact.benders`).

The model is exact w.r.t. itself, not w.r.t. the oracle: a GPU the model admits can still be rejected (mix
effects), so every exact plan goes back through the one evaluator. Models are cached per (problem, oracle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from placer.exact.packing import BinClass, PackingModel, max_items_that_fit
from placer.oracle.base import Oracle
from twin.errors import InfeasibleError
from twin.spec import Adapter, Instance

RESOLUTION = 1_000_000  # integer units of the largest class capacity
# About ×1.1 apart above 14 (they were up to ×1.25 apart: the relaxation gave a GPU of 19 adapters what 16
# carry, and the zipf bound at 100,000 adapters was 1,213 GPUs where this grid gives 1,217).
SMALL_COUNTS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18, 20, 22, 24, 26, 28, 31, 34, 37, 40,
                44, 48, 53, 58, 64)
LIGHT_COUNTS = (1, 4, 16, 64)
COUNT_STEP = 1.1  # beyond SMALL_COUNTS, measured counts grow by this factor (was 1.25: see count_points)


@dataclass(frozen=True, eq=False)
class LinearModel:
    """The packing model of a placement problem, plus what maps it back to tok/s and adapters."""

    packing: PackingModel
    loads_tok_s: np.ndarray
    tokens_per_request: float
    oracle: str
    oracle_calls: int
    relaxed: PackingModel | None = None  # optimistic capacities: what lower bounds use

    @property
    def bound_model(self) -> PackingModel:
        """The relaxation lower bounds are computed on (the model itself when there is none)."""
        return self.relaxed if self.relaxed is not None else self.packing

    @property
    def classes(self) -> tuple[BinClass, ...]:
        return self.packing.classes

    def describe(self) -> list[dict[str, Any]]:
        """The classes as rows (rank, adapters, capacity tok/s, max_loras)."""
        return [{"max_lora_rank": c.max_kind, "max_adapters": c.max_items,
                 "capacity_tok_s": round(c.capacity_tok_s, 1), "max_loras": c.max_loras}
                for c in self.classes]


def count_points(limit: int) -> list[int]:
    """Adapter counts at which capacities are measured, up to ``limit``: :data:`SMALL_COUNTS`, then steps of
    ×:data:`COUNT_STEP` (the capacity between two points is taken at the larger one in the model, at the
    smaller one in the relaxation: the finer the grid, the closer both are to the measured curve; with
    ×1.25 the relaxation gave a GPU of 124 adapters what 100 carry, and the zipf bound at 10,000 adapters
    was 120 GPUs where ×1.1 gives 122 and ×1.05 still 122)."""
    pts = {*SMALL_COUNTS, limit}
    p = float(SMALL_COUNTS[-1])
    while p * COUNT_STEP < limit:
        p *= COUNT_STEP
        pts.add(int(p))
    return sorted(x for x in pts if 1 <= x <= limit)


def _mix(problem: Instance, rank: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(ranks, relative rates) of the representative mix of n adapters with max rank ``rank``."""
    pool = np.flatnonzero(problem.ranks <= rank)
    pool = pool[np.argsort(problem.rates[pool], kind="stable")]
    pick = pool[np.round(np.linspace(0, len(pool) - 1, n)).astype(np.int64)] if n > 1 else pool[-1:]
    ranks = problem.ranks[pick].copy()
    rates = problem.rates[pick].astype(np.float64)
    if not (ranks == rank).any():
        ranks[int(np.argmax(rates))] = rank
    return ranks, rates / rates.sum()


class _Prober:
    """Judges many (mix, total load) probes with one batched oracle call on a synthetic instance."""

    def __init__(self, problem: Instance, oracle: Oracle) -> None:
        self.problem, self.oracle = problem, oracle
        self.tpr = oracle.tokens_per_request(problem)
        self.calls = 0

    def __call__(self, probes: list[tuple[tuple[np.ndarray, np.ndarray], float]]) -> list[tuple[bool, int]]:
        adapters: list[Adapter] = []
        sets = []
        for (ranks, rel), load in probes:
            rates = rel * (load / self.tpr)
            start = len(adapters)
            adapters.extend(Adapter.trusted(f"m{start + i}", int(r), float(max(x, 1e-12)))
                            for i, (r, x) in enumerate(zip(ranks.tolist(), rates.tolist(), strict=True)))
            sets.append(np.arange(start, len(adapters)))
        synth = self.problem.replace(name=f"{self.problem.name}#probe", adapters=tuple(adapters))
        self.calls += 1
        verdicts = self.oracle.evaluate_many(synth, sets)
        return [(v.feasible, int(v.best_max_loras or 1)) for v in verdicts]


def _capacities(prober: _Prober, mixes: list[tuple[np.ndarray, np.ndarray]], guesses: list[float],
                rtol: float) -> list[tuple[float, float, int]]:
    """Per mix: (largest feasible total load, smallest infeasible one seen, slots at the former), by a
    batched geometric search (the former is 0 when even a tiny load fails).

    Each round judges several loads per mix in one oracle call (more for small mixes, which are cheap):
    galloping by ×4 from the guess until a bracket is found, then geometric splits of the bracket. Mixes
    of more than 64 adapters stop at relative precision 1e-4 (costly to probe), smaller ones at ``rtol``.
    Galloping up, a round's loads are judged one step at a time (all galloping mixes in one call per step)
    and a mix stops at its first infeasible load: the larger ones could not change its bracket, and they are
    the costliest to judge (a twin run simulates load × window requests; the last of 7 steps is 4^7 × the
    feasible load: 9,000+ req/s, gigabytes of request arrays, for one adapter of a 40 req/s problem).
    """
    lo = [0.0] * len(mixes)
    hi = [math.inf] * len(mixes)
    slots = [0] * len(mixes)
    tol = [rtol if len(m[0]) <= 64 else max(rtol, 1e-4) for m in mixes]
    probes = [int(min(7, max(3, 1024 // len(m[0])))) for m in mixes]
    for _ in range(60):
        todo = [k for k in range(len(mixes)) if hi[k] > lo[k] * (1 + tol[k]) and hi[k] > guesses[k] * 1e-9]
        if not todo:
            break
        rounds: list[tuple[int, list[float], bool]] = []  # (mix, loads, galloping up: one step per call)
        for k in todo:
            p = probes[k]
            if math.isinf(hi[k]) and lo[k] == 0.0:  # first round: a ×4 window around the guess
                loads = [guesses[k] * 4.0 ** (i / (p - 1) - 0.75) for i in range(p)]
            elif math.isinf(hi[k]):  # gallop up
                loads = [lo[k] * 4.0 ** (i + 1) for i in range(p)]
            elif lo[k] == 0.0:  # gallop down
                loads = [hi[k] / 4.0 ** (i + 1) for i in range(p)]
            else:
                ratio = (hi[k] / lo[k]) ** (1.0 / (p + 1))
                loads = [lo[k] * ratio ** (i + 1) for i in range(p)]
            rounds.append((k, loads, math.isinf(hi[k]) and lo[k] > 0.0))
        for step in range(max(len(loads) for _, loads, _ in rounds)):
            batch: list[tuple[tuple[np.ndarray, np.ndarray], float]] = []
            owner: list[int] = []
            for k, loads, up in rounds:
                if up and step < len(loads) and math.isinf(hi[k]):  # until its first infeasible load
                    batch.append((mixes[k], loads[step]))
                    owner.append(k)
                elif not up and step == 0:
                    batch.extend((mixes[k], x) for x in loads)
                    owner.extend([k] * len(loads))
            if not batch:
                break
            for k, ((_, load), (ok, s)) in zip(owner, zip(batch, prober(batch), strict=True), strict=True):
                if ok and lo[k] < load < hi[k]:
                    lo[k], slots[k] = load, s
                elif not ok and load < hi[k]:
                    hi[k] = load
        for k in todo:  # keep the bracket consistent if the oracle is not monotone
            hi[k] = max(hi[k], lo[k])
    return [(lo[k], hi[k], slots[k]) for k in range(len(mixes))]


def _largest_count(prober: _Prober, problem: Instance, rank: int, limit: int, tiny: float) -> int:
    """Largest adapter count (≤ limit) the oracle accepts for the rank-r mix at a tiny load (bisection)."""
    if prober([(_mix(problem, rank, limit), tiny * limit)])[0][0]:
        return limit
    lo, hi = 0, limit
    while hi - lo > 1:
        cands = sorted({lo + max(1, (hi - lo) * i // 8) for i in range(1, 8)} - {hi})
        res = prober([(_mix(problem, rank, c), tiny * c) for c in cands])
        for c, (ok, _) in zip(cands, res, strict=True):
            if ok:
                lo = max(lo, c)
            else:
                hi = min(hi, c)
        if lo >= hi:
            hi = lo + 1
    return lo


def _dominance_filter(rows: list[tuple[int, int, float, int]]) -> list[tuple[int, int, float, int]]:
    """Drop classes another class beats on rank, count and capacity at once (ties: keep one)."""
    uniq = {row[:3]: row for row in rows}
    keep = [a for t, a in uniq.items()
            if not any(u != t and u[0] >= t[0] and u[1] >= t[1] and u[2] >= t[2] for u in uniq)]
    return sorted(keep, key=lambda c: (c[0], c[1]))


def _packing(weights: np.ndarray, problem: Instance, rows: list[tuple[int, int, float, int]],
             unit: float) -> PackingModel:
    kept = _dominance_filter(rows)
    classes = tuple(BinClass(capacity=int(round(c / unit)), max_items=n, max_kind=r, max_loras=s,
                             capacity_tok_s=c) for r, n, c, s in kept)
    return PackingModel(weights, problem.ranks, classes, scale=unit, names=problem.ids)


def build_linear_model(problem: Instance, oracle: Oracle | None = None, *, rtol: float = 1e-7,
                       light: bool = False) -> LinearModel:
    """The linearised model of ``problem`` under ``oracle`` (default: the surrogate oracle); cached.

    ``light``: only one class per rank, (r, largest count, the largest capacity measured on mixes of at most
    64 adapters, rounded up) — a relaxation of the full model when capacities do not grow beyond 64 adapters,
    cheap to build: what :func:`placer.exact.bounds.lower_bound` uses for an expensive oracle (the twin) or
    with ``light=True``.
    Raises :class:`InfeasibleError` naming an adapter that no class admits.
    """
    if oracle is None:
        from placer.oracle import make_oracle

        oracle = make_oracle(problem)
    memo = oracle.memo(problem)  # the model is a function of (problem, oracle): kept on the oracle
    key = ("linear-model", rtol, light)
    hit = memo.get(key)
    if hit is not None:
        return hit  # type: ignore[no-any-return]
    prober = _Prober(problem, oracle)
    loads = problem.rates * prober.tpr
    tiny = float(loads.min())  # per adapter: the count search probes mixes as light as the lightest adapter
    ranks = sorted(set(problem.ranks.tolist()))
    # Phase 1: small mixes (SMALL_COUNTS adapters), cheap to probe. Their largest capacity c_ref bounds
    # how many of the lightest adapters a GPU could ever hold (×2 margin: oracles need not be monotone).
    small = [(r, n) for r in ranks for n in (LIGHT_COUNTS if light else SMALL_COUNTS)
             if n <= int((problem.ranks <= r).sum())]
    first = _capacities(prober, [_mix(problem, r, n) for r, n in small],
                        [max(float(loads.max()), float(loads.mean()) * n) for _, n in small],
                        max(rtol, 1e-2) if light else rtol)
    rows: list[tuple[int, int, float, int, float]] = []  # (rank, count, capacity, slots, over-estimate)
    specs: list[tuple[int, int]] = []
    guesses: list[float] = []
    for r in ranks:
        got = [(n, lo, hi, s) for (rr, n), (lo, hi, s) in zip(small, first, strict=True) if rr == r]
        c_ref = max(lo for _, lo, _, _ in got)
        if c_ref <= 0:
            continue
        eligible = loads[problem.ranks <= r]
        limit = max_items_that_fit(np.round(eligible / c_ref * 1e9), int(2e9))
        top = _largest_count(prober, problem, r, min(len(eligible), limit), tiny) if limit > 1 else 1
        top = max(top, max(n for n, lo, _, _ in got if lo > 0))  # the small mixes are evidence too
        if light:  # relaxation: the largest count, and an over-estimate of every capacity measured
            hi_max = max(min(hi, 4 * c_ref) for _, _, hi, _ in got)
            rows.append((r, max(1, top), hi_max, 0, hi_max))
            continue
        rows += [(r, n, lo, s, hi) for n, lo, hi, s in got if lo > 0 and n <= top]
        more = [n for n in count_points(top) if n not in SMALL_COUNTS]
        specs += [(r, n) for n in more]
        guesses += [c_ref] * len(more)
    caps = _capacities(prober, [_mix(problem, r, n) for r, n in specs], guesses, rtol)
    rows += [(r, n, c, s, hi) for (r, n), (c, hi, s) in zip(specs, caps, strict=True) if c > 0]
    if not rows:
        raise InfeasibleError("no GPU configuration carries any load under this oracle")
    # Conservative classes: count n at the capacity measured at n. Relaxed classes (for lower bounds): a grid
    # count n at its own over-estimate (the first infeasible load), and the counts strictly between two grid
    # points p < n (class n − 1) at the over-estimate of p: a GPU with such a count carries at most what p
    # adapters carry.
    rows.sort()
    relaxed_rows: list[tuple[int, int, float, int]] = []
    prev: dict[int, tuple[int, float]] = {}
    for r, n, lo, s, hi in rows:
        over = hi if math.isfinite(hi) else lo
        p_n, p_over = prev.get(r, (n - 1, 0.0))
        if p_n < n - 1:
            relaxed_rows.append((r, n - 1, p_over, s))
        relaxed_rows.append((r, n, over, s))
        prev[r] = (n, over)
    unit = max(c for _, _, c, _, _ in rows) / RESOLUTION
    # Rounded to the nearest unit (1e-6 of the largest capacity): a GPU filled exactly to a capacity the
    # bisection approached from below still fits; the evaluator re-checks every GPU anyway.
    weights = np.maximum(1, np.round(loads / unit)).astype(np.int64)
    packing = _packing(weights, problem, [(r, n, c, s) for r, n, c, s, _ in rows], unit)
    relaxed = _packing(weights, problem, relaxed_rows, unit)
    bad = packing.unpackable_items()
    if bad:
        a = problem.adapters[bad[0]]
        raise InfeasibleError(f"adapter {a.id!r} (rank {a.rank}, {a.rate_rps:g} req/s, {loads[bad[0]]:.0f} "
                              f"tok/s) fits in no GPU class of the linear model"
                              + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
    model = LinearModel(packing, loads, prober.tpr, oracle.name, prober.calls, relaxed)
    memo[key] = model
    return model
