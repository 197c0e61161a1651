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

**The batch as a decision variable** (``tune_batch=True``, ``placer solve --tune-batch``): a set that fails
at the instance's ``max_num_seqs`` at every slot count is judged again down the batch caps of
:meth:`Oracle.batch_grid` (the powers of two below the instance's value down to ``batch_floor``, default
:data:`BATCH_FLOOR`, within the backend's :meth:`Oracle.batch_range`), each at the smallest
``gpu_memory_utilization`` whose KV cache holds that batch's need (:func:`batch_kv_need`; never above the
instance's), while it still serves its load; the first cap with a feasible slot count decides, the slot count
by the rule above (:meth:`Oracle._with_batches`). A set feasible
at the instance's settings keeps them (its verdict is the one without the flag), so the grid costs nothing
where the default holds; the verdict's ``max_num_seqs`` and ``gpu_memory_utilization`` are None then.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from placer.context import DEFAULT_CONTEXT, Context
from placer.problem.memory import (
    max_model_len,
    max_slots,
    memory_fits,
    smallest_utilization,
    tokens_per_request,
)
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
BATCH_FLOOR = 64  # the smallest batch cap tune_batch tries (the twin: below it a GPU saturates, see tune.py)
BATCH_KV_HEADROOM = 0.10  # a batch's KV need = its cap x mean tokens per request x (1 + this)


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
    max_num_seqs: int | None = None  # the batch cap judged (None: the instance's)
    gpu_memory_utilization: float | None = None  # the utilisation judged (None: the instance's)

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
    max_num_seqs: int | None = None  # tune_batch: the GPU's own batch cap (None: the instance's)
    gpu_memory_utilization: float | None = None  # tune_batch: the GPU's own (None: the instance's)

    @property
    def batch(self) -> Batch | None:
        """The GPU's own (max_num_seqs, gpu_memory_utilization) when the batch search chose one, else None."""
        if self.max_num_seqs is None or self.gpu_memory_utilization is None:
            return None
        return self.max_num_seqs, self.gpu_memory_utilization

    def gpu_plan(self, adapter_ids: Sequence[str]) -> GpuPlan:
        """This verdict's settings as one GPU of a plan."""
        return GpuPlan(adapters=tuple(adapter_ids), max_loras=int(self.best_max_loras or 1),
                       max_cpu_loras=self.max_cpu_loras, max_lora_rank=self.max_lora_rank,
                       predicted_throughput_tok_s=round(float(self.throughput_tok_s), 3),
                       predicted_starved_probability=round(float(self.starved_probability), 4),
                       offered_tok_s=round(float(self.offered_tok_s), 3), max_num_seqs=self.max_num_seqs,
                       gpu_memory_utilization=self.gpu_memory_utilization)


Query = tuple[np.ndarray, int, int, int]  # (sorted adapter indices, max_loras, max_lora_rank, max_cpu_loras)
Batch = tuple[int, float]  # (max_num_seqs, gpu_memory_utilization) of one GPU
_Canon = tuple[np.ndarray, int, int, int, bytes, "Batch | None"]  # query, digest, batch (None: the default)


def batch_kv_need(problem: Instance, max_num_seqs: int, tokens_per_request: float, profile: Profile) -> int:
    """KV tokens a batch cap needs: cap × mean tokens per request × (1 + :data:`BATCH_KV_HEADROOM`), never
    below ``max_model_len`` (vLLM needs one max-length request), in whole blocks."""
    block = profile.memory.block_size
    need = max(max_num_seqs * tokens_per_request * (1.0 + BATCH_KV_HEADROOM),
               float(max_model_len(problem, profile)))
    return int(np.ceil(need / block - 1e-9)) * block


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
                 cache: bool = True, context: Context | None = None, tune_batch: bool = False,
                 batch_floor: int = BATCH_FLOOR) -> None:
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
        self.tune_batch = bool(tune_batch)
        if isinstance(batch_floor, bool) or not isinstance(batch_floor, int) or batch_floor < 1:
            raise InputError(f"the smallest batch cap must be an integer ≥ 1 (got {batch_floor!r})",
                             field="batch_floor", value=batch_floor)
        self.batch_floor = batch_floor
        self._variants: dict[int, tuple[Instance, Instance]] = {}  # id(variant) -> (variant, its problem)
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
        if self.tune_batch:
            parts.append(f"tune_batch>={self.batch_floor}")
        return f"{self.kind}({','.join(parts)})"

    def settings_key(self) -> tuple[Any, ...]:
        return (self.kind, self.margin, self.starved_threshold, self.headroom, self.slot_points,
                *self._settings(), *(("tune_batch", self.batch_floor) if self.tune_batch else ()))

    # --- per-problem state ------------------------------------------------------------------------------
    def _state(self, problem: Instance) -> tuple[dict[Any, Any], float, Profile]:
        alias = self._variants.get(id(problem))
        if alias is not None and alias[0] is problem:  # a batch variant: its problem's profile and tokens
            problem = alias[1]
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

    # --- the batch as a decision variable (tune_batch) ---------------------------------------------------
    def batch_range(self, problem: Instance) -> tuple[float, float] | None:
        """The batch caps this backend can judge (None: only the instance's); every cap by default."""
        return (1.0, float("inf"))

    def batch_note(self, problem: Instance) -> str | None:
        """One line when ``tune_batch`` is on but this backend cannot search the batch (None otherwise)."""
        return None

    def batch_grid(self, problem: Instance) -> tuple[int, ...]:
        """The batch caps tried, the instance's first: its ``max_num_seqs`` and the powers of two below it
        down to ``batch_floor`` (default :data:`BATCH_FLOOR`), within :meth:`batch_range` (the instance's
        alone when tune_batch is off)."""
        top = int(problem.server.max_num_seqs)
        span = self.batch_range(problem) if self.tune_batch else None
        if span is None:
            return (top,)
        lo, hi = span
        caps = [1 << i for i in range(top.bit_length())
                if self.batch_floor <= 1 << i < top and lo <= 1 << i <= hi]
        return (top, *sorted(caps, reverse=True))

    def batch_searching(self) -> Oracle:
        """A fresh copy of this oracle (same backend and settings, empty caches) with ``tune_batch`` on."""
        clone = copy.copy(self)
        clone._caches, clone._variants, clone.calls, clone.predictions = {}, {}, 0, 0
        clone.tune_batch = True
        return clone

    def batch(self, problem: Instance, max_loras: int, rank: int, max_num_seqs: int) -> Batch:
        """(max_num_seqs, the smallest utilisation that holds its KV need with these LoRA settings)."""
        prof = self.profile(problem)
        need = batch_kv_need(problem, max_num_seqs, self.tokens_per_request(problem), prof)
        u = float(problem.server.gpu_memory_utilization)
        return int(max_num_seqs), smallest_utilization(prof.memory, max_loras, rank, u, need)

    def _variant(self, problem: Instance, batch: Batch) -> Instance:
        """The (stressed) problem with this batch's server settings, memoised; it shares the problem's
        state."""
        memo = self.memo(problem)
        key = ("variant", batch)
        hit = memo.get(key)
        if hit is None:
            base = self._stressed(problem)
            server = dataclasses.replace(base.server, max_num_seqs=batch[0], gpu_memory_utilization=batch[1])
            hit = memo[key] = base.replace(server=server)
            self._variants[id(hit)] = (hit, problem)
        variant: Instance = hit
        return variant

    # --- points: one configuration each -----------------------------------------------------------------
    def points(self, problem: Instance, queries: Sequence[tuple[Any, ...]]) -> list[Point]:
        """Judge configurations ``(adapters, max_loras, max_lora_rank, max_cpu_loras[, batch])`` in one batch.

        ``max_lora_rank`` None = the largest rank present; ``max_cpu_loras`` None = the adapter count;
        ``batch`` (optional) = a GPU's own (max_num_seqs, gpu_memory_utilization), None = the instance's.
        OOM configurations are decided by the memory rule and never sent to the backend.
        """
        canon: list[_Canon] = []
        for idx_in, slots, r, m, *own in queries:
            idx = canonical(idx_in)
            rank = int(problem.ranks[idx].max()) if r is None else int(r)
            batch = own[0] if own else None
            canon.append((idx, int(slots), rank, len(idx) if m is None else int(m), _digest(idx), batch))
        return self._points(problem, canon)

    def _points(self, problem: Instance, queries: Sequence[_Canon]) -> list[Point]:
        cache, tpr, _ = self._state(problem)
        out: list[Point | None] = [None] * len(queries)
        todo: dict[Batch | None, list[tuple[int, Query, Any, float]]] = {}
        offered_of: dict[bytes, float] = {}
        for q, (idx, s, rank, cpu, dig, batch) in enumerate(queries):
            key = ("p", dig, s, rank, cpu) if batch is None else ("p", dig, s, rank, cpu, batch)
            hit = cache.get(key) if self.use_cache else None
            if hit is not None:
                out[q] = hit
                continue
            offered = offered_of.get(dig)
            if offered is None:
                offered = offered_of[dig] = float(problem.rates[idx].sum()) * tpr
            seqs, util = (None, None) if batch is None else batch
            if not self._memory_fits(problem, s, rank, util):
                out[q] = Point(s, rank, cpu, 0.0, offered, 1.0, True, True, 0.0, seqs, util)
                if self.use_cache:
                    cache[key] = out[q]
                continue
            todo.setdefault(batch, []).append((q, (idx, s, rank, cpu), key, offered))
        for batch, items in todo.items():
            seen = self._stressed(problem) if batch is None else self._variant(problem, batch)
            self._judge(problem, seen, items, batch, out, cache)
        return [p for p in out if p is not None]

    def _judge(self, problem: Instance, seen: Instance, todo: list[tuple[int, Query, Any, float]],
               batch: Batch | None, out: list[Point | None], cache: dict[Any, Any]) -> None:
        """One backend call for ``todo`` (queries of one batch setting), judged against the criterion."""
        seqs, util = (None, None) if batch is None else batch
        if todo:
            self.calls += 1
            self.predictions += len(todo)
            raw = self._predict(seen, [t[1] for t in todo])
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
                point = Point(s, rank, cpu, t, offered_j, p, starved, False, r, seqs, util)
                out[q] = point
                if self.use_cache:
                    cache[key] = point

    def _memory_fits(self, problem: Instance, slots: int, rank: int,
                     utilization: float | None = None) -> bool:
        """The memory rule for (slots, rank), memoised per problem (a pure function of the problem's model,
        GPU and server settings: the batched calls ask it for every slot candidate of every set);
        ``utilization``: a GPU's own instead of the instance's."""
        memo = self._state(problem)[0]
        key = ("mem", slots, rank, utilization)
        hit = memo.get(key)
        if hit is None:
            hit = memo[key] = memory_fits(problem, slots, rank, self.profile(problem), utilization)
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
        queries: list[_Canon] = []
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
            queries.extend((idx, s, rank, n, dig, None) for s in cands)
        points = self._points(problem, queries) if queries else []
        pos = 0
        failed: list[tuple[int, Any, int, int, list[Point]]] = []
        for k, key, n, rank, cands in plans:
            pts = points[pos:pos + len(cands)]
            pos += len(cands)
            verdict = self._choose(problem, sets[k], n, rank, pts)
            if not verdict.feasible and pts and self.tune_batch:
                failed.append((k, key, n, rank, pts))
                continue
            out[k] = verdict
            if self.use_cache:
                cache[key] = verdict
        for k, key, verdict in self._with_batches(problem, sets, failed):
            out[k] = verdict
            if self.use_cache:
                cache[key] = verdict
        return [v for v in out if v is not None]

    def _with_batches(self, problem: Instance, sets: Sequence[Iterable[int]],
                      failed: list[tuple[int, Any, int, int, list[Point]]]
                      ) -> list[tuple[int, Any, GpuVerdict]]:
        """Verdicts of sets that fail at the instance's batch, judged again down the batch grid (one batched
        backend call per cap for all sets still open). A set is searched only while it serves its load
        (throughput ≥ the served fraction × offered at some slot count): a smaller cap lowers TPOT but never
        adds capacity, so a set that starves at one cap is not tried at smaller ones. The first cap (from the
        top) with a feasible point decides, by the slot rule of :meth:`_choose`."""
        served = problem.slo.min_served_fraction

        def serves(pts: list[Point]) -> bool:
            return any(not p.oom and p.throughput_tok_s >= served * p.offered_tok_s for p in pts)

        judged = {k: list(pts) for k, _, _, _, pts in failed}
        open_ = [f for f in failed if serves(f[4])]
        for cap in self.batch_grid(problem)[1:]:
            if not open_:
                break
            queries: list[_Canon] = []
            for k, _, n, rank, pts in open_:
                idx = canonical(sets[k])
                dig = _digest(idx)
                queries.extend((idx, p.max_loras, rank, n, dig, self.batch(problem, p.max_loras, rank, cap))
                               for p in pts)
            points = self._points(problem, queries)
            pos, still = 0, []
            for item in open_:
                span = points[pos:pos + len(item[4])]
                pos += len(item[4])
                judged[item[0]] += span
                if not any(p.feasible for p in span) and serves(span):
                    still.append(item)
                elif any(p.feasible for p in span):
                    judged[item[0]] = [p for p in judged[item[0]] if p.max_num_seqs == cap or not p.feasible]
            open_ = still
        return [(k, key, self._choose(problem, sets[k], n, rank, judged[k])) for k, key, n, rank, _ in failed]

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
                              best.starved_probability, False, "", best.max_num_seqs,
                              best.gpu_memory_utilization)
        best = max(pts, key=lambda p: (p.throughput_tok_s, -p.max_loras))
        latency = (f", worst latency {best.slo_ratio:.2f} × its bound" if problem.slo.limits() else "")
        caps = sorted({p.max_num_seqs for p in pts if p.max_num_seqs is not None}, reverse=True)
        tried = f" and batch cap {[problem.server.max_num_seqs, *caps]}" if caps else ""
        reason = (f"fails the criterion ({problem.slo.describe()}) at every slot count "
                  f"{sorted({p.max_loras for p in pts})}{tried}: best throughput "
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
