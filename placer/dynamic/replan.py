"""Re-placement when the workload changes: a plan for the new workload that moves few adapters.

:func:`replan` starts from the old plan and changes only what it must (every decision judged by the oracle,
so whatever criterion the oracle applies — the papers' starvation rule today — is what the new plan meets):

1. **keep**: every old GPU keeps the adapters it served that still exist (retired ones are dropped);
2. **repair**: a kept GPU the oracle now calls infeasible keeps its largest feasible set of coldest adapters
   and evicts the hottest (the fewest evictions that shed the most load);
3. **fill**: new and evicted adapters, hottest first, go in chunks to the feasible GPU that is most loaded
   among all GPUs (up to ``FILL_WIDTH``; best fit, one batched oracle call per chunk; a chunk that fits
   nowhere is halved; a GPU is not offered more load than it refused before); adapters that fit in no
   existing GPU open new GPUs with the bisection fill of ``ffd-bisect``;
4. **drain** and **consolidate**: when the plan has more GPUs than the default solver's from-scratch plan,
   the surplus GPUs with the fewest adapters are emptied at once and steps 1–3 are redone with their adapters
   in the pool (best fit decreasing into all spare capacity; kept when it needs fewer GPUs, within
   ``max_moves`` and worth the moves at ``move_cost``); then, while still above that count, empty the GPU
   with the fewest adapters that can be emptied into the others (same conditions);
5. **choose**: the from-scratch plan, its GPUs matched to the old ones (:func:`placer.dynamic.diff.align`),
   is a candidate too; the plan with the lowest ``GPUs + move_cost × moves`` (then fewest moves) among those
   within ``max_moves`` wins. With the default ``move_cost`` 0 that is: as few GPUs as from scratch, then
   as few moves as this search finds.

A kept GPU keeps its server settings when the oracle calls its new adapter set feasible at them; otherwise it
gets the oracle's best settings and the diff lists it under ``restart``. A *move* is an adapter that was
served before and is served by another GPU now; new adapters are *placed*, not moved.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from placer.check.evaluate import evaluate
from placer.context import Context
from placer.dynamic.diff import PlanDiff, align, gpu_ids, plan_diff
from placer.heuristics.ffd_bisect import fill_bisect
from placer.heuristics.fill import largest_prefix, plan_gpu, zigzag
from placer.heuristics.localsearch import try_empty
from placer.oracle import Oracle
from placer.result import GpuPlan, Result, plural
from placer.solve import DEFAULT_SOLVER, DEFAULT_TIME_LIMIT, default_oracle, solve
from placer.stats import SolverStats
from twin.errors import InfeasibleError, InputError
from twin.spec import Instance

NAME = "replan"
FILL_WIDTH = 256     # GPUs offered each chunk of adapters to place: all of them, or the least loaded
FILL_CHUNK = 8       # adapters per chunk (halved when a chunk fits nowhere)
CONSOLIDATE_TRIES = 6  # victims tried per GPU closed before giving up
DRAIN_ROUNDS = 1     # rounds of draining the surplus GPUs (each drains what the previous fell short by)
FILL_GIVE_UP = 16    # single adapters in a row that fit nowhere: the rest of the pool opens new GPUs
REPACK_PARTNERS = (1, 2, 4, 8)  # a victim that cannot be emptied: re-packed with this many least-loaded GPUs


@dataclass(frozen=True)
class ReplanResult:
    """The new plan (GPU ids in ``plan.extra["gpu_ids"]``), its diff from the old one, and what it cost."""

    plan: Result
    diff: PlanDiff
    scratch_gpus: int
    scratch_moves: int
    method: str            # incremental | scratch
    runtime_s: float
    scratch_s: float

    @property
    def moves(self) -> int:
        return self.diff.moves

    @property
    def extra_gpus(self) -> int:
        """GPUs beyond the from-scratch plan's (negative: fewer)."""
        return self.plan.num_gpus - self.scratch_gpus

    def to_dict(self) -> dict[str, Any]:
        """The plan object plus ``diff`` and a ``replan`` summary (the ``placer replan --json`` object)."""
        doc = self.plan.to_dict()
        doc["diff"] = self.diff.to_dict()
        doc["replan"] = {"method": self.method, "moves": self.moves, "scratch_gpus": self.scratch_gpus,
                         "scratch_moves": self.scratch_moves, "extra_gpus": self.extra_gpus,
                         "runtime_s": round(self.runtime_s, 4), "scratch_s": round(self.scratch_s, 4)}
        return doc


