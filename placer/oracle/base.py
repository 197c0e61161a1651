"""The feasibility oracle: can this set of adapters share one GPU, and with which vLLM LoRA settings?

*Feasible* means the problem's criterion (:class:`twin.spec.Slo`, ``problem.slo``) is met and there is no
memory error: under ``criterion: slo`` the served fraction and every latency bound in force (the backend's
latency predictions, or the twin's censored percentiles), under ``criterion: paper`` the papers' rule alone
(not starved). Where the text below says "starved", read "fails the criterion".

One interface, :class:`Oracle`, answers for a set of adapters (indices into the problem) on one GPU:
:meth:`Oracle.evaluate` → :class:`GpuVerdict` (feasible, best ``max_loras``, ``max_lora_rank``, predicted
throughput, offered load, starvation probability, OOM, reason). *Feasible* = neither starved nor OOM at the
best slot count; the best slot count is the one with the highest predicted throughput among the non-OOM,
non-starved candidates (within 1 % of the highest, the one with the lowest starvation probability): the
papers' test points {8, 16, ..., 576} up to the adapter count, the adapter count itself, and the largest
slot count memory allows at the set's rank.

The memory rule (OOM) is the twin's exact :class:`~twin.profile.MemoryModel` (:mod:`placer.problem.memory`),
never
learned. Starvation is the backend's: the CatBoost surrogates (:class:`SurrogateOracle`, default, batched) or
the twin itself (:class:`TwinOracle`, slow, exact w.r.t. the twin). A point is starved when the backend says
so or its starvation probability exceeds ``starved_threshold`` (the surrogate:
:data:`DEFAULT_SURROGATE_THRESHOLD` = 0.2 unless one is given; None = the classifier's own 0.5, the papers'
rule). An optional safety ``margin`` makes every backend stricter: the
predicted throughput must also reach ``(0.9 + margin) × offered``; a load ``headroom`` h judges every GPU at
(1 + h) × its request rates (the surrogate's default: :data:`DEFAULT_HEADROOM`). Answers
are cached by (problem, adapter set, settings); the oracle's own settings are part of its :attr:`Oracle.name`.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from placer.context import DEFAULT_CONTEXT, Context
from placer.problem.memory import max_slots, memory_fits, tokens_per_request
from placer.result import GpuPlan
from twin.errors import InputError
from twin.profile import Profile
from twin.spec import Adapter, Instance

PAPER_TEST_POINTS: tuple[int, ...] = (8, 16, 32, 64, 96, 128, 160, 192, 256, 320, 384, 448, 512, 576)
STARVATION_RATIO = 0.9  # starved <=> throughput < 0.9 x offered (mission.md)
DEFAULT_HEADROOM = 0.10  # the surrogate oracle's default load headroom (bench/placement.md)
DEFAULT_SURROGATE_THRESHOLD = 0.2  # the surrogate oracle: starved when p(starved) > 0.2 (bench/placement.md)
SLOT_TIE = 0.01  # slot counts whose predicted throughput is within 1 % of the best count as ties
_MAX_CACHED_PROBLEMS = 32


@dataclass(frozen=True)
class Point:
    """One configuration of one GPU (adapter set + LoRA settings) as the oracle judges it."""

    max_loras: int
    max_lora_rank: int
    max_cpu_loras: int
    throughput_tok_s: float
    offered_tok_s: float
    starved_probability: float
    starved: bool  # fails the criterion: backend flag, probability threshold, margin, latency bounds
    oom: bool
    slo_ratio: float = 0.0  # worst predicted latency / its bound over the bounds in force (> 1: fails)

    @property
    def feasible(self) -> bool:
        return not self.starved and not self.oom


@dataclass(frozen=True)
class GpuVerdict:
    """The oracle's answer for one GPU: feasibility at the best slot count, and that slot count."""

    feasible: bool
    best_max_loras: int | None
    max_lora_rank: int
    max_cpu_loras: int
    throughput_tok_s: float
    offered_tok_s: float
    starved_probability: float
    oom: bool
    reason: str = ""

    def gpu_plan(self, adapter_ids: Sequence[str]) -> GpuPlan:
        """This verdict's settings as one GPU of a plan."""
        return GpuPlan(adapters=tuple(adapter_ids), max_loras=int(self.best_max_loras or 1),
                       max_cpu_loras=self.max_cpu_loras, max_lora_rank=self.max_lora_rank,
                       predicted_throughput_tok_s=round(float(self.throughput_tok_s), 3),
                       predicted_starved_probability=round(float(self.starved_probability), 4),
                       offered_tok_s=round(float(self.offered_tok_s), 3))


