"""The packing core shared by the exact solvers: items, bin classes, packings, and a first-fit heuristic.

A :class:`PackingModel` is a bin-packing problem with bin *classes*: each bin (GPU) picks one class ``k`` with
an integer load capacity ``capacity``, a maximum item count ``max_items`` and a maximum item kind
``max_kind`` (for placement: a token-rate capacity, a maximum adapter count and a maximum LoRA rank). Item
``i`` has an integer weight (its scaled token load) and a kind (its rank). A bin is feasible when some class
admits its total weight, its item count and its largest kind. Minimise the number of bins.

Classic 1-D bin packing is the special case of one class with ``max_items`` = the number of items.
:mod:`placer.exact.capacity` builds the placement model from a problem and an oracle;
:mod:`placer.exact.cpsat` and
:mod:`placer.exact.ilp` solve it exactly; :mod:`placer.exact.bounds` bounds it from below.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class BinClass:
    """One bin (GPU configuration) class: integer capacity, item-count limit, kind (rank) limit.

    ``max_loras`` and ``capacity_tok_s`` are informative for placement (the oracle's slot count at the
    capacity point and the capacity in tok/s); they do not enter the packing constraints.
    """

    capacity: int
    max_items: int
    max_kind: int = 0
    max_loras: int = 0
    capacity_tok_s: float = 0.0

    def admits(self, load: int, count: int, kind: int) -> bool:
        return load <= self.capacity and count <= self.max_items and kind <= self.max_kind


@dataclass(frozen=True, eq=False)
class PackingModel:
    """Items (integer weights, kinds) and the bin classes they may be packed into."""

    weights: np.ndarray
    kinds: np.ndarray
    classes: tuple[BinClass, ...]
    scale: float = 1.0  # real units (tok/s) per integer weight unit
    names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        w = np.asarray(self.weights, dtype=np.int64).copy()
        k = np.asarray(self.kinds, dtype=np.int64).copy()
        if w.ndim != 1 or k.shape != w.shape:
            raise ValueError("weights and kinds must be 1-D arrays of the same length")
        if not self.classes:
            raise ValueError("a packing model needs at least one bin class")
        w.setflags(write=False)
        k.setflags(write=False)
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "kinds", k)
        object.__setattr__(self, "classes", tuple(self.classes))

    @property
    def n_items(self) -> int:
        return int(self.weights.shape[0])

    @property
    def class_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(capacity, max_items, max_kind) of the classes as int64 arrays."""
        c = np.array([b.capacity for b in self.classes], dtype=np.int64)
        n = np.array([b.max_items for b in self.classes], dtype=np.int64)
        r = np.array([b.max_kind for b in self.classes], dtype=np.int64)
        return c, n, r

    def class_for(self, items: Sequence[int]) -> int | None:
        """The first class that admits this set of items (classes are ordered cheapest first), or None."""
        idx = np.asarray(items, dtype=np.int64)
        load = int(self.weights[idx].sum()) if idx.size else 0
        kind = int(self.kinds[idx].max()) if idx.size else 0
        for k, b in enumerate(self.classes):
            if b.admits(load, int(idx.size), kind):
                return k
        return None

    def unpackable_items(self) -> list[int]:
        """Items that fit in no class even alone."""
        cap, cnt, knd = self.class_arrays
        ok = ((self.weights[:, None] <= cap[None, :]) & (cnt[None, :] >= 1)
              & (self.kinds[:, None] <= knd[None, :])).any(axis=1)
        return np.flatnonzero(~ok).tolist()


@dataclass(frozen=True)
class Packing:
    """A solution: the items of each bin and the class each bin uses."""

    bins: tuple[tuple[int, ...], ...]
    classes: tuple[int, ...]

    @property
    def num_bins(self) -> int:
        return len(self.bins)

    def is_valid(self, model: PackingModel) -> bool:
        """Every item exactly once, every bin admitted by its class."""
        seen = sorted(i for b in self.bins for i in b)
        if seen != list(range(model.n_items)) or len(self.classes) != len(self.bins):
            return False
        for items, k in zip(self.bins, self.classes, strict=True):
            idx = np.asarray(items, dtype=np.int64)
            if not items or not model.classes[k].admits(
                    int(model.weights[idx].sum()), len(items), int(model.kinds[idx].max())):
                return False
        return True

    def violates(self, cuts: Sequence[Sequence[int]]) -> bool:
        """True when some bin holds every item of some cut (a set of items that may not share a bin)."""
        sets = [set(b) for b in self.bins]
        return any(set(c) <= b for c in cuts for b in sets)

    @classmethod
    def from_bins(cls, model: PackingModel, bins: Sequence[Sequence[int]]) -> Packing | None:
        """A packing of these bins with the first admitting class per bin; None if some bin fits no class."""
        ks = []
        for b in bins:
            k = model.class_for(b)
            if k is None:
                return None
            ks.append(k)
        return cls(tuple(tuple(int(i) for i in b) for b in bins if b), tuple(ks))