def _check_args(max_moves: int | None, move_cost: float, seed: int, time_limit: float) -> None:
    if max_moves is not None and (isinstance(max_moves, bool) or not isinstance(max_moves, numbers.Integral)
                                  or max_moves < 0):
        raise InputError(f"must be a non-negative integer (got {max_moves!r})", field="max_moves",
                         value=max_moves)
    if isinstance(move_cost, bool) or not isinstance(move_cost, numbers.Real) or not (
            math.isfinite(move_cost) and move_cost >= 0):
        raise InputError(f"must be a non-negative number of GPUs per move (got {move_cost!r})",
                         field="move_cost", value=move_cost)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(f"must be a non-negative integer (got {seed!r})", field="seed", value=seed)
    if time_limit is None or not time_limit > 0:
        raise InputError(f"time limit must be positive (got {time_limit!r})", field="time_limit",
                         value=time_limit)


class _State:
    """The plan under construction: adapter-index bins with their GPU ids (None: a new GPU)."""

    def __init__(self, problem: Instance, old: Result) -> None:
        self.problem = problem
        index = problem.index
        self.home: dict[int, int] = {}  # adapter index -> old GPU id (adapters served before)
        self.bins: list[np.ndarray] = []
        self.ids: list[int | None] = []
        self.old: dict[int, GpuPlan] = {}
        for gid, g in zip(gpu_ids(old), old.gpus, strict=True):
            idx = [index[a] for a in g.adapters if a in index]
            self.home.update((i, gid) for i in idx)
            self.old[gid] = g
            if idx:
                self.bins.append(np.sort(np.asarray(idx, dtype=np.int64)))
                self.ids.append(gid)
        self.pool: list[int] = [i for i in range(problem.n_adapters) if i not in self.home]
        # per bin: the least extra load (req/s) the oracle refused on top of it (inf: none yet); a hint for
        # which GPUs to offer adapters, reset when the bin changes other than by adding
        self.refused: list[float] = [math.inf] * len(self.bins)

    def moves(self) -> int:
        return sum(1 for b, gid in zip(self.bins, self.ids, strict=True) for i in b.tolist()
                   if i in self.home and self.home[i] != gid)

    def nonempty(self) -> list[int]:
        return [k for k, b in enumerate(self.bins) if b.size]


def _repair(st: _State, oracle: Oracle) -> None:
    """Evict the hottest adapters of every kept GPU the oracle calls infeasible (fewest evictions); note, as
    the GPU's refusal, the rate of the coldest adapter it had to evict."""
    problem, rates = st.problem, st.problem.rates
    verdicts = oracle.evaluate_many(problem, st.bins) if st.bins else []
    for k, v in enumerate(verdicts):
        if v.feasible:
            continue
        order = st.bins[k][np.argsort(rates[st.bins[k]], kind="stable")]  # coldest first
        keep, _ = largest_prefix(problem, order, oracle, max(1, len(order) - 1))
        st.bins[k] = np.sort(order[:keep])
        st.pool.extend(order[keep:].tolist())
        st.refused[k] = min(st.refused[k], float(rates[order[keep]]))


