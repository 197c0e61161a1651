"""The solver registry and :func:`solve`: the one entry point of every caller (CLI, benchmarks, users).

A solver is a plain function ``fn(problem, *, time_limit, seed, oracle) -> Result``:

- ``problem``: a validated :class:`twin.spec.Instance` (the placer calls it *Problem*);
- ``time_limit``: seconds of wall time the solver may use (heuristics may finish far sooner);
- ``seed``: the only source of randomness (``numpy.random.default_rng(seed)``); same seed, same plan;
- ``oracle``: the :class:`placer.oracle.Oracle` that decides whether a set of adapters fits one GPU and with
  which ``max_loras``; a solver must only build GPUs that this oracle calls feasible.

:data:`SOLVERS` maps names to functions and is the CLI's list of choices: the built-in solvers are listed
explicitly below (a missing module is an import error, never a silently absent solver); an embedding
application adds its own with :func:`register_solver`.

:func:`solve` adds what no solver should compute for itself: the default oracle, the infeasibility check (an
adapter that fits on no GPU alone), the lower bound (:func:`placer.exact.bounds.lower_bound`),
the wall time and the instance/oracle names. Solvers never grade themselves: :mod:`placer.check.evaluate`
does.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

from placer.context import Context
from placer.exact import bounds, cpsat, ilp
from placer.heuristics import baselines, ffd_bisect, greedy_paper
from placer.oracle import Oracle, make_oracle
from placer.result import OPTIMAL_WRT, Result, plural
from placer.stats import SolverStats
from twin.errors import InputError
from twin.spec import Instance


class SolverFn(Protocol):
    """The shape of every solver."""

    def __call__(self, problem: Instance, *, time_limit: float, seed: int, oracle: Oracle) -> Result: ...


DEFAULT_SOLVER = "ffd-bisect"
DEFAULT_TIME_LIMIT = 60.0

# The built-in solvers, listed explicitly: a module that is missing is an import error, never a missing
# solver.
_BUILTIN: dict[str, SolverFn] = {
    ffd_bisect.NAME: ffd_bisect.solve_ffd_bisect,      # our best heuristic (the default)
    greedy_paper.NAME: greedy_paper.solve_greedy_paper,  # the papers' greedy
    **baselines.BASELINES,                             # loraserve, dlora, least-loaded, round-robin
    cpsat.NAME: cpsat.solve_cpsat,                     # exact (OR-Tools CP-SAT)
    ilp.NAME: ilp.solve_ilp,                           # exact (PuLP + CBC)
}
_SOLVERS: dict[str, SolverFn] = dict(_BUILTIN)
SOLVERS: Mapping[str, SolverFn] = MappingProxyType(_SOLVERS)  # read-only view; add with register_solver


def register_solver(name: str, fn: Callable[..., Result], *, replace: bool = False) -> None:
    """Add a user solver ``fn`` to :data:`SOLVERS` under ``name`` (``replace=True`` to override one)."""
    if not name or not isinstance(name, str):
        raise ValueError(f"solver name must be a non-empty string (got {name!r})")
    old = _SOLVERS.get(name)
    if old is not None and old is not fn and not replace:
        raise ValueError(f"solver {name!r} is already registered")
    _SOLVERS[name] = fn


def solver_names() -> tuple[str, ...]:
    """Registered solver names, the default first."""
    names = sorted(SOLVERS)
    if DEFAULT_SOLVER in names:
        names.remove(DEFAULT_SOLVER)
        names.insert(0, DEFAULT_SOLVER)
    return tuple(names)


def get_solver(name: str) -> SolverFn:
    """The solver registered as ``name``; :class:`InputError` naming the known ones otherwise."""
    try:
        return SOLVERS[name]
    except KeyError:
        raise InputError(f"unknown solver (got {name!r}; known: {', '.join(solver_names())})",
                         field="solver", value=name) from None


def default_oracle(problem: Instance, kind: str = "surrogate", **options: Any) -> Oracle:
    """The oracle :func:`solve` uses when none is given: ``surrogate`` (default) or ``twin``."""
    return make_oracle(problem, kind, **options)


def lower_bound(problem: Instance, oracle: Oracle) -> int:
    """The best lower bound on the GPU count we can compute (at least 1)."""
    return max(1, int(bounds.lower_bound(problem, oracle)))


def solve(problem: Instance, solver: str = DEFAULT_SOLVER, *, time_limit: float = DEFAULT_TIME_LIMIT,
          seed: int = 0, oracle: Oracle | None = None, context: Context | None = None) -> Result:
    """Place the adapters of ``problem`` on as few GPUs as possible with the named solver.

    Returns a frozen :class:`Result`. A problem with an adapter that fits on no GPU even alone gets status
    ``infeasible`` and a ``reason`` naming that adapter (no exception). ``lower_bound`` is the best of the
    bound module's (the same routine for every solver) and the solver's own; the status becomes ``optimal``
    when the plan meets it, optimal for the linear model (``extra["optimal_wrt"]``, ``Result.optimal_wrt``).
    ``context``: the twin profile and surrogate models (default: the shipped ones) of the default oracle; an
    ``oracle`` given explicitly carries its own.
    """
    fn = get_solver(solver)
    if time_limit is None or not time_limit > 0:
        raise InputError(f"time limit must be positive (got {time_limit!r})", field="time_limit",
                         value=time_limit)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(f"must be a non-negative integer (got {seed!r})", field="seed", value=seed)
    oracle = oracle if oracle is not None else default_oracle(problem, context=context)
    start = time.perf_counter()
    bad = oracle.unplaceable(problem)
    if bad:
        a = problem.adapters[bad[0]]
        verdict = oracle.evaluate(problem, [bad[0]])
        reason = (f"adapter {a.id!r} (rank {a.rank}, {a.rate_rps:g} req/s) fits on no GPU even alone: "
                  f"{verdict.reason}"
                  + (f" (and {plural(len(bad) - 1, 'more adapter')})" if len(bad) > 1 else ""))
        return Result(solver=solver, status="infeasible", num_gpus=0, lower_bound=0,
                      runtime_s=time.perf_counter() - start, gpus=(), instance=problem.name,
                      model=problem.model, gpu=problem.gpu, oracle=oracle.name, reason=reason,
                      criterion=problem.slo.describe(), slo=problem.slo.to_dict(),
                      stats=SolverStats(unplaceable=tuple(problem.adapters[i].id for i in bad)))
    left = max(0.01, float(time_limit) - (time.perf_counter() - start))  # the pre-check counts against it
    result = fn(problem, time_limit=left, seed=int(seed), oracle=oracle)
    runtime = time.perf_counter() - start  # pre-check + solver; the lower bound is timed on its own
    if result.status == "infeasible":
        return result.replace(runtime_s=runtime, instance=problem.name, model=problem.model,
                              gpu=problem.gpu, oracle=oracle.name, criterion=problem.slo.describe(),
                              slo=problem.slo.to_dict())
    bound_start = time.perf_counter()
    lb = max(1, int(result.lower_bound or 0))  # any problem needs one GPU
    if result.num_gpus > 1:  # every solver gets the same bound routine (the exact solvers' own start)
        lb = max(lower_bound(problem, oracle), lb)
    stats = result.stats.replace(bound_s=round(time.perf_counter() - bound_start, 4))
    if result.num_gpus and lb > result.num_gpus:  # the bound and the solver's oracle disagree: say so
        stats = stats.replace(bound_warning=f"lower bound {lb} exceeds the plan's {result.num_gpus} GPUs")
        lb = result.num_gpus
    status = result.status
    if status == "feasible" and result.num_gpus == lb:
        status = "optimal"
    if status == "optimal":
        stats = stats.replace(optimal_wrt=stats.optimal_wrt or OPTIMAL_WRT)
    return result.replace(status=status, lower_bound=lb, runtime_s=runtime, instance=problem.name,
                          model=problem.model, gpu=problem.gpu, oracle=oracle.name, stats=stats,
                          criterion=problem.slo.describe(), slo=problem.slo.to_dict())
