"""Arc-flow formulation (Valério de Carvalho, 1999) for single-class packing (classic 1-D bin packing).

Nodes are partial bin loads 0..C; an arc (u, u + s_t) packs one item of size s_t. Arcs are generated with
items in decreasing size order (each bin is a path whose item sizes never increase, with at most d_t items
of size t), which removes most symmetric paths. Every node has a loss arc to the sink. A bin is a unit of
flow from 0 to the sink; minimise the flow out of 0 subject to covering every size's demand (≥ d_t).
Its LP bound is very strong (equal to the optimum on almost all known instances), which is what makes
perfect packings such as Falkenauer's triplets easy for a MILP solver.

Applicable when there is one bin class, every item is admitted by its kind limit, the count limit cannot
bind (no bin of lightest items reaches it) and the graph is small (≤ :data:`MAX_ARCS` arcs).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from placer.exact.packing import Packing, PackingModel, PackOutcome, max_items_that_fit

MAX_ARCS = 300_000


@dataclass(frozen=True)
class ArcGraph:
    """Sizes (decreasing), demands, nodes, and item arcs (tail, head, size index)."""

    capacity: int
    sizes: tuple[int, ...]
    demand: tuple[int, ...]
    nodes: tuple[int, ...]
    arcs: tuple[tuple[int, int, int], ...]


def _incidence(graph: Any, flows: dict[Any, Any]) -> tuple[dict[int, list[Any]], dict[int, list[Any]],
                                                            dict[int, list[Any]]]:
    """The flow variables entering each node, leaving each node, and carrying each item size."""
    inflow: dict[int, list[Any]] = {u: [] for u in graph.nodes}
    outflow: dict[int, list[Any]] = {u: [] for u in graph.nodes}
    by_size: dict[int, list[Any]] = {}
    for a, v in flows.items():
        outflow[a[0]].append(v)
        inflow[a[1]].append(v)
        by_size.setdefault(a[2], []).append(v)
    return inflow, outflow, by_size


def use_arcflow(model: PackingModel, formulation: str, cuts: Sequence[tuple[int, ...]]) -> bool:
    """Whether a solver asked for ``formulation`` (assignment | arcflow | auto) should use arc-flow here."""
    return not cuts and (formulation == "arcflow" or (formulation == "auto" and arcflow_applicable(model)))


def build_graph(weights: np.ndarray, capacity: int, max_arcs: int = MAX_ARCS) -> ArcGraph | None:
    """The reduced arc-flow graph, or None when it would exceed ``max_arcs`` arcs."""
    count = Counter(int(x) for x in weights)
    sizes = sorted(count, reverse=True)
    reach = {0}
    arcs: set[tuple[int, int, int]] = set()
    for t, s in enumerate(sizes):
        new: set[int] = set()
        for u in sorted(reach, reverse=True):
            v = u
            for _ in range(count[s]):
                if v + s > capacity:
                    break
                arcs.add((v, v + s, t))
                v += s
                new.add(v)
            if len(arcs) > max_arcs:
                return None
        reach |= new
    return ArcGraph(capacity, tuple(sizes), tuple(count[s] for s in sizes), tuple(sorted(reach)),
                    tuple(sorted(arcs)))


def arcflow_applicable(model: PackingModel) -> bool:
    """One class, all kinds admitted, count limit never binding."""
    if len(model.classes) != 1:
        return False
    c = model.classes[0]
    return bool((model.kinds <= c.max_kind).all()) and \
        c.max_items >= max_items_that_fit(model.weights, c.capacity)


def packing_flows(graph: ArcGraph, model: PackingModel,
                  packing: Packing) -> tuple[dict[Any, int], dict[int, int]]:
    """Arc and loss-arc flows of a packing (each bin a path of decreasing sizes)."""
    index = {s: t for t, s in enumerate(graph.sizes)}
    flow: Counter[Any] = Counter()
    loss: Counter[int] = Counter()
    for b in packing.bins:
        u = 0
        for s in sorted((int(model.weights[i]) for i in b), reverse=True):
            flow[(u, u + s, index[s])] += 1
            u += s
        loss[u] += 1
    return dict(flow), dict(loss)


def decode(graph: ArcGraph, model: PackingModel, flow: dict[Any, int],
           loss: dict[int, int]) -> Packing | None:
    """Decompose integer flows into bins and give each bin real items (surplus coverage dropped)."""
    out: dict[int, list[tuple[tuple[int, int, int], int]]] = {}
    for a, f in flow.items():
        if f > 0:
            out.setdefault(a[0], []).append((a, f))
    rem = {a: f for a, f in flow.items() if f > 0}
    rem_loss = {u: f for u, f in loss.items() if f > 0}
    pools: dict[int, list[int]] = {}
    for i in np.argsort(-model.weights, kind="stable"):
        pools.setdefault(int(model.weights[i]), []).append(int(i))
    bins: list[list[int]] = []
    while True:  # any positive arc keeps the remaining flow conserved; a path ends where no item arc is left
        u, path = 0, []
        while True:
            nxt = next((a for a, _ in out.get(u, ()) if rem.get(a, 0) > 0), None)
            if nxt is None:
                break
            rem[nxt] -= 1
            path.append(nxt)
            u = nxt[1]
        if not path:
            break
        rem_loss[u] = rem_loss.get(u, 0) - 1
        items = [pools[graph.sizes[a[2]]].pop() for a in path if pools.get(graph.sizes[a[2]])]
        if items:
            bins.append(items)
    if any(pools.values()):
        return None
    return Packing.from_bins(model, bins)


def arcflow_ilp(model: PackingModel, start: Packing, *, lower: int, time_limit: float, workers: int,
                t0: float | None = None) -> PackOutcome:
    """The arc-flow MILP through PuLP + CBC, MIP-started from ``start``."""
    import pulp

    from placer.exact.cbc import CBC_OVERHEAD_S, finish, run_cbc

    t0 = time.perf_counter() if t0 is None else t0
    cls = model.classes[0]
    graph = build_graph(model.weights, cls.capacity)
    if graph is None:
        return PackOutcome(start, "feasible", float(lower), time.perf_counter() - t0,
                           detail="arc-flow graph too large; warm start returned", solver_status="SKIPPED")
    ub = start.num_bins
    prob = pulp.LpProblem("arcflow", pulp.LpMinimize)
    f = {a: pulp.LpVariable(f"f_{k}", 0, min(graph.demand[a[2]], ub), cat="Integer")
         for k, a in enumerate(graph.arcs)}
    loss = {u: pulp.LpVariable(f"l_{u}", 0, ub, cat="Integer") for u in graph.nodes if u > 0}
    z = pulp.LpVariable("z", max(1, lower), ub, cat="Integer")
    prob += z
    inflow, outflow, by_size = _incidence(graph, f)
    prob += pulp.lpSum(outflow[0]) == z
    for u in graph.nodes:
        if u > 0:
            prob += pulp.lpSum(inflow[u]) == pulp.lpSum(outflow[u]) + loss[u]
    for t, d in enumerate(graph.demand):
        prob += pulp.lpSum(by_size[t]) >= d
    fl, ls = packing_flows(graph, model, start)
    for a, v in f.items():
        v.setInitialValue(fl.get(a, 0))
    for u, v in loss.items():
        v.setInitialValue(ls.get(u, 0))
    z.setInitialValue(ub)
    sol_status, cbc_bound, result = run_cbc(prob, time_limit - (time.perf_counter() - t0) - CBC_OVERHEAD_S,
                                            workers, warm=True)
    runtime = time.perf_counter() - t0
    packing = None
    if sol_status in (1, 2):
        packing = decode(graph, model, {a: round(v.value() or 0) for a, v in f.items()},
                         {u: round(v.value() or 0) for u, v in loss.items()})
    if packing is None or packing.num_bins > ub:
        return PackOutcome(start, "timeout", float(lower), runtime,
                           detail=f"CBC arc-flow: {result or sol_status}; warm start returned",
                           solver_status=str(sol_status))
    return finish(packing, lower, sol_status, cbc_bound, result, runtime)


def arcflow_cpsat(model: PackingModel, start: Packing, *, lower: int, time_limit: float, workers: int,
                  seed: int = 0, t0: float | None = None) -> PackOutcome:
    """The arc-flow model through CP-SAT, hinted with ``start``: full linearization (level 2) and, with two or
    more workers, the ``max_lp`` and ``quick_restart`` subsolvers (measured: triplets n = 120 in 10–15 s
    where the default portfolio does not finish in 60 s)."""
    from ortools.sat.python import cp_model

    t0 = time.perf_counter() if t0 is None else t0
    graph = build_graph(model.weights, model.classes[0].capacity)
    if graph is None:
        return PackOutcome(start, "feasible", float(lower), time.perf_counter() - t0,
                           detail="arc-flow graph too large; warm start returned", solver_status="SKIPPED")
    ub = start.num_bins
    m = cp_model.CpModel()
    f = {a: m.new_int_var(0, min(graph.demand[a[2]], ub), f"f{k}") for k, a in enumerate(graph.arcs)}
    loss = {u: m.new_int_var(0, ub, f"l{u}") for u in graph.nodes if u > 0}
    z = m.new_int_var(max(1, lower), ub, "z")
    inflow, outflow, by_size = _incidence(graph, f)
    m.add(sum(outflow[0]) == z)
    for u in graph.nodes:
        if u > 0:
            m.add(sum(inflow[u]) == sum(outflow[u]) + loss[u])
    for t, d in enumerate(graph.demand):
        m.add(sum(by_size[t]) >= d)
    m.minimize(z)
    fl, ls = packing_flows(graph, model, start)
    for a, v in f.items():
        m.add_hint(v, fl.get(a, 0))
    for u, v in loss.items():
        m.add_hint(v, ls.get(u, 0))
    m.add_hint(z, ub)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.05, time_limit - (time.perf_counter() - t0))
    solver.parameters.num_workers = max(1, int(workers))
    solver.parameters.random_seed = int(seed)
    solver.parameters.linearization_level = 2
    if workers >= 2:  # LP-driven workers: the arc-flow LP bound is tight, the rest is finding the packing
        for name in ("max_lp", "quick_restart"):
            solver.parameters.subsolvers.append(name)
    code = solver.solve(m)
    name = solver.status_name(code)
    runtime = time.perf_counter() - t0
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return PackOutcome(start, "timeout", float(lower), runtime,
                           detail=f"CP-SAT arc-flow {name}; warm start returned", solver_status=name)
    packing = decode(graph, model, {a: int(solver.value(v)) for a, v in f.items()},
                     {u: int(solver.value(v)) for u, v in loss.items()})
    bound = max(float(lower), float(solver.best_objective_bound))
    if packing is None or packing.num_bins > ub:
        packing = start
    proven = code == cp_model.OPTIMAL or int(np.ceil(bound - 1e-6)) >= packing.num_bins
    return PackOutcome(packing, "optimal" if proven else "timeout",
                       float(packing.num_bins) if proven else bound, runtime,
                       detail=f"CP-SAT arc-flow {name}: objective {packing.num_bins}, bound {bound:g}",
                       solver_status=name)