def _fill(st: _State, oracle: Oracle, stop: Callable[[], bool]) -> list[int]:
    """Place the pool into existing GPUs (best fit among all of them, or the least loaded of very many);
    return what fits nowhere.

    A chunk is offered only to GPUs that have not refused as much load before (``_State.refused``: the least
    load the oracle rejected on top of the GPU); feasibility is not exactly monotone in load, so this only
    prunes offers (one batched oracle call per chunk), it never makes a GPU infeasible."""
    problem, rates = st.problem, st.problem.rates
    pool = np.asarray(sorted(st.pool, key=lambda i: (-rates[i], i)), dtype=np.int64)
    st.pool = []
    load = np.array([rates[b].sum() for b in st.bins]) if st.bins else np.zeros(0)
    queue = [pool[i:i + FILL_CHUNK] for i in range(0, len(pool), FILL_CHUNK)]
    overflow: list[int] = []
    misses = 0  # single adapters in a row that fit nowhere
    while queue:
        chunk = queue.pop(0)
        if not st.bins or misses >= FILL_GIVE_UP or stop():
            overflow.extend(chunk.tolist())
            continue
        extra = float(rates[chunk].sum())
        refused = np.asarray(st.refused[:len(st.bins)])
        open_ = np.flatnonzero(refused > extra)
        targets = open_[np.argsort(load[open_], kind="stable")[:FILL_WIDTH]]
        verdicts = oracle.evaluate_many(problem, [np.concatenate([st.bins[t], chunk]) for t in targets])
        fits = [int(t) for t, v in zip(targets, verdicts, strict=True) if v.feasible]
        for t, v in zip(targets.tolist(), verdicts, strict=True):
            if not v.feasible:
                st.refused[t] = min(st.refused[t], extra)
        if fits:
            t = max(fits, key=lambda j: (load[j], -j))  # best fit: the most loaded GPU that takes it
            st.bins[t] = np.sort(np.concatenate([st.bins[t], chunk]))
            load[t] += extra
            misses = 0
        elif len(chunk) > 1:
            half = len(chunk) // 2
            queue[:0] = [chunk[:half], chunk[half:]]
        else:
            overflow.extend(chunk.tolist())
            misses += 1
    return overflow


def _drain(st: _State, count: int) -> None:
    """Put the adapters of ``count`` GPUs into the pool, fewest adapters first (then least load): the surplus
    over the from-scratch count, emptied at once so that the fill places their adapters with
    the new and evicted ones, hottest first, into all the spare capacity (best fit decreasing)."""
    rates = st.problem.rates
    live = st.nonempty()
    for k in sorted(live, key=lambda k: (len(st.bins[k]), rates[st.bins[k]].sum(), k))[:max(0, count)]:
        st.pool.extend(st.bins[k].tolist())
        st.bins[k] = np.zeros(0, np.int64)
        st.refused[k] = -math.inf  # closed: offered nothing


def _zigzag_by_rank(problem: Instance, members: np.ndarray) -> np.ndarray:
    """``members`` in ffd-bisect's first order: rank groups largest first, rates zig-zag inside each."""
    ranks = problem.ranks
    return np.concatenate([zigzag(problem.rates, members[ranks[members] == r])
                           for r in sorted(set(ranks[members].tolist()), reverse=True)]).astype(np.int64)


def _open_new(st: _State, overflow: list[int], oracle: Oracle, stop: Callable[[], bool]) -> None:
    """New GPUs for the adapters that fit in no existing one (ffd-bisect's bisection fill)."""
    if not overflow:
        return
    problem = st.problem
    order = _zigzag_by_rank(problem, np.asarray(overflow, dtype=np.int64))
    bins = fill_bisect(problem, order, oracle, stop)
    if bins is None:  # cannot happen after the unplaceable check, unless the time ran out
        bins = fill_bisect(problem, order, oracle, lambda: False)
    if bins is None:
        raise InfeasibleError("an adapter fits on no GPU even alone")
    st.bins.extend(bins)
    st.ids.extend([None] * len(bins))
    st.refused.extend([math.inf] * len(bins))


def _repack(st: _State, oracle: Oracle, v: int, partners: list[int],
            stop: Callable[[], bool]) -> list[np.ndarray] | None:
    """Bins ``v`` + ``partners`` re-packed into ``len(partners)`` bins (matched to partners by overlap), or
    None. The union is filled partner by partner (hottest first), the victim last, so each partner's adapters
    stay together as far as they fit; failing that, in ffd-bisect's zig-zag order."""
    from scipy.optimize import linear_sum_assignment

    rates = st.problem.rates
    parts = [st.bins[k][np.argsort(-rates[st.bins[k]], kind="stable")] for k in [*partners, v]]
    bins = None
    for order in (np.concatenate(parts), _zigzag_by_rank(st.problem, np.concatenate(parts))):
        bins = fill_bisect(st.problem, order, oracle, stop)
        if bins is not None and len(bins) <= len(partners):
            break
    else:
        return None
    assert bins is not None
    bins += [np.zeros(0, np.int64)] * (len(partners) - len(bins))
    overlap = np.array([[np.intersect1d(st.bins[k], b).size for b in bins] for k in partners])
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    out: list[np.ndarray] = [np.zeros(0, np.int64)] * len(partners)
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        out[r] = np.sort(bins[c])
    return out


