"""Glue shared by the exact placement solvers (``cpsat``, ``ilp``): model, warm start, oracle check, repair.

1. Build the linearised model (:mod:`placer.exact.capacity`) and its bounds (:mod:`placer.exact.bounds`).
2. Warm start: the best of first/best-fit decreasing on the model, our best heuristic's plan (when that
   plan is admissible in the model) and a packing from the pattern LP (:mod:`placer.exact.colgen`: a dive,
   else an integer set cover of its patterns), whose Gilmore–Gomory bound joins the lower bounds; when the
   warm start meets the bound, no solver runs.
3. Solve the model with the given core (CP-SAT or CBC), time-limited.
4. The lower bound is proven on the *relaxed* model (optimistic capacities, :mod:`placer.exact.capacity`): its
   combinatorial/LP bounds, its pattern LP, and the same core run on it with the time left (warm-started
   from the model's packing). ``status`` is ``optimal`` only when the plan meets that bound; a model
   optimum above it is reported as ``feasible`` with ``extra.model_status`` = ``optimal``.
5. Every GPU of the model's optimum goes back to the oracle (:meth:`Oracle.evaluate_many`, the same judgement
   the one evaluator applies). Each GPU the oracle rejects teaches the model (:func:`_learn`): a small
   minimal conflict becomes a no-good cut ("these never share a GPU"), otherwise the classes that admitted
   it get their capacity lowered below its load; the model is solved again, warm-started from the plan with
   the rejected GPUs split (logic-based Benders; ``extra.rounds``, ``extra.no_goods``). If time or
   rounds run out first, the rejected GPUs are split (first fit, oracle-checked), ``extra.oracle_rejected``
   names them, the status is ``feasible`` and ``reason`` says why. After a correction a new dive on the
   tightened model joins the warm start (the bounds of the original model still hold for it).

Time: everything, the model build included, counts against ``time_limit``; :data:`RESERVE_SHARE` of it (at
most :data:`RESERVE_MAX_S`) is kept for the final oracle check and repair, so the runtime stays below the
limit (the model build, cached per oracle, is the one step that is not interrupted).

The bounds hold under the linearisation's assumptions (capacity measured on representative mixes, not
growing with the adapter count), not as a proof about the oracle.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from placer.exact.bounds import model_bounds
from placer.exact.colgen import PatternBound, pattern_bound, pattern_dive, pattern_packing
from placer.exact.packing import Packing, PackingModel, PackOutcome, first_fit_decreasing, warm_start
from placer.heuristics.ffd_bisect import solve_ffd_bisect
from placer.oracle.base import Oracle
from placer.result import GpuPlan, Result
from placer.stats import SolverStats
from twin.errors import InfeasibleError
from twin.spec import Instance

Core = Callable[..., PackOutcome]
HEURISTIC_SHARE = 0.2  # of the time limit, for the warm-start heuristic (at most HEURISTIC_MAX_S)
HEURISTIC_MAX_S = 10.0
PATTERN_SHARE = 0.15  # of the time left, for the pattern LP (column generation) of the model
PACKING_SHARE = 0.1  # of the time left, for the dive, and again for the set cover over its patterns
RESERVE_SHARE = 0.1  # of the time limit, kept for the final bounds and oracle check (at most RESERVE_MAX_S)
RESERVE_MAX_S = 1.0
MIN_STEP_S = 0.2  # a solver or pattern-LP step is skipped when less time than this is left
MODEL_SHARE = 0.85  # of the remaining time for the model's optimum; the rest proves the relaxed bound
MAX_ROUNDS = 25  # solve / oracle-check / learn rounds
CONFLICT_MAX = 8  # rejected GPUs up to this size are shrunk to a minimal conflict
NOGOOD_MAX = 3  # conflicts up to this size become no-good cuts; larger ones lower the class capacities


def _pattern_summary(pb: PatternBound | None) -> dict[str, Any] | None:
    if pb is None:
        return None
    return {"bound": round(pb.bound, 6), "lp": round(pb.lp_value, 6), "converged": pb.converged,
            "iterations": pb.iterations, "patterns": len(pb.patterns), "runtime_s": round(pb.runtime_s, 3)}


def _relaxed_bound(lm: Any, final: Packing | None, deadline: float, seed: int, core: Core,
                   options: dict[str, Any], cuts: list[tuple[int, ...]]
                   ) -> tuple[PackOutcome | None, Any, PatternBound | None]:
    """Bound the relaxed model (optimistic capacities, plus the oracle's no-goods): its pattern LP, then the
    core warm-started from the model's oracle-accepted packing ``final``, with the time left.

    Returns (the relaxed core run or None when not needed / not possible, the relaxed model's bounds, its
    pattern LP or None)."""
    relaxed = lm.bound_model
    report = model_bounds(relaxed)
    if final is None or report.best >= final.num_bins or deadline - time.perf_counter() < MIN_STEP_S:
        return None, report, None
    pattern = pattern_bound(relaxed, columns=final.bins, target=final.num_bins,
                            time_limit=0.5 * (deadline - time.perf_counter()))
    lower = max(report.best, pattern.best)
    start = Packing.from_bins(relaxed, final.bins)
    left = deadline - time.perf_counter()
    if lower >= final.num_bins or start is None or start.violates(cuts) or left < MIN_STEP_S:
        return None, report, pattern
    return core(relaxed, start, lower=lower, time_limit=left, seed=seed, cuts=tuple(cuts),
                **options), report, pattern


def _no_time(model: PackingModel, start: Packing, hints: tuple[Packing, ...], cuts: list[tuple[int, ...]],
             lower: int) -> PackOutcome:
    """The best warm start as the outcome when no time is left to run a solver."""
    t0 = time.perf_counter()
    best, done = warm_start(model, start, hints, cuts, lower, t0)
    return done or PackOutcome(best, "timeout", float(lower), 0.0, solver_status="SKIPPED",
                               detail="no time left for the solver; the best warm start returned")


def _learn(problem: Instance, oracle: Oracle, model: PackingModel, rejected: list[np.ndarray]
           ) -> tuple[PackingModel, list[tuple[int, ...]]]:
    """What the oracle's rejections teach the model.

    A rejected GPU of at most :data:`CONFLICT_MAX` adapters is shrunk to a minimal rejected subset; if that
    has at most :data:`NOGOOD_MAX` adapters it becomes a no-good cut. Otherwise (rejections about the total
    load, not a few adapters) every class that admitted the GPU gets its capacity lowered to just below the
    GPU's load: the model becomes more conservative where the oracle disagreed with it.
    """
    cuts: list[tuple[int, ...]] = []
    caps = [c.capacity for c in model.classes]
    for b in rejected:
        if len(b) <= CONFLICT_MAX:
            conflict = _conflict(problem, oracle, b)
            if 1 < len(conflict) <= NOGOOD_MAX:
                cuts.append(conflict)
                continue
        load, kind = int(model.weights[b].sum()), int(model.kinds[b].max())
        for k, c in enumerate(model.classes):
            if c.admits(load, len(b), kind):
                caps[k] = min(caps[k], load - 1)
    classes = tuple(dataclasses.replace(c, capacity=cap, capacity_tok_s=cap * model.scale)
                    for c, cap in zip(model.classes, caps, strict=True))
    return PackingModel(model.weights, model.kinds, classes, scale=model.scale, names=model.names), cuts


def _conflict(problem: Instance, oracle: Oracle, items: np.ndarray) -> tuple[int, ...]:
    """A minimal subset of a rejected GPU that the oracle still rejects (deletion filter, coldest first):
    the no-good "these adapters never share a GPU" cuts off every packing that repeats the conflict."""
    cur = [int(i) for i in items[np.argsort(problem.rates[items], kind="stable")]]
    k = 0
    while k < len(cur) and len(cur) > 2:
        trial = cur[:k] + cur[k + 1:]
        if not oracle.evaluate(problem, trial).feasible:
            cur = trial
        else:
            k += 1
    return tuple(sorted(cur))


def heuristic_packing(problem: Instance, model: PackingModel, oracle: Oracle, time_limit: float,
                      seed: int) -> tuple[Packing | None, int | None]:
    """Our best heuristic's plan as a packing of the model (None if inadmissible), and its GPU count."""
    res = solve_ffd_bisect(problem, time_limit=time_limit, seed=seed, oracle=oracle)
    if res.status == "infeasible" or not res.gpus:
        return None, None
    index = problem.index
    bins = [[index[a] for a in g.adapters] for g in res.gpus]
    return Packing.from_bins(model, bins), res.num_gpus


def _repair(problem: Instance, idx: np.ndarray, oracle: Oracle) -> list[np.ndarray]:
    """Split a rejected GPU into oracle-feasible ones: first fit, hottest adapter first, oracle-checked."""
    parts: list[list[int]] = []
    for i in idx[np.argsort(-problem.rates[idx], kind="stable")].tolist():
        trials = [p + [i] for p in parts]
        ok = oracle.feasible_many(problem, trials) if trials else np.zeros(0, dtype=bool)
        hit = np.flatnonzero(ok)
        if hit.size:
            parts[int(hit[0])].append(i)
        else:
            parts.append([i])
    return [np.array(sorted(p), dtype=np.int64) for p in parts]


def solve_exact(problem: Instance, *, time_limit: float, seed: int, oracle: Oracle, name: str,
                core: Core, **core_options: Any) -> Result:
    """Solve the linearised model of ``problem`` with ``core`` and return an oracle-checked plan."""
    t0 = time.perf_counter()
    try:
        from placer.exact.capacity import build_linear_model

        lm = build_linear_model(problem, oracle)
    except InfeasibleError as exc:
        return Result(solver=name, status="infeasible", num_gpus=0, lower_bound=0,
                      runtime_s=time.perf_counter() - t0, gpus=(), reason=str(exc))
    model = lm.packing
    report = model_bounds(model)
    deadline = t0 + time_limit - min(RESERVE_MAX_S, RESERVE_SHARE * time_limit)
    start = first_fit_decreasing(model)
    ffd_bins, packed_bins = start.num_bins, None
    budget = min(HEURISTIC_SHARE * time_limit, HEURISTIC_MAX_S, deadline - time.perf_counter())
    hint, heur_gpus = (heuristic_packing(problem, model, oracle, budget, seed) if budget > 0.05
                       else (None, None))
    hints: tuple[Packing, ...] = (hint,) if hint is not None else ()
    lower, pattern = report.best, None
    upper = min(p.num_bins for p in (start, *hints))
    if lower < upper and deadline - time.perf_counter() > MIN_STEP_S:  # pattern LP: bound and start
        left = deadline - time.perf_counter()
        pattern = pattern_bound(model, columns=[b for p in (start, *hints) for b in p.bins],
                                time_limit=PATTERN_SHARE * left, target=upper)
        lower = max(lower, pattern.best)
        if lower < upper:  # dive on the pattern LP; if that does not meet the bound, an integer set cover
            pool: set[tuple[int, ...]] = set()
            packed = pattern_dive(model, columns=pattern.patterns, time_limit=PACKING_SHARE * left, pool=pool)
            if packed is None or packed.num_bins > lower:
                best = min((start, *hints, *([packed] if packed else [])), key=lambda p: p.num_bins)
                cover = pattern_packing(model, pattern, time_limit=PACKING_SHARE * left, seed=seed, hint=best,
                                        extra=sorted(pool))
                packed = min((p for p in (packed, cover) if p is not None), key=lambda p: p.num_bins,
                             default=None)
            packed_bins = None if packed is None else packed.num_bins
            if packed is not None and packed.num_bins < upper:
                hints = (*hints, packed)
    cuts: list[tuple[int, ...]] = []
    rounds = 0
    while True:  # solve, let the oracle judge every GPU, learn a no-good per rejected GPU, re-solve
        rounds += 1
        left = deadline - time.perf_counter()
        out = (core(model, start, lower=lower, time_limit=MODEL_SHARE * left, seed=seed, hints=hints,
                    cuts=tuple(cuts), **core_options) if left > MIN_STEP_S
               else _no_time(model, start, hints, cuts, lower))
        bins = [np.array(sorted(b), dtype=np.int64) for b in out.packing.bins]
        verdicts = oracle.evaluate_many(problem, bins)
        rejected = [j for j, v in enumerate(verdicts) if not v.feasible]
        if not rejected:
            break
        model, new_cuts = _learn(problem, oracle, model, [bins[j] for j in rejected])
        cuts += new_cuts
        parts = [p for j, b in enumerate(bins) for p in
                 (_repair(problem, b, oracle) if j in rejected else [b])]
        repaired = Packing.from_bins(model, [p.tolist() for p in parts])
        if repaired is None or repaired.violates(cuts):
            repaired = first_fit_decreasing(model)  # always valid; cuts only bind sets of ≥ 2 items
            if repaired.violates(cuts):
                repaired = Packing.from_bins(model, [[i] for i in range(model.n_items)])
        late = time.perf_counter() > t0 + MODEL_SHARE * (deadline - t0)
        if rounds >= MAX_ROUNDS or late or repaired is None:
            break
        start, hints = repaired, ()
        if deadline - time.perf_counter() > MIN_STEP_S:  # a dive on the corrected model (tighter, same bound)
            dived = pattern_dive(model, columns=pattern.patterns if pattern is not None else (),
                                 time_limit=PACKING_SHARE * (deadline - time.perf_counter()))
            if dived is not None and dived.num_bins < repaired.num_bins and not dived.violates(cuts):
                hints = (dived,)
    final = Packing.from_bins(model, [b.tolist() for b in bins]) if not rejected else None
    bound_out, relaxed_report, relaxed_pattern = _relaxed_bound(lm, final, deadline, seed, core, core_options,
                                                                cuts)
    gpus: list[GpuPlan] = []
    for b, v in zip(bins, verdicts, strict=True):
        if v.feasible:
            gpus.append(v.gpu_plan([problem.ids[i] for i in b]))
            continue
        for part in _repair(problem, b, oracle):
            pv = oracle.evaluate(problem, part)
            gpus.append(pv.gpu_plan([problem.ids[i] for i in np.sort(part)]))
    lower = max(relaxed_report.best, relaxed_pattern.best if relaxed_pattern is not None else 0)
    if bound_out is not None and math.isfinite(bound_out.bound):
        lower = max(lower, int(math.ceil(bound_out.bound - 1e-6)))
    lower = min(lower, len(gpus))
    status, reason = out.status, None
    if status == "optimal" and len(gpus) > lower:
        status = "feasible"
        reason = (f"optimal for the linear model ({out.num_bins} GPUs); the relaxed model only proves "
                  f"{lower}")
    if rejected:
        status = "feasible"
        reason = (f"the oracle rejected {len(rejected)} of the linear model's {len(bins)} GPUs "
                  f"({', '.join(map(str, rejected[:5]))}); they were split (first fit, oracle-checked) into "
                  f"{len(gpus) - len(bins) + len(rejected)} GPUs")
    stats = SolverStats(
        optimal_wrt="linear model",
        model_status=out.status,
        model_objective=out.num_bins,
        model_bound=out.bound,
        model_gap=out.gap,
        relaxed_bound=None if bound_out is None else bound_out.bound,
        solver_status=out.solver_status,
        detail=out.detail,
        bounds=relaxed_report.to_dict(),
        model_bounds=report.to_dict(),
        pattern_lp=_pattern_summary(pattern),
        relaxed_pattern_lp=_pattern_summary(relaxed_pattern),
        classes=tuple({"max_lora_rank": c.max_kind, "max_adapters": c.max_items,
                       "capacity_tok_s": round(c.capacity_tok_s, 1), "max_loras": c.max_loras}
                      for c in model.classes),
        oracle_calls_for_model=lm.oracle_calls,
        warm_start={"ffd": ffd_bins, "heuristic": heur_gpus, "heuristic_admissible": hint is not None,
                    "patterns": packed_bins},
        oracle_rejected=tuple(rejected),
        rounds=rounds,
        no_goods=len(cuts),
    )
    return Result(solver=name, status=status, num_gpus=len(gpus), lower_bound=lower,
                  runtime_s=time.perf_counter() - t0, gpus=tuple(gpus), solver_bound=out.bound,
                  reason=reason, stats=stats)
