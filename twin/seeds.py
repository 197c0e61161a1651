"""Verdicts with a confidence: the same GPU simulated with several seeds of the request stream.

One seed gives one verdict (the criterion in force met or not: the run's ``slo``, the default SLO or the
papers' rule; OOM never passes); near a boundary (throughput ≈ 0.9 × offered, a p99 near its bound) another
seed of the same arrivals and lengths can flip it. :func:`simulate_seeds` runs
:func:`twin.simulate.simulate` with seeds ``seed, seed + 1, …, seed + n − 1`` and reports each seed's verdict
and the fraction of seeds that pass.

- passes (one seed) ⇔ the server starts (not OOM) and the run meets its criterion (:meth:`SimResult.meets`);
- ``pass_fraction`` = seeds that pass / seeds run.

OOM does not depend on the seed (the memory rule sees only the configuration), so an OOM configuration fails
on every seed.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

from twin.errors import InputError
from twin.metrics import SimResult
from twin.simulate import simulate
from twin.spec import Instance


def seed_list(seed: int, seeds: int) -> tuple[int, ...]:
    """The seeds ``seed, …, seed + seeds − 1`` (``seeds`` ≥ 1, ``seed`` ≥ 0), validated."""
    for name, value, low in (("seed", seed, 0), ("seeds", seeds, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise InputError(f"must be an integer ≥ {low} (got {value!r})", field=name, value=value)
    return tuple(range(int(seed), int(seed) + int(seeds)))


def passes(result: SimResult) -> bool:
    """One seed's verdict: the server starts and the run meets its criterion (SLO or the papers' rule)."""
    return not result.oom and result.meets()


@dataclass(frozen=True, eq=False)
class SeedsResult:
    """One :class:`SimResult` per seed; ``results[0]`` is the first seed's (what a single run returns)."""

    seeds: tuple[int, ...]
    results: tuple[SimResult, ...]

    @property
    def first(self) -> SimResult:
        return self.results[0]

    @property
    def passed(self) -> tuple[bool, ...]:
        """Each seed's verdict (:func:`passes`), in the order of ``seeds``."""
        return tuple(passes(r) for r in self.results)

    @property
    def pass_fraction(self) -> float:
        """Seeds that pass / seeds run."""
        return sum(self.passed) / len(self.results)

    def to_dict(self, *, per_adapter: bool = True) -> dict[str, Any]:
        """The first seed's :meth:`SimResult.to_dict` (every key unchanged) plus ``seeds``,
        ``seed_passed``, ``seed_throughput_tok_s`` and ``pass_fraction``."""
        out = self.first.to_dict(per_adapter=per_adapter)
        out["seeds"] = list(self.seeds)
        out["seed_passed"] = list(self.passed)
        out["seed_throughput_tok_s"] = [float(r.throughput_tok_s) for r in self.results]
        out["pass_fraction"] = self.pass_fraction
        return out


def simulate_seeds(instance: Instance, *, seeds: int = 1, seed: int = 0, **kwargs: Any) -> SeedsResult:
    """:func:`twin.simulate.simulate` with seeds ``seed, …, seed + seeds − 1`` (other keywords as there)."""
    chosen = seed_list(seed, seeds)
    return SeedsResult(seeds=chosen, results=tuple(simulate(instance, seed=s, **kwargs) for s in chosen))