Query = tuple[np.ndarray, int, int, int]  # (sorted adapter indices, max_loras, max_lora_rank, max_cpu_loras)


def canonical(idx: Iterable[int] | np.ndarray) -> np.ndarray:
    """Adapter indices as a sorted, duplicate-free int64 array (fast path for arrays that already are)."""
    a = np.sort(np.asarray(idx if isinstance(idx, np.ndarray) else list(idx), dtype=np.int64))
    if a.size > 1 and not (a[1:] != a[:-1]).all():
        a = np.unique(a)
    return a


def _digest(idx: np.ndarray) -> bytes:
    """A compact cache key for a sorted, duplicate-free index array (128-bit BLAKE2b)."""
    return hashlib.blake2b(np.ascontiguousarray(idx, dtype=np.int64).tobytes(), digest_size=16).digest()


class Oracle(abc.ABC):
    """Feasibility of one GPU for a set of adapters. Subclasses implement :meth:`_predict` (batched)."""

    kind = "abstract"
    expensive = False  # True: each prediction is a simulation (~0.1 s) and bounds probe it sparingly

    def __init__(self, *, margin: float | None = None, starved_threshold: float | None = None,
                 headroom: float = 0.0, slot_points: Sequence[int] = PAPER_TEST_POINTS,
                 cache: bool = True, context: Context | None = None) -> None:
        if not 0 <= headroom <= 1:
            raise InputError(f"load headroom must be in [0, 1] (got {headroom!r})", field="headroom",
                             value=headroom)
        self.headroom = float(headroom)
        if margin is not None and not -0.1 <= margin <= 0.1:
            raise InputError(f"safety margin must be in [-0.1, 0.1] (got {margin!r})", field="margin",
                             value=margin)
        if starved_threshold is not None and not 0 < starved_threshold <= 1:
            raise InputError(f"starvation threshold must be in (0, 1] (got {starved_threshold!r})",
                             field="starved_threshold", value=starved_threshold)
        self.margin = None if margin is None else float(margin)
        self.starved_threshold = None if starved_threshold is None else float(starved_threshold)
        self.slot_points = tuple(sorted({int(s) for s in slot_points if int(s) >= 1}))
        self.use_cache = cache
        #: The twin profile and surrogate models this oracle judges with (default: the shipped ones).
        self.context = context if context is not None else DEFAULT_CONTEXT
        self._caches: dict[int, tuple[Instance, dict[Any, Any], float, Profile]] = {}
        self.calls = 0       # backend batch calls
        self.predictions = 0  # configurations sent to the backend

    # --- what subclasses provide -----------------------------------------------------------------------
    @abc.abstractmethod
    def _predict(self, problem: Instance, queries: Sequence[Query]) -> tuple[Any, ...]:
        """(throughput tok/s, starvation probability, starved flag, offered tok/s or None) per query, and
        optionally a 5th array: the worst latency / bound ratio under ``problem.slo`` (> 1 fails; a backend
        that cannot judge the problem's latency bounds must raise, never ignore them)."""

    def _settings(self) -> tuple[Any, ...]:
        return ()

    def threshold(self, problem: Instance) -> float:
        """Starvation probability above which a point is starved (default 0.5)."""
        return 0.5 if self.starved_threshold is None else self.starved_threshold

    # --- identity ---------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        thr = "default" if self.starved_threshold is None else f"{self.starved_threshold:g}"
        parts = [f"p_starved<={thr}"]
        if self.margin is not None:
            parts.append(f"margin={self.margin:g}")
        if self.headroom:
            parts.append(f"headroom={self.headroom:g}")
        parts += [f"{k}={v}" for k, v in self._settings()]
        return f"{self.kind}({','.join(parts)})"

    def settings_key(self) -> tuple[Any, ...]:
        return (self.kind, self.margin, self.starved_threshold, self.headroom, self.slot_points,
                *self._settings())

    # --- per-problem state ------------------------------------------------------------------------------
    def _state(self, problem: Instance) -> tuple[dict[Any, Any], float, Profile]:
        entry = self._caches.get(id(problem))
        if entry is None or entry[0] is not problem:
            if len(self._caches) >= _MAX_CACHED_PROBLEMS:
                self._caches.pop(next(iter(self._caches)))
            profile = self.context.profile_for(problem)
            entry = (problem, {}, tokens_per_request(problem, profile), profile)
            self._caches[id(problem)] = entry
        return entry[1], entry[2], entry[3]

    def profile(self, problem: Instance) -> Profile:
        """The twin profile of the problem's (model, GPU) in this oracle's context."""
        return self._state(problem)[2]

    def _stressed(self, problem: Instance) -> Instance:
        """The problem the backend sees: every rate × (1 + headroom) (the problem itself when 0)."""
        if not self.headroom:
            return problem
        memo = self.memo(problem)
        if ("stressed",) not in memo:
            grow = 1.0 + self.headroom
            memo[("stressed",)] = problem.replace(adapters=tuple(
                Adapter.trusted(a.id, a.rank, a.rate_rps * grow) for a in problem.adapters))
        stressed: Instance = memo[("stressed",)]
        return stressed

    def memo(self, problem: Instance) -> dict[Any, Any]:
        """A per-problem dict (dropped with the oracle's cache) where solvers keep values derived from this
        oracle, e.g. operating points."""
        return self._state(problem)[0]

    def tokens_per_request(self, problem: Instance) -> float:
        """Mean prompt + expected output tokens per request of this problem."""
        return self._state(problem)[1]

    def offered_tok_s(self, problem: Instance, idx: Iterable[int]) -> float:
        """Offered load of a set of adapters (rate × tokens per request), tok/s."""
        return float(problem.rates[canonical(idx)].sum()) * self.tokens_per_request(problem)

    # --- points: one configuration each -----------------------------------------------------------------
    def points(self, problem: Instance, queries: Sequence[tuple[Iterable[int], int, int | None, int | None]]
               ) -> list[Point]:
        """Judge configurations ``(adapters, max_loras, max_lora_rank, max_cpu_loras)`` in one batch.

        ``max_lora_rank`` None = the largest rank present; ``max_cpu_loras`` None = the adapter count.
        OOM configurations are decided by the memory rule and never sent to the backend.
        """
        canon = []
        for idx_in, slots, r, m in queries:
            idx = canonical(idx_in)
            rank = int(problem.ranks[idx].max()) if r is None else int(r)
            canon.append((idx, int(slots), rank, len(idx) if m is None else int(m), _digest(idx)))
        return self._points(problem, canon)

    def _points(self, problem: Instance, queries: Sequence[tuple[np.ndarray, int, int, int, bytes]]
                ) -> list[Point]:
        cache, tpr, _ = self._state(problem)
        out: list[Point | None] = [None] * len(queries)
        todo: list[tuple[int, Query, Any, float]] = []
        offered_of: dict[bytes, float] = {}
        for q, (idx, s, rank, cpu, dig) in enumerate(queries):
            key = ("p", dig, s, rank, cpu)
            hit = cache.get(key) if self.use_cache else None
            if hit is not None:
                out[q] = hit
                continue
            offered = offered_of.get(dig)
            if offered is None:
                offered = offered_of[dig] = float(problem.rates[idx].sum()) * tpr
            if not self._memory_fits(problem, s, rank):
                out[q] = Point(s, rank, cpu, 0.0, offered, 1.0, True, True)
                if self.use_cache:
                    cache[key] = out[q]
                continue
            todo.append((q, (idx, s, rank, cpu), key, offered))
        if todo:
            self.calls += 1
            self.predictions += len(todo)
            raw = self._predict(self._stressed(problem), [t[1] for t in todo])
            thr, prob, flag, off = raw[:4]
            ratio = np.asarray(raw[4], dtype=float) if len(raw) > 4 else np.zeros(len(todo))
            if self.headroom:  # judged at (1 + headroom) x the load; report the served fraction at nominal
                grow = 1.0 + self.headroom
                thr = np.asarray(thr) / grow
                off = None if off is None else np.asarray(off) / grow
            limit = -1.0 if self.margin is None else STARVATION_RATIO + self.margin
            served = problem.slo.min_served_fraction
            if served != STARVATION_RATIO:  # another served fraction than the papers' 0.9: the regressor says
                limit = max(limit, served + (self.margin or 0.0))
            p_max = self.threshold(problem)
            for j, (q, (_, s, rank, cpu), key, offered) in enumerate(todo):
                offered_j = float(off[j]) if off is not None else offered
                t, p, r = float(thr[j]), float(prob[j]), float(ratio[j])
                starved = bool(flag[j]) or p > p_max or t < limit * offered_j or r > 1.0
                point = Point(s, rank, cpu, t, offered_j, p, starved, False, r)
                out[q] = point
                if self.use_cache:
                    cache[key] = point
        return [p for p in out if p is not None]

    def _memory_fits(self, problem: Instance, slots: int, rank: int) -> bool:
        """The memory rule for (slots, rank), memoised per problem (a pure function of the problem's model,
        GPU and server settings: the batched calls ask it for every slot candidate of every set)."""
        memo = self._state(problem)[0]
        key = ("mem", slots, rank)
        hit = memo.get(key)
        if hit is None:
            hit = memo[key] = memory_fits(problem, slots, rank, self.profile(problem))
        return bool(hit)

    # --- GPU verdicts -----------------------------------------------------------------------------------
    def slot_candidates(self, problem: Instance, n: int, rank: int) -> list[int]:
        """Slot counts tried for ``n`` adapters of largest rank ``rank`` (memory-feasible ones only; memoised
        per problem)."""
        memo = self._state(problem)[0]
        key = ("slots", n, rank)
        hit = memo.get(key)
        if hit is None:
            hit = memo[key] = self._slot_candidates(problem, n, rank)
        return list(hit)

    def _slot_candidates(self, problem: Instance, n: int, rank: int) -> tuple[int, ...]:
        top = self.slot_points[-1] if self.slot_points else n
        cands = {s for s in self.slot_points if s <= n}
        if n <= top:
            cands.add(n)
        cap = max_slots(problem, rank, min(n, top), self.profile(problem))
        if cap:
            cands.add(cap)
        return tuple(sorted(s for s in cands if s <= cap))

    def evaluate(self, problem: Instance, idx: Iterable[int]) -> GpuVerdict:
        """The verdict for one GPU serving adapters ``idx`` (indices into ``problem.adapters``)."""
        return self.evaluate_many(problem, [idx])[0]

    def evaluate_many(self, problem: Instance, sets: Sequence[Iterable[int]]) -> list[GpuVerdict]:
        """Verdicts for many candidate GPUs, with one batched backend call for all their slot candidates."""
        cache, _, _ = self._state(problem)
        out: list[GpuVerdict | None] = [None] * len(sets)
        plans: list[tuple[int, Any, int, int, list[int]]] = []
        queries: list[tuple[np.ndarray, int, int, int, bytes]] = []
        for k, raw in enumerate(sets):
            idx = canonical(raw)
            if idx.size == 0:
                raise ValueError("a GPU needs at least one adapter")
            dig = _digest(idx)
            key = ("v", dig)
            hit = cache.get(key) if self.use_cache else None
            if hit is not None:
                out[k] = hit
                continue
            n, rank = int(idx.size), int(problem.ranks[idx].max())
            cands = self.slot_candidates(problem, n, rank)
            plans.append((k, key, n, rank, cands))
            queries.extend((idx, s, rank, n, dig) for s in cands)
        points = self._points(problem, queries) if queries else []
        pos = 0
        for k, key, n, rank, cands in plans:
            pts = points[pos:pos + len(cands)]
            pos += len(cands)
            verdict = self._choose(problem, sets[k], n, rank, pts)
            out[k] = verdict
            if self.use_cache:
                cache[key] = verdict
        return [v for v in out if v is not None]

    def _choose(self, problem: Instance, idx: Iterable[int], n: int, rank: int,
                pts: list[Point]) -> GpuVerdict:
        if not pts:
            offered = self.offered_tok_s(problem, idx)
            return GpuVerdict(False, None, rank, n, 0.0, offered, 1.0, True,
                              f"memory error: max_lora_rank {rank} leaves no KV cache for even 1 slot")
        ok = [p for p in pts if p.feasible]
        if ok:
            # Throughput first; among slot counts within SLOT_TIE of the best (an unsaturated GPU serves its
            # offered load at any of them), the one least likely to starve: the predictions differ there by
            # noise, and too few slots for many adapters is where the twin's outcome turns bimodal.
            # Under a latency SLO, the most latency margin first (the lowest worst latency / bound ratio).
            top = max(p.throughput_tok_s for p in ok)
            near = [p for p in ok if p.throughput_tok_s >= (1.0 - SLOT_TIE) * top]
            best = min(near, key=lambda p: (round(p.slo_ratio, 2), p.starved_probability, -p.throughput_tok_s,
                                            p.max_loras))
            return GpuVerdict(True, best.max_loras, rank, n, best.throughput_tok_s, best.offered_tok_s,
                              best.starved_probability, False, "")
        best = max(pts, key=lambda p: (p.throughput_tok_s, -p.max_loras))
        latency = (f", worst latency {best.slo_ratio:.2f} × its bound" if problem.slo.limits() else "")
        reason = (f"fails the criterion ({problem.slo.describe()}) at every slot count "
                  f"{[p.max_loras for p in pts]}: best throughput "
                  f"{best.throughput_tok_s:.0f} tok/s at max_loras={best.max_loras} vs offered "
                  f"{best.offered_tok_s:.0f} tok/s (p_starved={best.starved_probability:.2f}{latency})")
        return GpuVerdict(False, best.max_loras, rank, n, best.throughput_tok_s, best.offered_tok_s,
                          best.starved_probability, False, reason)

    def feasible_many(self, problem: Instance, sets: Sequence[Iterable[int]]) -> np.ndarray:
        """Feasibility of many candidate GPUs (bool array)."""
        return np.array([v.feasible for v in self.evaluate_many(problem, sets)], dtype=bool)

    def unplaceable(self, problem: Instance) -> list[int]:
        """Indices of adapters that are infeasible even alone on a GPU.

        Per rank, adapters are judged from the hottest down (a cooler adapter of the same rank is assumed to
        fit when a hotter one does); the boundary is found by bisection: O(log n) oracle calls per rank.
        """
        bad: list[int] = []
        for r in sorted(set(problem.ranks.tolist())):
            members = np.flatnonzero(problem.ranks == r)
            order = members[np.argsort(-problem.rates[members], kind="stable")]
            if self.evaluate(problem, [order[0]]).feasible:
                continue
            lo, hi = 0, len(order)  # order[:lo+1] infeasible; order[hi:] feasible (hi = len: none known)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if self.evaluate(problem, [order[mid]]).feasible:
                    hi = mid
                else:
                    lo = mid
            bad.extend(order[:hi].tolist())
        return sorted(bad)