def _first_fit(model: PackingModel, order: np.ndarray, best_fit: bool) -> Packing:
    cap, cnt, knd = model.class_arrays
    w, kinds = model.weights, model.kinds
    n = model.n_items
    load = np.zeros(n, dtype=np.int64)
    count = np.zeros(n, dtype=np.int64)
    kmax = np.zeros(n, dtype=np.int64)
    members: list[list[int]] = []
    for i in order:
        m = len(members)
        new_load = load[:m] + w[i]
        new_cnt = count[:m] + 1
        new_kind = np.maximum(kmax[:m], kinds[i])
        ok = ((new_load[:, None] <= cap[None, :]) & (new_cnt[:, None] <= cnt[None, :])
              & (new_kind[:, None] <= knd[None, :])).any(axis=1)
        hits = np.flatnonzero(ok)
        if hits.size:
            j = int(hits[np.argmax(new_load[hits])]) if best_fit else int(hits[0])
        else:
            j = m
            members.append([])
        members[j].append(int(i))
        load[j] += w[i]
        count[j] += 1
        kmax[j] = max(kmax[j], kinds[i])
    packing = Packing.from_bins(model, members)
    if packing is None:  # pragma: no cover - only when an item fits nowhere (checked by callers)
        raise ValueError("an item fits in no bin class")
    return packing


def first_fit_decreasing(model: PackingModel) -> Packing:
    """The best of first-fit and best-fit decreasing, by weight and by (kind, weight)."""
    by_weight = np.lexsort((-model.kinds, -model.weights))
    by_kind = np.lexsort((-model.weights, -model.kinds))
    cands = [_first_fit(model, order, bf) for order in (by_weight, by_kind) for bf in (False, True)]
    return min(cands, key=lambda p: p.num_bins)


@dataclass(frozen=True)
class PackOutcome:
    """What an exact packing run found: the packing, an honest status and the proven bound."""

    packing: Packing
    status: str  # optimal | feasible | timeout | infeasible
    bound: float  # best proven lower bound on the number of bins (the solver's, merged with the given one)
    runtime_s: float
    detail: str = ""
    solver_status: str = ""

    @property
    def num_bins(self) -> int:
        return self.packing.num_bins

    @property
    def gap(self) -> float:
        lb = int(np.ceil(self.bound - 1e-9))
        return (self.num_bins - lb) / self.num_bins if self.num_bins else 0.0


def canonical(packing: Packing) -> Packing:
    """The same packing with bins ordered by their smallest item (the solvers' symmetry-breaking order)."""
    order = sorted(range(packing.num_bins), key=lambda j: min(packing.bins[j]))
    return Packing(tuple(tuple(sorted(packing.bins[j])) for j in order),
                   tuple(packing.classes[j] for j in order))


def warm_start(model: PackingModel, start: Packing, hints: Sequence[Packing],
               cuts: Sequence[tuple[int, ...]], lower: int, t0: float) -> tuple[Packing, PackOutcome | None]:
    """The best of ``start`` and the valid ``hints`` (respecting ``cuts``; a hint wins a tie: hints such as a
    heuristic's oracle-checked plan need no correction), and an ``optimal`` outcome when it already meets
    ``lower`` (then no solver needs to run)."""
    best = min((*[h for h in hints if h.is_valid(model) and not h.violates(cuts)], start),
               key=lambda p: p.num_bins)
    if lower >= best.num_bins:
        return best, PackOutcome(best, "optimal", float(lower), time.perf_counter() - t0,
                                 detail="warm start meets the lower bound", solver_status="BOUND")
    return best, None


def max_items_that_fit(weights: np.ndarray, capacity: int) -> int:
    """The largest k such that the k lightest items fit together in one bin of this capacity."""
    w = np.sort(np.asarray(weights, dtype=np.int64))
    return int(np.searchsorted(np.cumsum(w), capacity, side="right"))


def sorted_view(model: PackingModel) -> tuple[np.ndarray, np.ndarray]:
    """Permutation `order` (new→old) by weight descending, and its inverse (old→new)."""
    order = np.lexsort((-model.kinds, -model.weights))
    inv = np.empty_like(order)
    inv[order] = np.arange(order.size)
    return order, inv
