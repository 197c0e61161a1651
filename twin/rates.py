"""Rate profiles: how an instance's request rates vary over a day, period by period.

An instance's ``rate_rps`` are the mean rates; an optional :class:`RateProfile` multiplies them per period
(each ``period_s`` long):

- ``periods``: one multiplier per period for every adapter;
- ``adapters``: per-adapter multipliers (same number of periods), overriding the global ones for the
  adapters listed;
- ``trace`` + ``n_periods``: the global multipliers derived from a shipped trace-like workload's volume
  curve (:mod:`twin.tracelike`: 60 bins over the trace's span), resampled to ``n_periods`` equal periods,
  normalised to mean 1 and floored at :data:`TRACE_FLOOR` so no period is empty. The shipped curves span
  about one hour of the real traces: the "day" is that hour's shape stretched, not a measured daily cycle.

Multipliers are positive and finite. The profile is data only; :meth:`RateProfile.matrix` resolves it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from twin.errors import InputError

TRACE_FLOOR = 0.05
MAX_PERIODS = 10_000


def _bad(field: str, message: str, value: Any) -> InputError:
    return InputError(f"{message} (got {value!r})", field=field, value=value)


def _multipliers(values: Any, field: str) -> tuple[float, ...]:
    if not isinstance(values, (list, tuple)) or not values:
        raise _bad(field, "must be a non-empty list of positive multipliers", values)
    if len(values) > MAX_PERIODS:
        raise _bad(field, f"must have at most {MAX_PERIODS} periods", len(values))
    out = []
    for i, x in enumerate(values):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0:
            raise _bad(f"{field}[{i}]", "must be a positive finite multiplier", x)
        out.append(float(x))
    return tuple(out)


def resample(volume: Sequence[float], n: int) -> np.ndarray:
    """The mean of a piecewise-constant curve (equal bins) over ``n`` equal periods, normalised to mean 1."""
    v = np.asarray(volume, dtype=np.float64)
    edges = np.concatenate([[0.0], np.cumsum(v)]) / len(v)  # integral up to bin boundaries (x in [0, 1])
    grid = np.linspace(0.0, 1.0, len(v) + 1)
    cum = np.interp(np.linspace(0.0, 1.0, n + 1), grid, edges)
    m = np.diff(cum) * n
    return m / m.mean() if m.mean() > 0 else np.ones(n)


@dataclass(frozen=True)
class RateProfile:
    """Per-period rate multipliers (see the module docstring). Field names match the instance schema."""

    period_s: float = 3600.0
    periods: tuple[float, ...] | None = None
    adapters: tuple[tuple[str, tuple[float, ...]], ...] = ()
    trace: str | None = None
    n_periods: int | None = None

    def __post_init__(self) -> None:
        f = "rate_profile"
        if isinstance(self.period_s, bool) or not isinstance(self.period_s, (int, float)) or not (
                math.isfinite(self.period_s) and self.period_s > 0):
            raise _bad(f"{f}.period_s", "must be a positive number of seconds", self.period_s)
        if self.periods is not None:
            object.__setattr__(self, "periods", _multipliers(self.periods, f"{f}.periods"))
        if self.trace is not None and self.periods is not None:
            raise _bad(f"{f}.trace", "cannot be given together with periods", self.trace)
        if self.trace is not None:
            from twin.tracelike import tracelike_names

            if self.trace not in tracelike_names():
                raise _bad(f"{f}.trace", f"must be a shipped trace-like workload {list(tracelike_names())}",
                           self.trace)
            n = self.n_periods
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_PERIODS:
                raise _bad(f"{f}.n_periods", f"must be an integer in [1, {MAX_PERIODS}] with trace", n)
        elif self.n_periods is not None:
            raise _bad(f"{f}.n_periods", "is only allowed with trace", self.n_periods)
        adapters = tuple((str(a), _multipliers(m, f"{f}.adapters.{a}")) for a, m in self.adapters)
        object.__setattr__(self, "adapters", adapters)
        if self.periods is None and self.trace is None and not adapters:
            raise _bad(f, "needs periods, trace or adapters", None)
        count = self.count if (self.periods is not None or self.trace is not None) else len(adapters[0][1])
        for a, m in adapters:
            if len(m) != count:
                raise _bad(f"{f}.adapters.{a}", f"must have {count} multipliers, one per period", len(m))

    @property
    def count(self) -> int:
        """The number of periods."""
        if self.periods is not None:
            return len(self.periods)
        if self.trace is not None:
            return int(self.n_periods or 0)
        return len(self.adapters[0][1])

    def global_multipliers(self) -> np.ndarray:
        """The multipliers of adapters not listed under ``adapters`` (1 when only per-adapter ones exist)."""
        if self.periods is not None:
            return np.asarray(self.periods)
        if self.trace is not None:
            from twin.tracelike import load_tracelike

            return np.maximum(resample(load_tracelike(self.trace).volume, self.count), TRACE_FLOOR)
        return np.ones(self.count)

    def matrix(self, ids: Sequence[str]) -> np.ndarray:
        """Multipliers, shape (periods, adapters), for the adapters ``ids``."""
        g = self.global_multipliers()
        out = np.repeat(g[:, None], len(ids), axis=1)
        pos = {a: j for j, a in enumerate(ids)}
        for a, m in self.adapters:
            if a in pos:
                out[:, pos[a]] = m
        return out

    def to_dict(self) -> dict[str, Any]:
        """The schema form (only the fields given)."""
        d: dict[str, Any] = {"period_s": float(self.period_s)}
        if self.periods is not None:
            d["periods"] = list(self.periods)
        if self.trace is not None:
            d["trace"] = self.trace
            d["n_periods"] = self.n_periods
        if self.adapters:
            d["adapters"] = {a: list(m) for a, m in self.adapters}
        return d
