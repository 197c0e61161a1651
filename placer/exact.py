"""Glue shared by the exact placement solvers (``cpsat``, ``ilp``): model, warm start, oracle check, repair.

1. Build the linearised model (:mod:`placer.linear`) and its bounds (:mod:`placer.bounds`).
2. Warm start: the best of first/best-fit decreasing on the model and our best heuristic's plan (when that
   plan is admissible in the model); the FFD packing gives the upper bound on the number of GPUs.
3. Solve the model with the given core (CP-SAT or CBC), time-limited.
4. Every GPU of the model's optimum goes back to the oracle (:meth:`Oracle.evaluate_many`, the same judgement
   the one evaluator applies). A GPU the oracle rejects is reported (``extra.oracle_rejected``) and repaired
   by splitting it with first fit with oracle checks; the status is then ``feasible``, never
   ``optimal``, and ``reason`` says why.

``status`` ``optimal`` means optimal w.r.t. the linearised model (``extra.optimal_wrt``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from placer.bounds import model_bounds
from placer.oracle import Oracle
from placer.packing import Packing, PackingModel, PackOutcome, first_fit_decreasing
from placer.result import GpuPlan, Result
from twin.errors import InfeasibleError
from twin.spec import Instance

Core = Callable[..., PackOutcome]
HEURISTIC_SHARE = 0.2  # of the time limit, for the warm-start heuristic (at most HEURISTIC_MAX_S)
HEURISTIC_MAX_S = 10.0


def heuristic_packing(problem: Instance, model: PackingModel, oracle: Oracle, time_limit: float,
                      seed: int) -> tuple[Packing | None, int | None]:
    """Our best heuristic's plan as a packing of the model (None if inadmissible), and its GPU count."""
    from placer.solve import DEFAULT_SOLVER, SOLVERS

    fn = SOLVERS.get(DEFAULT_SOLVER)
    if fn is None:
        return None, None
    res = fn(problem, time_limit=time_limit, seed=seed, oracle=oracle)
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
        from placer.linear import build_linear_model

        lm = build_linear_model(problem, oracle)
    except InfeasibleError as exc:
        return Result(solver=name, status="infeasible", num_gpus=0, lower_bound=0,
                      runtime_s=time.perf_counter() - t0, gpus=(), reason=str(exc))
    model = lm.packing
    report = model_bounds(model)
    start = first_fit_decreasing(model)
    budget = min(HEURISTIC_SHARE * time_limit, HEURISTIC_MAX_S)
    hint, heur_gpus = heuristic_packing(problem, model, oracle, budget, seed)
    hints = (hint,) if hint is not None else ()
    remaining = max(0.5, time_limit - (time.perf_counter() - t0))
    out = core(model, start, lower=report.best, time_limit=remaining, seed=seed, hints=hints, **core_options)
    bins = [np.array(sorted(b), dtype=np.int64) for b in out.packing.bins]
    verdicts = oracle.evaluate_many(problem, bins)
    rejected = [j for j, v in enumerate(verdicts) if not v.feasible]
    gpus: list[GpuPlan] = []
    for b, v in zip(bins, verdicts, strict=True):
        if v.feasible:
            gpus.append(v.gpu_plan([problem.ids[i] for i in b]))
            continue
        for part in _repair(problem, b, oracle):
            pv = oracle.evaluate(problem, part)
            gpus.append(pv.gpu_plan([problem.ids[i] for i in np.sort(part)]))
    model_lb = max(report.best, int(math.ceil(out.bound - 1e-6)) if math.isfinite(out.bound) else 0)
    status, reason = out.status, None
    if rejected:
        status = "feasible"
        reason = (f"the oracle rejected {len(rejected)} of the linear model's {len(bins)} GPUs "
                  f"({', '.join(map(str, rejected[:5]))}); they were split (first fit, oracle-checked) into "
                  f"{len(gpus) - len(bins) + len(rejected)} GPUs")
    extra = {
        "optimal_wrt": "linear model",
        "model_objective": out.num_bins,
        "model_bound": out.bound,
        "model_gap": out.gap,
        "solver_status": out.solver_status,
        "detail": out.detail,
        "bounds": report.to_dict(),
        "classes": [{"max_lora_rank": c.max_kind, "max_adapters": c.max_items,
                     "capacity_tok_s": round(c.capacity_tok_s, 1), "max_loras": c.max_loras}
                    for c in model.classes],
        "oracle_calls_for_model": lm.oracle_calls,
        "warm_start": {"ffd": start.num_bins, "heuristic": heur_gpus,
                       "heuristic_admissible": hint is not None},
        "oracle_rejected": rejected,
    }
    return Result(solver=name, status=status, num_gpus=len(gpus), lower_bound=min(model_lb, len(gpus)),
                  runtime_s=time.perf_counter() - t0, gpus=tuple(gpus), solver_bound=out.bound,
                  reason=reason, extra=extra)
