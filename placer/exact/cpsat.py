"""Exact packing with OR-Tools CP-SAT, and the ``cpsat`` placement solver.

Model (items sorted by weight, heaviest first; bins 0..U−1 with U from a feasible warm start):
x[i,j] item i in bin j (only j ≤ i: bins are ordered by their first item), z[j,k] bin j uses class k,
y[j] bin j is used = Σ_k z[j,k]; y[j] ≥ y[j+1];
Σ_i w_i x[i,j] ≤ Σ_k C_k z[j,k]; Σ_i x[i,j] ≤ Σ_k N_k z[j,k]; x[i,j] ≤ Σ_{k: R_k ≥ r_i} z[j,k];
Σ_j y[j] ≥ the combinatorial/LP lower bound; minimise Σ_j y[j]. The warm start is given as a full hint.
When the lower bound equals the warm start the model is not even built (optimal by bound).

The ``cpsat`` placement solver (:func:`solve_cpsat`) runs this on the linearised model through
:func:`placer.exact.benders.solve_exact` (model, warm start from our best heuristic, oracle check, repair).

Statuses: ``optimal`` (proven by CP-SAT or by bound = objective), ``timeout`` (time limit reached before a
proof; the best packing found is returned), ``feasible`` (not solved exactly for another reason, e.g. the
model is too large), ``infeasible`` (no packing exists).
"""

from __future__ import annotations

import math
import time
from typing import Any

from placer.exact.packing import (
    Packing,
    PackingModel,
    PackOutcome,
    canonical,
    sorted_view,
    warm_start,
)

MAX_ASSIGNMENT_VARS = 400_000  # beyond this the model is not built; the warm start is returned


