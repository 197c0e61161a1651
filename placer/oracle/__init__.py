"""Feasibility oracles: can this set of adapters share one GPU, and with which vLLM LoRA settings?

- :mod:`placer.oracle.base` — the :class:`Oracle` interface, its verdicts and its per-problem caches;
- :mod:`placer.oracle.backends` — the surrogate oracle (default), the twin oracle (exact w.r.t. the twin) and
an
  analytic test double;
- :func:`make_oracle` — an oracle by name.
"""

from __future__ import annotations

from typing import Any

from placer.oracle.backends import AnalyticOracle, SurrogateOracle, TwinOracle
from placer.oracle.base import GpuVerdict, Oracle, Point
from twin.errors import InputError
from twin.spec import Instance

ORACLES: dict[str, type[Oracle]] = {"surrogate": SurrogateOracle, "twin": TwinOracle,
                                    "analytic": AnalyticOracle}


def make_oracle(problem: Instance | None = None, kind: str = "surrogate", **options: Any) -> Oracle:
    """An oracle by name: ``surrogate`` (default), ``twin``, or ``analytic`` (a test double, not a model)."""
    if kind not in ORACLES:
        raise InputError(f"unknown oracle (got {kind!r}; known: {', '.join(ORACLES)})", field="oracle",
                         value=kind)
    factory: Any = ORACLES[kind]
    return factory(**options)  # type: ignore[no-any-return]


__all__ = ["ORACLES", "AnalyticOracle", "GpuVerdict", "Oracle", "Point", "SurrogateOracle", "TwinOracle",
           "make_oracle"]
