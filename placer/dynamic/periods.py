"""Plans over a day: one plan per period of an instance's rate profile, chained by :func:`replan`.

Period 0 is solved from scratch; each later period is re-planned from the previous period's plan, so
consecutive plans differ by few adapter moves. GPU-hours are Σ GPUs × ``period_s`` / 3600; they are compared
with provisioning for the peak all day: one from-scratch plan of the instance with every adapter at its own
peak rate (its largest multiplier), kept for every period.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from placer.context import Context
from placer.dynamic.diff import PlanDiff
from placer.dynamic.replan import replan
from placer.oracle import Oracle
from placer.result import Result
from placer.solve import DEFAULT_SOLVER, DEFAULT_TIME_LIMIT, default_oracle, solve
from twin.errors import InfeasibleError, InputError
from twin.spec import Adapter, Instance


def period_instances(problem: Instance) -> list[Instance]:
    """The instance of each period: every rate times its multiplier (no rate profile left)."""
    prof = problem.rate_profile
    if prof is None:
        raise InputError("has no rate_profile: --periods needs one (periods, trace or adapters)",
                         field="rate_profile", value=None)
    m = prof.matrix(problem.ids)
    return [problem.replace(name=f"{problem.name}@p{k}", rate_profile=None, adapters=tuple(
        Adapter(a.id, a.rank, a.rate_rps * float(x)) for a, x in zip(problem.adapters, m[k], strict=True)))
        for k in range(prof.count)]


def peak_instance(problem: Instance) -> Instance:
    """Every adapter at its peak rate over the profile's periods."""
    prof = problem.rate_profile
    if prof is None:
        raise InputError("has no rate_profile", field="rate_profile", value=None)
    peak = prof.matrix(problem.ids).max(axis=0)
    return problem.replace(name=f"{problem.name}@peak", rate_profile=None, adapters=tuple(
        Adapter(a.id, a.rank, a.rate_rps * float(x)) for a, x in zip(problem.adapters, peak, strict=True)))


@dataclass(frozen=True)
class PeriodPlan:
    """One period: its plan, the diff from the previous period (None for the first), from-scratch GPUs."""

    period: int
    total_rate_rps: float
    plan: Result
    diff: PlanDiff | None
    scratch_gpus: int
    scratch_moves: int | None
    runtime_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"period": self.period, "total_rate_rps": round(self.total_rate_rps, 6),
                "num_gpus": self.plan.num_gpus, "scratch_gpus": self.scratch_gpus,
                "moves": None if self.diff is None else self.diff.moves, "scratch_moves": self.scratch_moves,
                "runtime_s": round(self.runtime_s, 4), "plan": self.plan.to_dict(),
                "diff": None if self.diff is None else self.diff.to_dict()}


@dataclass(frozen=True)
class DayPlan:
    """Plans for every period and the GPU-hours they need against static provisioning for the peak."""

    instance: str
    period_s: float
    periods: tuple[PeriodPlan, ...]
    static_gpus: int

    @property
    def gpu_hours(self) -> float:
        return sum(p.plan.num_gpus for p in self.periods) * self.period_s / 3600.0

    @property
    def static_gpu_hours(self) -> float:
        return self.static_gpus * len(self.periods) * self.period_s / 3600.0

    @property
    def saved_fraction(self) -> float:
        return 1.0 - self.gpu_hours / self.static_gpu_hours if self.static_gpu_hours else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"instance": self.instance, "period_s": self.period_s, "n_periods": len(self.periods),
                "gpu_hours": round(self.gpu_hours, 6), "static_gpus": self.static_gpus,
                "static_gpu_hours": round(self.static_gpu_hours, 6),
                "saved_fraction": round(self.saved_fraction, 6),
                "total_moves": sum(p.diff.moves for p in self.periods if p.diff is not None),
                "periods": [p.to_dict() for p in self.periods]}


def solve_periods(problem: Instance, solver: str = DEFAULT_SOLVER, *, time_limit: float = DEFAULT_TIME_LIMIT,
                  seed: int = 0, max_moves: int | None = None, move_cost: float = 0.0,
                  oracle: Oracle | None = None, context: Context | None = None,
                  progress: Callable[[int, int], None] | None = None) -> DayPlan:
    """One plan per period of ``problem.rate_profile``, chained by :func:`replan` (see the module docstring).
    ``time_limit`` applies to each period's solve. Raises :class:`InfeasibleError` when a period has an
    adapter that fits on no GPU."""
    insts = period_instances(problem)
    oracle = oracle if oracle is not None else default_oracle(problem, context=context)
    out: list[PeriodPlan] = []
    prev: Result | None = None
    for k, inst in enumerate(insts):
        t0 = time.perf_counter()
        if prev is None:
            plan = solve(inst, solver, time_limit=time_limit, seed=seed, oracle=oracle)
            if plan.status == "infeasible":
                raise InfeasibleError(f"period {k}: {plan.reason}")
            out.append(PeriodPlan(k, inst.total_rate_rps, plan, None, plan.num_gpus, None,
                                  time.perf_counter() - t0))
        else:
            res = replan(inst, prev, max_moves=max_moves, move_cost=move_cost, time_limit=time_limit,
                         seed=seed, oracle=oracle, solver=solver)
            plan = res.plan
            out.append(PeriodPlan(k, inst.total_rate_rps, plan, res.diff, res.scratch_gpus, res.scratch_moves,
                                  time.perf_counter() - t0))
        prev = plan
        if progress is not None:
            progress(k + 1, len(insts))
    peak = solve(peak_instance(problem), solver, time_limit=time_limit, seed=seed, oracle=oracle)
    if peak.status == "infeasible":
        raise InfeasibleError(f"peak rates: {peak.reason}")
    assert problem.rate_profile is not None
    return DayPlan(problem.name, float(problem.rate_profile.period_s), tuple(out), peak.num_gpus)
