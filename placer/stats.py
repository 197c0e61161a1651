"""What a solver run reports about itself, typed: :class:`SolverStats` on every :class:`placer.Result`.

The JSON plan keeps these under ``extra`` with the same keys as ever (``Result.extra`` is a read-only view),
so scripts that read ``extra.model_status`` or ``extra.bound_s`` keep working. A plan written by another
version may carry keys this one does not know: they are kept, untouched, in :attr:`SolverStats.other` so
that reading and writing a plan loses nothing.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from twin.errors import InputError


def _frozen(value: Any) -> Any:
    """A deep, read-only copy of JSON-like data (mappings become read-only views, lists tuples)."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _frozen(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def _plain(value: Any) -> Any:
    """The JSON form of :func:`_frozen` data."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class RepairStats:
    """What :func:`placer.repair` changed: GPUs split, twin simulations, GPUs before, whether all pass."""

    split_gpus: int
    simulations: int
    gpus_before: int
    all_pass: bool
    seconds: float


@dataclass(frozen=True)
class SolverStats:
    """Typed statistics of one run. Every field is optional: each solver fills what it knows.

    - :func:`placer.solve` (every solver): ``bound_s`` (seconds spent on the lower bound), ``bound_warning``
      (the bound and the solver's oracle disagreed), ``unplaceable`` (adapters that fit on no GPU alone);
    - ``ffd-bisect``: ``construction`` (the winning adapter order), ``candidates`` (GPUs per order tried),
      ``oracle_calls``, ``call_budget``;
    - the exact solvers (``cpsat``, ``ilp``): ``optimal_wrt`` (what "optimal" is relative to),
      ``model_status`` / ``model_objective`` / ``model_bound`` / ``model_gap`` (the linearised model's
      solve), ``relaxed_bound``, ``solver_status`` and ``detail`` (the core solver's own words), ``bounds``
      and ``model_bounds`` (combinatorial/LP bounds), ``pattern_lp`` / ``relaxed_pattern_lp``, ``classes``
      (the capacity classes), ``oracle_calls_for_model``, ``warm_start``, ``oracle_rejected`` (GPUs of the
      model the oracle refused), ``rounds`` and ``no_goods`` (the Benders loop);
    - :func:`placer.repair`: ``repair``;
    - :func:`placer.dynamic.replan`: ``gpu_ids`` (each GPU's id, stable across replans), ``scratch_solver``
      (when the from-scratch plan won), ``from_plan_gpus``, ``scratch_gpus``, ``max_moves``, ``move_cost``.
    """

    bound_s: float | None = None
    bound_warning: str | None = None
    unplaceable: tuple[str, ...] | None = None
    construction: str | None = None
    candidates: Mapping[str, int] | None = None
    oracle_calls: int | None = None
    call_budget: int | None = None
    optimal_wrt: str | None = None
    model_status: str | None = None
    model_objective: int | None = None
    model_bound: float | None = None
    model_gap: float | None = None
    relaxed_bound: float | None = None
    solver_status: str | None = None
    detail: str | None = None
    bounds: Mapping[str, Any] | None = None
    model_bounds: Mapping[str, Any] | None = None
    pattern_lp: Mapping[str, Any] | None = None
    relaxed_pattern_lp: Mapping[str, Any] | None = None
    classes: tuple[Mapping[str, Any], ...] | None = None
    oracle_calls_for_model: int | None = None
    warm_start: Mapping[str, Any] | None = None
    oracle_rejected: tuple[int, ...] | None = None
    rounds: int | None = None
    no_goods: int | None = None
    repair: RepairStats | None = None
    gpu_ids: tuple[int, ...] | None = None
    scratch_solver: str | None = None
    from_plan_gpus: int | None = None
    scratch_gpus: int | None = None
    max_moves: int | None = None
    move_cost: float | None = None
    #: Keys of a plan written by another version, kept as read so that a round trip loses nothing.
    other: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "repair" and isinstance(value, (Mapping, list, tuple)):
                object.__setattr__(self, f.name, _frozen(value))

    def replace(self, **changes: Any) -> SolverStats:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The ``extra`` object of the JSON plan: the fields that are set, under their names."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "other":
                continue
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = dataclasses.asdict(value) if isinstance(value, RepairStats) else _plain(value)
        for k, v in self.other.items():
            out.setdefault(k, _plain(v))
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "<plan>") -> SolverStats:
        """Read the ``extra`` object of a plan (unknown keys go to :attr:`other`)."""
        known = {f.name for f in dataclasses.fields(cls)} - {"other"}
        values: dict[str, Any] = {}
        for k, v in d.items():
            if k not in known:
                continue
            if k == "repair" and v is not None:
                try:
                    v = RepairStats(**v)
                except TypeError as exc:
                    raise InputError(f"not a repair record ({exc})", source=source, field="extra.repair",
                                     value=json.dumps(v)[:80]) from None
            values[k] = v
        other = {k: v for k, v in d.items() if k not in known}
        return cls(**values, other=other)
