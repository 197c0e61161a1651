"""The SLO frontier: how many GPUs a workload needs at each latency level, and under the papers' rule.

:func:`frontier` solves the problem once per SLO level (every TTFT p99 × TPOT p99 pair asked) and once under
``criterion: paper``. The curve is **monotone by construction**: level A is *at least as tight* as level B
when every bound of A is ≤ B's (the papers' rule is looser than any SLO with the same served fraction), and
any plan that meets A meets B; so each level reports the best plan among itself and every tighter level (the
plan is reused, ``from`` names the level it was solved for), and its lower bound is the largest among
itself and every looser level (a bound for a looser criterion holds for a tighter one). A looser SLO never
needs more GPUs, and a tighter one never has a smaller bound.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from placer.oracle import Oracle
from placer.result import Result
from placer.solve import DEFAULT_SOLVER, DEFAULT_TIME_LIMIT, solve
from twin.errors import InputError
from twin.spec import Instance, Slo


@dataclass(frozen=True)
class FrontierPoint:
    """One level of the frontier: the SLO, the criterion in words, the GPUs needed and the lower bound."""

    slo: Slo
    num_gpus: int
    lower_bound: int
    status: str
    solved_for: int  # index of the level whose plan this is (itself, or a tighter level's plan reused)
    plan: Result

    @property
    def criterion(self) -> str:
        return self.slo.describe()

    def to_dict(self, index: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"slo": self.slo.to_dict(), "criterion": self.criterion,
                               "num_gpus": self.num_gpus, "lower_bound": self.lower_bound,
                               "status": self.status}
        if index is not None and self.solved_for != index:
            out["from"] = self.solved_for
        return out


def _bounds(slo: Slo) -> dict[str, float]:
    return {key: bound for key, _, bound in slo.limits()}


def at_least_as_tight(a: Slo, b: Slo) -> bool:
    """Every plan that meets ``a`` meets ``b``: ``a`` requires at least the served fraction of ``b`` and
    bounds every latency ``b`` bounds, no looser."""
    if a.min_served_fraction < b.min_served_fraction:
        return False
    ba, bb = _bounds(a), _bounds(b)
    return all(key in ba and ba[key] <= bound for key, bound in bb.items())


def levels(problem: Instance, ttft_p99_s: Sequence[float] = (), tpot_p99_ms: Sequence[float] = ()
           ) -> list[Slo]:
    """The SLOs of a frontier: each TTFT p99 × TPOT p99 pair on top of the problem's own SLO (a list left
    empty keeps the problem's value), then the papers' rule."""
    for name, values in (("--ttft-p99", ttft_p99_s), ("--tpot-p99", tpot_p99_ms)):
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise InputError(f"every level must be a positive number (got {v!r})", field=name, value=v)
    base = problem.slo.replace(criterion="slo")
    ttfts: list[float | None] = list(ttft_p99_s) or [base.ttft_p99_s]
    tpots: list[float | None] = list(tpot_p99_ms) or [base.tpot_p99_ms]
    out = [base.replace(ttft_p99_s=t, tpot_p99_ms=p) for t, p in itertools.product(ttfts, tpots)]
    out.append(base.replace(criterion="paper"))
    return list(dict.fromkeys(out))  # no level twice


def frontier(problem: Instance, ttft_p99_s: Sequence[float] = (), tpot_p99_ms: Sequence[float] = (), *,
             solver: str = DEFAULT_SOLVER, time_limit: float = DEFAULT_TIME_LIMIT, seed: int = 0,
             oracle: Oracle | None = None) -> list[FrontierPoint]:
    """GPUs needed at each SLO level of :func:`levels` (one :func:`placer.solve` per level, one shared
    oracle), made monotone as the module docstring says."""
    slos = levels(problem, ttft_p99_s, tpot_p99_ms)
    plans = [solve(problem.replace(slo=s), solver, time_limit=time_limit, seed=seed, oracle=oracle)
             for s in slos]
    points = []
    for i, slo in enumerate(slos):
        tighter = [j for j, other in enumerate(slos) if at_least_as_tight(other, slo) and plans[j].gpus]
        looser = [j for j, other in enumerate(slos) if at_least_as_tight(slo, other)]
        best = min(tighter, key=lambda j: (plans[j].num_gpus, j != i), default=i)
        plan = plans[best]
        lb = max((plans[j].lower_bound for j in looser if plans[j].gpus), default=plans[i].lower_bound)
        lb = max(lb, plans[i].lower_bound)
        if not plan.gpus:
            status = plan.status
        else:
            status = ("optimal" if plan.num_gpus <= lb
                      else "timeout" if plan.status == "timeout" else "feasible")
        points.append(FrontierPoint(slo, plan.num_gpus, lb, status, best, plan))
    return points


CSV_COLUMNS = ("criterion", "rule", "ttft_p99_s", "tpot_p99_ms", "min_served_fraction", "num_gpus",
               "lower_bound", "status", "solved_for")


def frontier_csv(points: Sequence[FrontierPoint]) -> str:
    """One CSV row per level (header :data:`CSV_COLUMNS`; an unbounded latency is an empty cell)."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for p in points:
        s = p.slo
        paper = s.criterion == "paper"
        ttft = "" if s.ttft_p99_s is None or paper else s.ttft_p99_s
        tpot = "" if s.tpot_p99_ms is None or paper else s.tpot_p99_ms
        w.writerow([p.criterion, s.criterion, ttft, tpot, s.min_served_fraction, p.num_gpus, p.lower_bound,
                    p.status, p.solved_for])
    return buf.getvalue()
