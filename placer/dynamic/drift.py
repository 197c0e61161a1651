"""Seeded workload drifts, for benchmarks and tests of :func:`placer.dynamic.replan.replan`.

Each function takes an instance and returns the drifted one (same ``name`` with a suffix); all randomness
comes from ``numpy.random.default_rng(seed)``.

- :func:`reshuffle`: a fraction of the adapters swap popularity ranks (their rates are permuted among them),
  the total rate unchanged — a Zipf popularity whose order drifts;
- :func:`churn`: a fraction of adapters retired and as many new ones added (ranks and rates drawn from the
  retired ones' distribution: the total rate stays about the same);
- :func:`scale_rates`: every rate times a factor (total rate ±30 %: 1.3 or 0.7).
"""

from __future__ import annotations

import numpy as np

from twin.errors import InputError
from twin.spec import Adapter, Instance


def _fraction(x: float, field: str) -> float:
    if not 0 <= x <= 1:
        raise InputError(f"must be in [0, 1] (got {x!r})", field=field, value=x)
    return float(x)


def reshuffle(problem: Instance, fraction: float, seed: int) -> Instance:
    """``fraction`` of the adapters (chosen at random) exchange their rates by a random derangement-like
    permutation (a cyclic shift of the chosen ones in random order: every chosen adapter gets another's
    rate)."""
    rng = np.random.default_rng(seed)
    n = problem.n_adapters
    k = int(round(_fraction(fraction, "fraction") * n))
    rates = problem.rates.copy()
    if k >= 2:
        chosen = rng.choice(n, size=k, replace=False)
        rates[chosen] = rates[np.roll(chosen, 1)]
    adapters = tuple(Adapter(a.id, a.rank, float(r)) for a, r in zip(problem.adapters, rates, strict=True))
    return problem.replace(name=f"{problem.name}+reshuffle{fraction:g}", adapters=adapters)


def churn(problem: Instance, fraction: float, seed: int, *, prefix: str = "new") -> Instance:
    """Retire ``fraction`` of the adapters and add as many new ones (id ``<prefix><k>``) whose (rank, rate)
    pairs are drawn from the retired ones."""
    rng = np.random.default_rng(seed)
    n = problem.n_adapters
    k = int(round(_fraction(fraction, "fraction") * n))
    k = min(k, n - 1)
    retired = set(rng.choice(n, size=k, replace=False).tolist()) if k else set()
    kept = [a for i, a in enumerate(problem.adapters) if i not in retired]
    donors = sorted(retired)
    taken = set(problem.ids)
    new = []
    for j in range(k):
        d = problem.adapters[donors[int(rng.integers(len(donors)))]]
        ident = f"{prefix}{j}"
        while ident in taken:
            ident += "x"
        taken.add(ident)
        new.append(Adapter(ident, d.rank, d.rate_rps))
    return problem.replace(name=f"{problem.name}+churn{fraction:g}", adapters=tuple(kept + new))


def scale_rates(problem: Instance, factor: float) -> Instance:
    """Every adapter's rate times ``factor`` (> 0)."""
    if not factor > 0:
        raise InputError(f"must be positive (got {factor!r})", field="factor", value=factor)
    adapters = tuple(Adapter(a.id, a.rank, a.rate_rps * factor) for a in problem.adapters)
    return problem.replace(name=f"{problem.name}x{factor:g}", adapters=adapters)