def cpsat_pack(model: PackingModel, start: Packing, *, lower: int = 0, time_limit: float = 60.0,
               seed: int = 0, workers: int = 2, hints: tuple[Packing, ...] = (),
               formulation: str = "auto", cuts: tuple[tuple[int, ...], ...] = ()) -> PackOutcome:
    """Minimise the bins of ``model`` with CP-SAT, warm-started from the feasible packing ``start``.

    ``formulation``: ``assignment`` (the model above), ``arcflow`` (:mod:`placer.exact.arcflow`) or ``auto``
    (arc-flow for single-class models where it applies, i.e. classic bin packing; assignment otherwise).
    ``cuts``: sets of items that may not share a bin (no-goods learnt from the oracle; assignment only).
    ``start`` must satisfy them.
    """
    t0 = time.perf_counter()
    best_start, done = warm_start(model, start, hints, cuts, lower, t0)
    if done is not None:
        return done
    ub = best_start.num_bins
    from placer.exact.arcflow import arcflow_cpsat, use_arcflow

    if use_arcflow(model, formulation, cuts):
        return arcflow_cpsat(model, best_start, lower=lower, time_limit=time_limit, workers=workers,
                             seed=seed, t0=t0)
    n, n_cls = model.n_items, len(model.classes)
    if n * ub > MAX_ASSIGNMENT_VARS:
        return PackOutcome(best_start, "feasible", float(lower), time.perf_counter() - t0,
                           detail=f"model too large for CP-SAT ({n} items x {ub} bins); warm start returned",
                           solver_status="SKIPPED")
    from ortools.sat.python import cp_model

    order, inv = sorted_view(model)
    w = model.weights[order]
    kinds = model.kinds[order]
    cap, cnt, knd = model.class_arrays
    m = cp_model.CpModel()
    x: dict[tuple[int, int], Any] = {}
    for i in range(n):
        for j in range(min(i, ub - 1) + 1):
            x[i, j] = m.new_bool_var(f"x{i}_{j}")
    y = [m.new_bool_var(f"y{j}") for j in range(ub)]
    z = ([[m.new_bool_var(f"z{j}_{k}") for k in range(n_cls)] for j in range(ub)] if n_cls > 1
         else [[v] for v in y])
    for i in range(n):
        m.add_exactly_one(x[i, j] for j in range(min(i, ub - 1) + 1))
    for j in range(ub):
        members = [i for i in range(j, n)]
        if n_cls > 1:
            m.add(sum(z[j]) == y[j])
        m.add(sum(int(w[i]) * x[i, j] for i in members) <= sum(int(cap[k]) * z[j][k] for k in range(n_cls)))
        m.add(sum(x[i, j] for i in members) <= sum(int(cnt[k]) * z[j][k] for k in range(n_cls)))
        for i in members:
            allowed = [z[j][k] for k in range(n_cls) if knd[k] >= kinds[i]]
            if len(allowed) < n_cls:
                m.add(x[i, j] <= sum(allowed))
            m.add_implication(x[i, j], y[j])
        if j + 1 < ub:
            m.add_implication(y[j + 1], y[j])
        for cut in cuts:
            members_j = [x[int(inv[i]), j] for i in cut if int(inv[i]) >= j]
            if len(members_j) == len(cut):
                m.add(sum(members_j) <= len(cut) - 1)
    m.add(sum(y) >= max(lower, 1))
    m.minimize(sum(y))
    # Warm start: the best packing, relabelled to the sorted items and canonical bin order.
    hint = canonical(Packing(tuple(tuple(int(inv[i]) for i in b) for b in best_start.bins),
                             best_start.classes))
    where = {i: j for j, b in enumerate(hint.bins) for i in b}
    for (i, j), v in x.items():
        m.add_hint(v, 1 if where[i] == j else 0)
    for j in range(ub):
        used = j < hint.num_bins
        m.add_hint(y[j], 1 if used else 0)
        if n_cls > 1:
            for k in range(n_cls):
                m.add_hint(z[j][k], 1 if used and hint.classes[j] == k else 0)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.05, float(time_limit) - (time.perf_counter() - t0))
    solver.parameters.num_workers = max(1, int(workers))
    solver.parameters.random_seed = int(seed)
    solver.parameters.linearization_level = 2  # measured on trace-60 at 2.1 req/s/adapter (seed 2): 16 GPUs
    # found in 31 s; level 1 (symmetry level 4) was still at 17 after 40 s
    code = solver.solve(m)
    name = solver.status_name(code)
    runtime = time.perf_counter() - t0
    if code == cp_model.INFEASIBLE:  # cannot happen with a valid warm start; reported, not hidden
        return PackOutcome(best_start, "infeasible", math.inf, runtime, detail="CP-SAT: infeasible",
                           solver_status=name)
    bound = max(float(lower), float(solver.best_objective_bound))
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return PackOutcome(best_start, "timeout", float(lower), runtime,
                           detail="CP-SAT found no solution in time; warm start returned", solver_status=name)
    bins: list[list[int]] = [[] for _ in range(ub)]
    for (i, j), v in x.items():
        if solver.value(v):
            bins[j].append(int(order[i]))
    packing = Packing.from_bins(model, [b for b in bins if b])
    if packing is None or packing.num_bins > ub:  # pragma: no cover - a CP-SAT solution always satisfies it
        packing = best_start
    proven = code == cp_model.OPTIMAL or math.ceil(bound - 1e-6) >= packing.num_bins
    status = "optimal" if proven else "timeout"
    return PackOutcome(packing, status, bound if not proven else float(packing.num_bins), runtime,
                       detail=f"CP-SAT {name}: objective {packing.num_bins}, bound {bound:g}",
                       solver_status=name)


def solve_cpsat(problem: Any, *, time_limit: float, seed: int, oracle: Any) -> Any:
    """``cpsat``: the linearised placement model (:mod:`placer.exact.capacity`) solved by CP-SAT (2
    workers)."""
    from placer.exact.benders import solve_exact

    return solve_exact(problem, time_limit=time_limit, seed=seed, oracle=oracle, name=NAME, core=cpsat_pack,
                       workers=2)


NAME = "cpsat"
