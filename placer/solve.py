"""The solver registry and :func:`solve`: the one entry point of every caller (CLI, benchmarks, users).

A solver is a plain function ``fn(problem, *, time_limit, seed, oracle) -> Result``:

- ``problem``: a validated :class:`twin.spec.Instance` (the placer calls it *Problem*);
- ``time_limit``: seconds of wall time the solver may use (heuristics may finish far sooner);
- ``seed``: the only source of randomness (``numpy.random.default_rng(seed)``); same seed, same plan;
- ``oracle``: the :class:`placer.oracle.Oracle` that decides whether a set of adapters fits one GPU and with
  which ``max_loras``; a solver must only build GPUs that this oracle calls feasible.

Solvers register themselves with :func:`register_solver` when their module is imported; :data:`SOLVERS` maps
names to functions and is the CLI's list of choices. Modules listed in :data:`PLUGIN_MODULES` are imported
the first time :data:`SOLVERS` is read, so it is always complete, whatever was imported first. A plugin module
should import heavy dependencies (ortools, pulp) inside its functions, not at module level.

:func:`solve` adds what no solver should compute for itself: the default oracle, the infeasibility check (an
adapter that fits on no GPU alone), the lower bound (``placer.bounds.lower_bound`` when that module exists),
the wall time and the instance/oracle names. Solvers never grade themselves: :mod:`placer.evaluate` does.
"""

from __future__ import annotations

import importlib
import numbers
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from placer.result import OPTIMAL_WRT, Result, plural
from twin.errors import InputError
from twin.spec import Instance

if TYPE_CHECKING:
    from placer.oracle import Oracle


class SolverFn(Protocol):
    """The shape of every solver."""

    def __call__(self, problem: Instance, *, time_limit: float, seed: int, oracle: Oracle) -> Result: ...


class _Registry(Mapping[str, "SolverFn"]):
    """The solver mapping; reading it first imports the plugin modules (so any import order works).

    Read-only: solvers are added with :func:`register_solver` (``Mapping`` derives ``get``, ``keys``,
    ``items``, ``values`` and ``in`` from the three methods below, so every read goes through them).
    """

    def __init__(self) -> None:
        self._data: dict[str, SolverFn] = {}
        self._loading = False
        self._loaded = False

    def _ensure(self) -> None:
        if not (self._loaded or self._loading):
            self._loading = True
            try:
                _load_plugins()
                self._loaded = True
            finally:
                self._loading = False

    def __getitem__(self, key: str) -> SolverFn:
        self._ensure()
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        self._ensure()
        return iter(self._data)

    def __len__(self) -> int:
        self._ensure()
        return len(self._data)

    def __repr__(self) -> str:
        self._ensure()
        return repr(self._data)


_REGISTRY = _Registry()
SOLVERS: Mapping[str, SolverFn] = _REGISTRY
DEFAULT_SOLVER = "ffd-bisect"
DEFAULT_TIME_LIMIT = 60.0

# Modules that register solvers on import (skipped while they do not exist yet).
PLUGIN_MODULES: tuple[str, ...] = (
    "placer.greedy",       # greedy-paper
    "placer.heuristics",   # ffd-bisect (our best heuristic)
    "placer.baselines",    # loraserve, dlora, least-loaded, round-robin
    "placer.cpsat",        # cpsat (exact)
    "placer.ilp",          # ilp (exact)
)


def register_solver(name: str, fn: Callable[..., Result], *, replace: bool = False) -> None:
    """Add ``fn`` to :data:`SOLVERS` under ``name`` (re-registering the same function is a no-op)."""
    if not name or not isinstance(name, str):
        raise ValueError(f"solver name must be a non-empty string (got {name!r})")
    old = _REGISTRY._data.get(name)  # no plugin loading: registration happens during it
    if old is not None and old is not fn and not replace:
        if getattr(old, "__qualname__", None) == getattr(fn, "__qualname__", None) and \
                getattr(old, "__module__", None) == getattr(fn, "__module__", None):
            _REGISTRY._data[name] = fn  # the same function from a re-imported module
            return
        raise ValueError(f"solver {name!r} is already registered")
    _REGISTRY._data[name] = fn


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
    from placer.oracle import make_oracle

    return make_oracle(problem, kind, **options)


def lower_bound(problem: Instance, oracle: Oracle) -> int:
    """The best lower bound on the GPU count we can compute (``placer.bounds`` when present, else 1)."""
    try:
        bounds = importlib.import_module("placer.bounds")
        return max(1, int(bounds.lower_bound(problem, oracle)))
    except ModuleNotFoundError as exc:  # the bound module (or a placer module it needs) is not there yet
        if not (exc.name or "").startswith("placer."):
            raise
        return 1


def solve(problem: Instance, solver: str = DEFAULT_SOLVER, *, time_limit: float = DEFAULT_TIME_LIMIT,
          seed: int = 0, oracle: Oracle | None = None) -> Result:
    """Place the adapters of ``problem`` on as few GPUs as possible with the named solver.

    Returns a frozen :class:`Result`. A problem with an adapter that fits on no GPU even alone gets status
    ``infeasible`` and a ``reason`` naming that adapter (no exception). ``lower_bound`` is the best of the
    bound module's (the same routine for every solver) and the solver's own; the status becomes ``optimal``
    when the plan meets it, optimal for the linear model (``extra["optimal_wrt"]``, ``Result.optimal_wrt``).
    """
    fn = get_solver(solver)
    if time_limit is None or not time_limit > 0:
        raise InputError(f"time limit must be positive (got {time_limit!r})", field="time_limit",
                         value=time_limit)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(f"must be a non-negative integer (got {seed!r})", field="seed", value=seed)
    oracle = oracle if oracle is not None else default_oracle(problem)
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
                      extra={"unplaceable": [problem.adapters[i].id for i in bad]})
    left = max(0.01, float(time_limit) - (time.perf_counter() - start))  # the pre-check counts against it
    result = fn(problem, time_limit=left, seed=int(seed), oracle=oracle)
    runtime = time.perf_counter() - start  # pre-check + solver; the lower bound is timed on its own
    if result.status == "infeasible":
        return result.replace(runtime_s=runtime, instance=problem.name, model=problem.model,
                              gpu=problem.gpu, oracle=oracle.name)
    bound_start = time.perf_counter()
    lb = max(1, int(result.lower_bound or 0))  # any problem needs one GPU
    if result.num_gpus > 1:  # every solver gets the same bound routine (the exact solvers' own start)
        lb = max(lower_bound(problem, oracle), lb)
    extra = dict(result.extra)
    extra["bound_s"] = round(time.perf_counter() - bound_start, 4)
    if result.num_gpus and lb > result.num_gpus:  # the bound and the solver's oracle disagree: say so
        extra["bound_warning"] = f"lower bound {lb} exceeds the plan's {result.num_gpus} GPUs"
        lb = result.num_gpus
    status = result.status
    if status == "feasible" and result.num_gpus == lb:
        status = "optimal"
    if status == "optimal":
        extra.setdefault("optimal_wrt", OPTIMAL_WRT)
    return result.replace(status=status, lower_bound=lb, runtime_s=runtime, instance=problem.name,
                          model=problem.model, gpu=problem.gpu, oracle=oracle.name, extra=extra)


def _load_plugins() -> None:
    for module_name in PLUGIN_MODULES:
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
