"""The fewest adapter moves, exactly, on the linearised model: a yardstick for :func:`replan` on small
instances (≤ :data:`MAX_ADAPTERS` adapters).

CP-SAT over the capacity classes of :func:`placer.exact.capacity.build_linear_model`: bins are the old plan's
GPUs (by id) plus ``extra`` new ones; x[i,j] adapter i on bin j, z[j,k] bin j uses class k (capacity,
adapter count, max rank), y[j] bin j used. Lexicographic: first the fewest GPUs (or at most ``max_gpus``),
then, with that count fixed as an upper bound, the fewest moves Σ_i [adapter i served before and not on its
old GPU]. Exact w.r.t. the linear model, not the oracle (the model's capacities are measured on
representative mixes), so it is a reference figure, not a plan to deploy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from placer.dynamic.diff import gpu_ids
from placer.exact.capacity import build_linear_model
from placer.oracle import Oracle
from placer.result import Result
from twin.errors import InputError
from twin.spec import Instance

MAX_ADAPTERS = 40


@dataclass(frozen=True)
class ExactMoves:
    """The optimum of the lexicographic model: GPUs, moves, and whether each stage was proven optimal."""

    num_gpus: int
    moves: int
    gpus_optimal: bool
    moves_optimal: bool
    runtime_s: float
    assignment: dict[str, int]  # adapter -> GPU id (fresh ids for new bins)

    def to_dict(self) -> dict[str, Any]:
        return {"num_gpus": self.num_gpus, "moves": self.moves, "gpus_optimal": self.gpus_optimal,
                "moves_optimal": self.moves_optimal, "runtime_s": round(self.runtime_s, 4)}


def exact_moves(problem: Instance, old: Result, oracle: Oracle, *, max_gpus: int | None = None,
                extra: int | None = None, time_limit: float = 60.0, seed: int = 0) -> ExactMoves:
    """Fewest GPUs (at most ``max_gpus`` if given), then fewest moves from ``old``, on the linear model."""
    from ortools.sat.python import cp_model

    if problem.n_adapters > MAX_ADAPTERS:
        raise InputError(f"the exact move model is for at most {MAX_ADAPTERS} adapters "
                         f"(got {problem.n_adapters})", field="adapters", value=problem.n_adapters)
    t0 = time.perf_counter()
    model = build_linear_model(problem, oracle)
    pk = model.packing
    cap, cnt, knd = pk.class_arrays
    w, kinds = pk.weights, pk.kinds
    old_ids = gpu_ids(old)
    index = problem.index
    home = {index[a]: gid for gid, g in zip(old_ids, old.gpus, strict=True) for a in g.adapters if a in index}
    n = problem.n_adapters
    n_new = extra if extra is not None else n
    fresh = max(old_ids, default=-1) + 1
    bins = list(old_ids) + [fresh + t for t in range(n_new)]
    col = {gid: j for j, gid in enumerate(bins)}
    m = cp_model.CpModel()
    x = {(i, j): m.new_bool_var(f"x{i}_{j}") for i in range(n) for j in range(len(bins))}
    z = [[m.new_bool_var(f"z{j}_{k}") for k in range(len(cap))] for j in range(len(bins))]
    y = [m.new_bool_var(f"y{j}") for j in range(len(bins))]
    for i in range(n):
        m.add_exactly_one(x[i, j] for j in range(len(bins)))
    for j in range(len(bins)):
        m.add(sum(z[j]) == y[j])
        load = sum(int(w[i]) * x[i, j] for i in range(n))
        m.add(load <= sum(int(cap[k]) * z[j][k] for k in range(len(cap))))
        m.add(sum(x[i, j] for i in range(n)) <= sum(int(cnt[k]) * z[j][k] for k in range(len(cap))))
        for i in range(n):
            m.add_implication(x[i, j], y[j])
            m.add(x[i, j] <= sum(z[j][k] for k in range(len(cap)) if knd[k] >= kinds[i]))
    for t in range(len(old_ids), len(bins) - 1):  # new bins are interchangeable: use them in order
        m.add_implication(y[t + 1], y[t])
    stays = [x[i, col[h]] for i, h in home.items()]
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 2
    solver.parameters.random_seed = int(seed)
    if max_gpus is None:
        m.minimize(sum(y))
        solver.parameters.max_time_in_seconds = max(0.1, time_limit / 2)
        code = solver.solve(m)
        if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            raise RuntimeError(f"CP-SAT found no packing ({solver.status_name(code)})")
        gpus, gpus_opt = int(round(solver.objective_value)), code == cp_model.OPTIMAL
    else:
        gpus, gpus_opt = int(max_gpus), False
    m.add(sum(y) <= gpus)
    m.clear_objective()
    m.maximize(sum(stays))
    solver.parameters.max_time_in_seconds = max(0.1, time_limit - (time.perf_counter() - t0))
    code = solver.solve(m)
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise RuntimeError(f"CP-SAT found no packing with {gpus} GPUs ({solver.status_name(code)})")
    assignment = {problem.ids[i]: bins[j] for (i, j), v in x.items() if solver.value(v)}
    moves = sum(1 for i, h in home.items() if assignment[problem.ids[i]] != h)
    return ExactMoves(gpus, moves, gpus_opt, code == cp_model.OPTIMAL, time.perf_counter() - t0, assignment)