def _close_one(st: _State, oracle: Oracle, v: int, live: list[int],
               stop: Callable[[], bool]) -> list[np.ndarray] | None:
    """The bins after closing ``st.bins[v]`` (moved into the others, else re-packed with one or two of the
    least-loaded others), or None."""
    rates = st.problem.rates
    pos = live.index(v)
    others = try_empty(st.problem, [st.bins[k] for k in live], pos, oracle, stop, width=FILL_WIDTH)
    trial = list(st.bins)
    if others is not None:
        for k, b in zip([k for k in live if k != v], others, strict=True):
            trial[k] = b
    else:
        rest = sorted((k for k in live if k != v), key=lambda k: (rates[st.bins[k]].sum(), k))
        for width in REPACK_PARTNERS:
            if len(rest) < width or stop():
                return None
            got = _repack(st, oracle, v, rest[:width], stop)
            if got is not None:
                for k, b in zip(rest[:width], got, strict=True):
                    trial[k] = b
                break
        else:
            return None
    trial[v] = np.zeros(0, np.int64)
    return trial


def _consolidate(st: _State, oracle: Oracle, target: int, max_moves: int | None, move_cost: float,
                 stop: Callable[[], bool]) -> None:
    """Close GPUs (fewest adapters first) while there are more than ``target`` and it is worth the moves."""
    rates = st.problem.rates
    failed: set[bytes] = set()
    while len(st.nonempty()) > target and not stop():
        live = st.nonempty()
        before = st.moves()
        tries = 0
        for v in sorted(live, key=lambda k: (len(st.bins[k]), rates[st.bins[k]].sum(), k)):
            if tries >= CONSOLIDATE_TRIES or stop():
                return
            if st.bins[v].tobytes() in failed:
                continue
            tries += 1
            trial = _close_one(st, oracle, v, live, stop)
            if trial is None:
                failed.add(st.bins[v].tobytes())
                continue
            saved, st.bins = st.bins, trial
            added = st.moves() - before
            over = max_moves is not None and before + added > max_moves
            if over or (move_cost and move_cost * added >= 1):
                st.bins = saved  # over the budget, or the moves cost more than the GPU saved
                failed.add(saved[v].tobytes())
                continue
            break
        else:
            return


def _to_plan(st: _State, oracle: Oracle) -> tuple[list[GpuPlan], list[int]]:
    """GPU plans for the non-empty bins (old settings kept where still feasible) and their ids."""
    problem = st.problem
    live = st.nonempty()
    keep_q, keep_k = [], []
    for k in live:
        gid = st.ids[k]
        g = st.old.get(gid) if gid is not None else None
        b = st.bins[k]
        if g is not None and g.max_loras <= len(b) and g.max_lora_rank >= int(problem.ranks[b].max()):
            keep_q.append((b, g.max_loras, g.max_lora_rank, g.max_cpu_loras))
            keep_k.append(k)
    kept = dict(zip(keep_k, oracle.points(problem, keep_q), strict=True)) if keep_q else {}
    need = [k for k in live if not (k in kept and kept[k].feasible)]
    verdicts = dict(zip(need, oracle.evaluate_many(problem, [st.bins[k] for k in need]), strict=True))
    fresh = max([i for i in st.ids if i is not None] + list(st.old), default=-1) + 1
    gpus, ids = [], []
    for k in live:
        point = kept.get(k)
        if point is None or not point.feasible:
            v = verdicts[k]
            if not v.feasible:  # every bin was built from oracle-feasible sets: a bug if this happens
                raise RuntimeError(f"replan built an infeasible GPU: {v.reason}")
            point = oracle.points(problem, [(st.bins[k], int(v.best_max_loras or 1), None, None)])[0]
        gpus.append(plan_gpu(problem, st.bins[k], point))
        gid = st.ids[k]
        if gid is None:
            gid, fresh = fresh, fresh + 1
        ids.append(gid)
    pairs = sorted(zip(ids, gpus, strict=True), key=lambda p: p[0])
    return [g for _, g in pairs], [i for i, _ in pairs]


