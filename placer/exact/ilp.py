"""Exact packing as a MILP through PuLP + CBC, and the ``ilp`` placement solver.

The same assignment model as :mod:`placer.exact.cpsat` (x[i,j] only for j ≤ i over items sorted by weight,
class choice z[j,k], y[j] = Σ_k z[j,k], y[j] ≥ y[j+1], capacity, count and rank constraints, Σ y ≥ the
lower bound), given to CBC with the warm start as a MIP start. Single-class problems whose count limit
cannot bind (classic bin packing) use the arc-flow formulation instead (:mod:`placer.exact.arcflow`).

Honesty about CBC: PuLP reports "Optimal" (status 1) for a run that stopped on its time limit with a
solution; we read ``sol_status`` (1 = proven optimal, 2 = integer feasible only) and CBC's own log
("Result - ...", "Lower bound: ...") for the status and the best bound, and fall back to the model bound.
Only PuLP's bundled CBC is used (never highspy: it breaks ortools in the same process).
"""

from __future__ import annotations

import time
from typing import Any

from placer.exact.cbc import CBC_OVERHEAD_S, finish, quiet_pulp, run_cbc
from placer.exact.packing import Packing, PackingModel, PackOutcome, canonical, warm_start

NAME = "ilp"
MAX_ASSIGNMENT_VARS = 200_000


def ilp_pack(model: PackingModel, start: Packing, *, lower: int = 0, time_limit: float = 60.0, seed: int = 0,
             workers: int = 2, hints: tuple[Packing, ...] = (), formulation: str = "auto",
             cuts: tuple[tuple[int, ...], ...] = ()) -> PackOutcome:
    """Minimise the bins of ``model`` with CBC, warm-started from the feasible packing ``start``.

    ``formulation``: ``assignment``, ``arcflow`` or ``auto`` (arc-flow where it applies).
    """
    with quiet_pulp():
        return _ilp_pack(model, start, lower=lower, time_limit=time_limit, workers=workers, hints=hints,
                         formulation=formulation, cuts=cuts)


def _ilp_pack(model: PackingModel, start: Packing, *, lower: int, time_limit: float, workers: int,
              hints: tuple[Packing, ...], formulation: str,
              cuts: tuple[tuple[int, ...], ...]) -> PackOutcome:
    t0 = time.perf_counter()
    best, done = warm_start(model, start, hints, cuts, lower, t0)
    if done is not None:
        return done
    ub = best.num_bins
    from placer.exact.arcflow import use_arcflow

    if use_arcflow(model, formulation, cuts):
        from placer.exact.arcflow import arcflow_ilp

        return arcflow_ilp(model, best, lower=lower, time_limit=time_limit, workers=workers, t0=t0)
    n, n_cls = model.n_items, len(model.classes)
    if n * ub > MAX_ASSIGNMENT_VARS:
        return PackOutcome(best, "feasible", float(lower), time.perf_counter() - t0,
                           detail=f"model too large for CBC ({n} items x {ub} bins); warm start returned",
                           solver_status="SKIPPED")
    import pulp

    from placer.exact.packing import sorted_view

    order, inv = sorted_view(model)
    w, kinds = model.weights[order], model.kinds[order]
    cap, cnt, knd = model.class_arrays
    prob = pulp.LpProblem("placement", pulp.LpMinimize)
    x = {(i, j): pulp.LpVariable(f"x_{i}_{j}", cat="Binary")
         for i in range(n) for j in range(min(i, ub - 1) + 1)}
    y = [pulp.LpVariable(f"y_{j}", cat="Binary") for j in range(ub)]
    z = [[pulp.LpVariable(f"z_{j}_{k}", cat="Binary") for k in range(n_cls)] for j in range(ub)]
    prob += pulp.lpSum(y)
    for i in range(n):
        prob += pulp.lpSum(x[i, j] for j in range(min(i, ub - 1) + 1)) == 1
    for j in range(ub):
        members = range(j, n)
        prob += pulp.lpSum(z[j]) == y[j]
        prob += pulp.lpSum(int(w[i]) * x[i, j] for i in members) <= pulp.lpSum(
            int(cap[k]) * z[j][k] for k in range(n_cls))
        prob += pulp.lpSum(x[i, j] for i in members) <= pulp.lpSum(
            int(cnt[k]) * z[j][k] for k in range(n_cls))
        for i in members:
            allowed = [z[j][k] for k in range(n_cls) if knd[k] >= kinds[i]]
            prob += x[i, j] <= pulp.lpSum(allowed)
        if j + 1 < ub:
            prob += y[j + 1] <= y[j]
        for cut in cuts:
            members_j = [x[int(inv[i]), j] for i in cut if int(inv[i]) >= j]
            if len(members_j) == len(cut):
                prob += pulp.lpSum(members_j) <= len(cut) - 1
    prob += pulp.lpSum(y) >= max(1, lower)
    hint = canonical(Packing(tuple(tuple(int(inv[i]) for i in b) for b in best.bins), best.classes))
    where = {i: j for j, b in enumerate(hint.bins) for i in b}
    for (i, j), v in x.items():
        v.setInitialValue(1 if where[i] == j else 0)
    for j in range(ub):
        y[j].setInitialValue(1 if j < hint.num_bins else 0)
        for k in range(n_cls):
            z[j][k].setInitialValue(1 if j < hint.num_bins and hint.classes[j] == k else 0)
    remaining = time_limit - (time.perf_counter() - t0) - CBC_OVERHEAD_S
    if remaining < CBC_OVERHEAD_S:  # no time to write, start and read back a CBC run
        return PackOutcome(best, "timeout", float(lower), time.perf_counter() - t0, solver_status="SKIPPED",
                           detail="no time left for CBC; warm start returned")
    sol_status, cbc_bound, result = run_cbc(prob, remaining, workers, warm=True)
    runtime = time.perf_counter() - t0
    if sol_status not in (1, 2):
        status = "infeasible" if sol_status == -1 else "timeout"
        return PackOutcome(best, status, float(lower), runtime,
                           detail=f"CBC: {result or pulp.LpSolution[sol_status]}; warm start returned",
                           solver_status=str(pulp.LpSolution[sol_status]))
    bins: list[list[int]] = [[] for _ in range(ub)]
    for (i, j), v in x.items():
        if (v.value() or 0) > 0.5:
            bins[j].append(int(order[i]))
    packing = Packing.from_bins(model, [b for b in bins if b])
    if packing is None or not packing.is_valid(model) or packing.num_bins > best.num_bins:
        packing = best
    return finish(packing, lower, sol_status, cbc_bound, result, runtime)


def solve_ilp(problem: Any, *, time_limit: float, seed: int, oracle: Any) -> Any:
    """``ilp``: the linearised placement model (:mod:`placer.exact.capacity`) solved as a MILP by CBC."""
    from placer.exact.benders import solve_exact

    return solve_exact(problem, time_limit=time_limit, seed=seed, oracle=oracle, name=NAME, core=ilp_pack,
                       workers=2)
