"""Classic one-dimensional bin packing with the exact placement machinery (validation of the exact core).

A BPPLIB text file holds the number of items ``n``, the bin capacity, then one integer weight per line.
:func:`read_bpp` parses it strictly (one-line :class:`~twin.errors.InputError` naming file, line and value);
:func:`solve_binpack` packs it with ``cpsat``, ``ilp`` or ``ffd`` (first/best-fit decreasing), using the same
:class:`~placer.exact.packing.PackingModel`, bounds (L1, L2, LP) and solver cores as placement.
:func:`triplet_instance` builds Falkenauer-style triplet instances (every bin filled exactly by three items,
so the optimum is n/3 and equals the L1 bound).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from placer.exact.bounds import model_bounds
from placer.exact.packing import (
    BinClass,
    Packing,
    PackingModel,
    first_fit_decreasing,
    max_items_that_fit,
)
from twin.errors import InputError
from twin.files import atomic_write_text

BINPACK_SOLVERS = ("cpsat", "ilp", "ffd")


@dataclass(frozen=True, eq=False)
class BinPackInstance:
    """n integer weights and one bin capacity (read-only)."""

    name: str
    capacity: int
    weights: np.ndarray

    def __post_init__(self) -> None:
        w = np.asarray(self.weights, dtype=np.int64).copy()
        w.setflags(write=False)
        object.__setattr__(self, "weights", w)

    @property
    def n_items(self) -> int:
        return int(self.weights.size)

    def to_text(self) -> str:
        """The BPPLIB text form."""
        return "\n".join([str(self.n_items), str(self.capacity), *map(str, self.weights.tolist())]) + "\n"

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), self.to_text())


@dataclass(frozen=True)
class BinPackResult:
    """The answer for one bin-packing instance."""

    instance: str
    solver: str
    status: str
    num_bins: int
    lower_bound: int
    runtime_s: float
    bins: tuple[tuple[int, ...], ...]
    bounds: dict[str, Any]
    detail: str = ""

    @property
    def gap(self) -> float:
        return (self.num_bins - self.lower_bound) / self.num_bins if self.num_bins else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"instance": self.instance, "solver": self.solver, "status": self.status,
                "num_bins": self.num_bins, "lower_bound": self.lower_bound, "gap": self.gap,
                "runtime_s": self.runtime_s, "bounds": self.bounds, "detail": self.detail,
                "bins": [list(b) for b in self.bins]}


def _int_token(token: str, source: str, line: int, what: str) -> int:
    try:
        value = int(token)
    except ValueError:
        raise InputError(f"{what} must be an integer (got {token!r})", source=source, field=f"line {line}",
                         value=token) from None
    if value <= 0:
        raise InputError(f"{what} must be positive (got {value})", source=source, field=f"line {line}",
                         value=value)
    return value


def parse_bpp(text: str, *, source: str = "<bpp>") -> BinPackInstance:
    """Parse BPPLIB text: n, capacity, then n weights (one per line; blank lines ignored)."""
    lines = [(no, ln.strip()) for no, ln in enumerate(text.splitlines(), start=1) if ln.strip()]
    for no, ln in lines:
        if len(ln.split()) != 1:
            raise InputError(f"expected one number per line (got {ln!r})", source=source, field=f"line {no}",
                             value=ln)
    if len(lines) < 2:
        raise InputError("expected the item count and the capacity on the first two lines", source=source,
                         field="header", value=len(lines))
    n = _int_token(lines[0][1], source, lines[0][0], "item count")
    cap = _int_token(lines[1][1], source, lines[1][0], "capacity")
    body = lines[2:]
    if len(body) != n:
        where = body[n][0] if len(body) > n else (body[-1][0] if body else lines[1][0])
        raise InputError(f"item count {n} does not match the {len(body)} weights listed", source=source,
                         field=f"line {where}", value=len(body))
    weights = []
    for no, tok in body:
        wv = _int_token(tok, source, no, "weight")
        if wv > cap:
            raise InputError(f"weight {wv} exceeds the capacity {cap}", source=source, field=f"line {no}",
                             value=wv)
        weights.append(wv)
    return BinPackInstance(name=Path(source).stem if source != "<bpp>" else "bpp", capacity=cap,
                           weights=np.array(weights, dtype=np.int64))


def read_bpp(path: str | Path) -> BinPackInstance:
    """Read a BPPLIB text file (strict; errors are one-line :class:`InputError` naming file and line)."""
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read bin-packing file ({getattr(exc, 'strerror', None) or exc})",
                         source=str(p)) from None
    return parse_bpp(text, source=str(p))


def triplet_instance(n: int, seed: int, *, capacity: int = 1000) -> BinPackInstance:
    """Falkenauer-style triplets: n/3 bins of ``capacity`` each filled exactly by three items, shuffled.

    As in Falkenauer (1996): the first item of a triplet is uniform in [0.38 C, 0.49 C], the second uniform in
    [0.25 C, (C − first)/2] (strictly above C/4 here, so no bin can take four items), the third completes the
    bin; all items lie in (C/4, C/2). The optimum is n/3 bins.
    """
    if n <= 0 or n % 3:
        raise InputError(f"triplet instances need n divisible by 3 (got {n})", field="n", value=n)
    rng = np.random.default_rng(seed)
    items: list[int] = []
    for _ in range(n // 3):
        a = int(rng.integers(int(0.38 * capacity), int(0.49 * capacity) + 1))
        b = int(rng.integers(capacity // 4 + 1, (capacity - a) // 2 + 1))
        items.extend((a, b, capacity - a - b))
    weights = rng.permutation(np.array(items, dtype=np.int64))
    return BinPackInstance(name=f"triplet_n{n}_s{seed}", capacity=capacity, weights=weights)


def packing_model(inst: BinPackInstance) -> PackingModel:
    """One bin class: the capacity, and at most as many items as the lightest ones that fit together."""
    k = max(1, max_items_that_fit(inst.weights, inst.capacity))
    return PackingModel(inst.weights, np.zeros(inst.n_items, dtype=np.int64),
                        (BinClass(capacity=inst.capacity, max_items=k),))


def solve_binpack(inst: BinPackInstance, *, solver: str = "cpsat", time_limit: float = 60.0,
                  seed: int = 0, workers: int = 2) -> BinPackResult:
    """Pack ``inst`` with ``solver`` (cpsat | ilp | ffd); the result carries an honest status and bound."""
    if solver not in BINPACK_SOLVERS:
        raise InputError(f"unknown bin-packing solver (got {solver!r}; known: {', '.join(BINPACK_SOLVERS)})",
                         field="solver", value=solver)
    t0 = time.perf_counter()
    model = packing_model(inst)
    report = model_bounds(model)
    start = first_fit_decreasing(model)
    lb = report.best
    if solver == "ffd":
        status = "optimal" if start.num_bins <= lb else "feasible"
        packing, detail = start, "first/best-fit decreasing"
    else:
        if solver == "cpsat":
            from placer.exact.cpsat import cpsat_pack

            out = cpsat_pack(model, start, lower=lb, time_limit=time_limit, seed=seed, workers=workers)
        else:
            from placer.exact.ilp import ilp_pack

            out = ilp_pack(model, start, lower=lb, time_limit=time_limit, workers=workers)
        packing, status, detail = out.packing, out.status, out.detail
        lb = max(lb, int(math.ceil(out.bound - 1e-6)))
    lb = min(lb, packing.num_bins)
    return BinPackResult(instance=inst.name, solver=solver, status=status, num_bins=packing.num_bins,
                         lower_bound=lb, runtime_s=time.perf_counter() - t0, bins=_bins(packing),
                         bounds=report.to_dict(), detail=detail)


def _bins(packing: Packing) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(i) for i in b) for b in packing.bins)