def replan(problem: Instance, old_plan: Result, *, max_moves: int | None = None, move_cost: float = 0.0,
           time_limit: float = DEFAULT_TIME_LIMIT, seed: int = 0, oracle: Oracle | None = None,
           context: Context | None = None, solver: str = DEFAULT_SOLVER) -> ReplanResult:
    """A plan for ``problem`` (the new workload) that moves few adapters of ``old_plan`` (see the module
    docstring). ``max_moves``: at most this many adapter moves (None: no limit); ``move_cost``: GPUs one move
    is worth (0: GPUs first, then moves). ``solver`` makes the from-scratch reference plan. Raises
    :class:`InfeasibleError` when an adapter fits on no GPU even alone."""
    _check_args(max_moves, move_cost, seed, time_limit)
    start = time.perf_counter()
    oracle = oracle if oracle is not None else default_oracle(problem, context=context)
    bad = oracle.unplaceable(problem)
    if bad:
        a = problem.adapters[bad[0]]
        raise InfeasibleError(f"adapter {a.id!r} (rank {a.rank}, {a.rate_rps:g} req/s) fits on no GPU even "
                              f"alone: {oracle.evaluate(problem, [bad[0]]).reason}"
                              + (f" (and {plural(len(bad) - 1, 'more adapter')})" if len(bad) > 1 else ""))
    deadline = start + float(time_limit)

    def stop() -> bool:
        return time.perf_counter() > deadline

    t_scratch = time.perf_counter()
    scratch = align(old_plan, solve(problem, solver, time_limit=time_limit, seed=seed, oracle=oracle))
    scratch_s = time.perf_counter() - t_scratch
    scratch_diff = plan_diff(old_plan, scratch)

    def build(drain: int) -> _State:
        st = _State(problem, old_plan)
        _repair(st, oracle)
        _drain(st, drain)
        _open_new(st, _fill(st, oracle, stop), oracle, stop)
        return st

    st, drain = build(0), 0
    for _ in range(DRAIN_ROUNDS):  # close the surplus GPUs at once, a few more each round they fall short
        excess = len(st.nonempty()) - scratch.num_gpus
        if excess <= 0 or stop():
            break
        drain += excess
        trial = build(drain)

        def worth(x: _State) -> tuple[float, int]:
            return (len(x.nonempty()) + move_cost * x.moves(), x.moves())

        if (max_moves is None or trial.moves() <= max_moves) and worth(trial) < worth(st):
            st = trial
    _consolidate(st, oracle, scratch.num_gpus, max_moves, move_cost, stop)
    gpus, ids = _to_plan(st, oracle)
    inc = Result(solver=NAME, status="feasible", num_gpus=len(gpus), lower_bound=scratch.lower_bound,
                 runtime_s=0.0, gpus=tuple(gpus), instance=problem.name, model=problem.model, gpu=problem.gpu,
                 oracle=oracle.name, stats=SolverStats(gpu_ids=tuple(ids)))
    inc_diff = plan_diff(old_plan, inc)

    def cost(plan: Result, diff: PlanDiff) -> tuple[float, int]:
        return (plan.num_gpus + move_cost * diff.moves, diff.moves)

    method, plan, diff = "incremental", inc, inc_diff
    if ((max_moves is None or scratch_diff.moves <= max_moves)
            and cost(scratch, scratch_diff) < cost(inc, inc_diff)):
        method, diff = "scratch", scratch_diff
        plan = scratch.replace(solver=NAME, stats=scratch.stats.replace(gpu_ids=tuple(gpu_ids(scratch)),
                                                                        scratch_solver=solver))
    check = evaluate(problem, plan, oracle)
    if not check.feasible:  # a bug, never the input's fault
        raise RuntimeError(f"replan produced a plan the oracle rejects: {(check.errors or ('?',))[0]}")
    runtime = time.perf_counter() - start
    lb = max(1, scratch.lower_bound)
    status = "optimal" if plan.num_gpus <= lb else "feasible"
    stats = plan.stats.replace(from_plan_gpus=old_plan.num_gpus, scratch_gpus=scratch.num_gpus,
                               max_moves=max_moves, move_cost=move_cost)
    plan = plan.replace(status=status, lower_bound=min(lb, plan.num_gpus), runtime_s=runtime, stats=stats)
    return ReplanResult(plan=plan, diff=diff, scratch_gpus=scratch.num_gpus, scratch_moves=scratch_diff.moves,
                        method=method, runtime_s=runtime, scratch_s=scratch_s)
