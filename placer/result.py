"""Plans: what every solver returns and what ``--out`` writes and ``placer verify`` reads.

A :class:`Result` is frozen. Its JSON form (``to_dict``) is the contract of interfaces.md: ``solver``,
``status`` (optimal | feasible | timeout | infeasible), ``num_gpus``, ``lower_bound``, ``runtime_s``,
``gpus`` (a list of ``{adapters, max_loras, max_cpu_loras, max_lora_rank}`` plus predictions and, after
``placer solve --tune-batch``, the GPU's own ``max_num_seqs`` and ``gpu_memory_utilization``; a GPU without
them runs the instance's ``server`` settings, so older plans load unchanged). After ``placer solve
--replicas-per-gpu N`` a GPU may carry ``replicas``: a list of servers sharing it (:class:`ReplicaPlan`),
written only when the GPU has more than one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from placer.stats import SolverStats
from twin.errors import InputError
from twin.files import atomic_write_text
from twin.spec import ServerSettings

STATUSES = ("optimal", "feasible", "timeout", "infeasible")
# What ``optimal`` means: the plan has as many GPUs as a lower bound proven on the linearised model (the
# oracle's capacities measured on representative mixes), not a proof for the twin or for real GPUs.
OPTIMAL_WRT = "linear model"


def plural(n: int, noun: str) -> str:
    """``1 GPU``, ``2 GPUs``: the count with the noun in the right number (for every printed count)."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


@dataclass(frozen=True)
class ReplicaPlan:
    """One of several vLLM servers sharing a GPU (``placer solve --replicas-per-gpu``): its adapters, LoRA
    settings and its share of the GPU's memory (``twin.replicas``)."""

    adapters: tuple[str, ...]
    max_loras: int
    max_cpu_loras: int
    max_lora_rank: int
    gpu_memory_utilization: float
    max_num_seqs: int | None = None  # None: the GPU's (or the instance's) max_num_seqs

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["adapters"] = list(self.adapters)
        return {k: v for k, v in d.items() if v is not None}


@dataclass(frozen=True)
class GpuPlan:
    """One GPU of a plan: the adapters it serves, its vLLM LoRA settings (plus the oracle's predictions)."""

    adapters: tuple[str, ...]
    max_loras: int
    max_cpu_loras: int
    max_lora_rank: int
    predicted_throughput_tok_s: float | None = None
    predicted_starved_probability: float | None = None
    offered_tok_s: float | None = None
    max_num_seqs: int | None = None  # this GPU's vLLM batch cap (None: the instance's server.max_num_seqs)
    gpu_memory_utilization: float | None = None  # this GPU's (None: the instance's)
    #: two or more servers sharing this GPU, each with its own adapters (their union is ``adapters``);
    #: empty: one server with the settings above
    replicas: tuple[ReplicaPlan, ...] = ()

    def server(self, default: ServerSettings) -> ServerSettings:
        """``default`` (the instance's server settings) with this GPU's own batch and memory fields."""
        changes: dict[str, Any] = {}
        if self.max_num_seqs is not None:
            changes["max_num_seqs"] = self.max_num_seqs
        if self.gpu_memory_utilization is not None:
            changes["gpu_memory_utilization"] = self.gpu_memory_utilization
        return dataclasses.replace(default, **changes) if changes else default

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["adapters"] = list(self.adapters)
        d["replicas"] = [r.to_dict() for r in self.replicas] or None  # written only when there are some
        return {k: v for k, v in d.items() if v is not None}


def _replicas_from(g: dict[str, Any], j: int, bad: Any) -> tuple[ReplicaPlan, ...]:
    """The ``replicas`` list of plan GPU ``j`` (absent: one server); errors through ``bad(field, msg, v)``."""
    items = g.get("replicas")
    if items is None:
        return ()
    if not isinstance(items, list) or len(items) < 2:
        raise bad(f"gpus[{j}].replicas", "must be a list of at least 2 servers", items)
    out = []
    for i, r in enumerate(items):
        where = f"gpus[{j}].replicas[{i}]"
        if not isinstance(r, dict):
            raise bad(where, "must be an object", r)
        if not isinstance(r.get("adapters"), list) or not r["adapters"] \
                or not all(isinstance(a, str) for a in r["adapters"]):
            raise bad(f"{where}.adapters", "must be a non-empty list of adapter ids", r.get("adapters"))
        for key in ("max_loras", "max_cpu_loras", "max_lora_rank", "max_num_seqs"):
            v = r.get(key)
            if (v is not None or key != "max_num_seqs") and (isinstance(v, bool) or not isinstance(v, int)
                                                            or v <= 0):
                raise bad(f"{where}.{key}", "must be a positive integer", v)
        u = r.get("gpu_memory_utilization")
        if isinstance(u, bool) or not isinstance(u, (int, float)) or not 0 < u <= 1:
            raise bad(f"{where}.gpu_memory_utilization", "must be a number in (0, 1]", u)
        out.append(ReplicaPlan(tuple(r["adapters"]), r["max_loras"], r["max_cpu_loras"], r["max_lora_rank"],
                               float(u), r.get("max_num_seqs")))
    union = sorted(a for r in out for a in r.adapters)
    if union != sorted(g["adapters"]):
        raise bad(f"gpus[{j}].replicas", "must split the GPU's adapters, each to exactly one server",
                  [list(r.adapters) for r in out])
    if sum(r.gpu_memory_utilization for r in out) > 1 + 1e-9:
        raise bad(f"gpus[{j}].replicas", "gpu_memory_utilization of the servers must sum to at most 1",
                  [r.gpu_memory_utilization for r in out])
    return tuple(out)


@dataclass(frozen=True)
class Result:
    """A solver's answer: the plan, its status, and an honest lower bound on the GPU count."""

    solver: str
    status: str
    num_gpus: int
    lower_bound: int
    runtime_s: float
    gpus: tuple[GpuPlan, ...]
    instance: str = ""
    model: str = ""
    gpu: str = ""
    oracle: str = ""
    solver_bound: float | None = None
    reason: str | None = None
    stats: SolverStats = field(default_factory=SolverStats)

    @property
    def extra(self) -> Mapping[str, Any]:
        """The run's statistics as the JSON plan's ``extra`` object (a read-only view of :attr:`stats`)."""
        return MappingProxyType(self.stats.to_dict())
    criterion: str = ""  # the criterion every GPU was judged by, in words (twin.spec.Slo.describe)
    slo: dict[str, Any] | None = None  # the same as the instance's slo section (None: not recorded)

    @property
    def gap(self) -> float | None:
        """Relative optimality gap (num_gpus − lower_bound) / num_gpus; None when there is no plan."""
        if self.num_gpus <= 0:
            return None
        return (self.num_gpus - self.lower_bound) / self.num_gpus

    @property
    def optimal_wrt(self) -> str | None:
        """What an ``optimal`` plan is optimal for (None unless the status is optimal)."""
        if self.status != "optimal":
            return None
        return self.stats.optimal_wrt or OPTIMAL_WRT

    @property
    def status_text(self) -> str:
        """The status in words for tables and charts: ``optimal (for the linear model)``."""
        wrt = self.optimal_wrt
        return self.status if wrt is None else f"{self.status} (for the {wrt})"

    def replace(self, **changes: Any) -> Result:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": 1,
            "solver": self.solver,
            "status": self.status,
            "optimal_wrt": self.optimal_wrt,
            "num_gpus": self.num_gpus,
            "lower_bound": self.lower_bound,
            "gap": self.gap,
            "runtime_s": self.runtime_s,
            "instance": self.instance,
            "model": self.model,
            "gpu": self.gpu,
            "oracle": self.oracle,
            "criterion": self.criterion,
            "slo": self.slo,
            "solver_bound": self.solver_bound,
            "reason": self.reason,
            "extra": self.stats.to_dict(),
            "gpus": [g.to_dict() for g in self.gpus],
        }

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "<plan>") -> Result:
        """Parse a plan object; every problem is an :class:`InputError` naming ``source`` and the field."""

        def bad(fld: str, msg: str, value: Any) -> InputError:
            return InputError(f"{msg} (got {value!r})", source=source, field=fld, value=value)

        if not isinstance(d, dict):
            raise bad("<root>", "must be a JSON object", type(d).__name__)
        for key in ("solver", "status", "num_gpus", "gpus"):
            if key not in d:
                raise bad(key, "is missing", None)
        if d["status"] not in STATUSES:
            raise bad("status", f"must be one of {list(STATUSES)}", d["status"])
        if not isinstance(d["gpus"], list):
            raise bad("gpus", "must be a list", d["gpus"])
        gpus = []
        for j, g in enumerate(d["gpus"]):
            if not isinstance(g, dict):
                raise bad(f"gpus[{j}]", "must be an object", g)
            for key in ("adapters", "max_loras", "max_cpu_loras", "max_lora_rank"):
                if key not in g:
                    raise bad(f"gpus[{j}].{key}", "is missing", None)
            if not isinstance(g["adapters"], list) or not all(isinstance(a, str) for a in g["adapters"]):
                raise bad(f"gpus[{j}].adapters", "must be a list of adapter ids", g["adapters"])
            for key in ("max_loras", "max_cpu_loras", "max_lora_rank"):
                v = g[key]
                if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                    raise bad(f"gpus[{j}].{key}", "must be a positive integer", v)
            seqs, util = g.get("max_num_seqs"), g.get("gpu_memory_utilization")
            if seqs is not None and (isinstance(seqs, bool) or not isinstance(seqs, int) or seqs <= 0):
                raise bad(f"gpus[{j}].max_num_seqs", "must be a positive integer", seqs)
            if util is not None and (isinstance(util, bool) or not isinstance(util, (int, float))
                                     or not 0 < util <= 1):
                raise bad(f"gpus[{j}].gpu_memory_utilization", "must be a number in (0, 1]", util)
            gpus.append(GpuPlan(
                adapters=tuple(g["adapters"]), max_loras=g["max_loras"], max_cpu_loras=g["max_cpu_loras"],
                max_lora_rank=g["max_lora_rank"],
                predicted_throughput_tok_s=g.get("predicted_throughput_tok_s"),
                predicted_starved_probability=g.get("predicted_starved_probability"),
                offered_tok_s=g.get("offered_tok_s"), max_num_seqs=seqs,
                gpu_memory_utilization=None if util is None else float(util),
                replicas=_replicas_from(g, j, bad),
            ))

        def number(fld: str, value: Any, *, integer: bool = False, default: Any = 0) -> Any:
            if value is None:
                return default
            kinds = (int,) if integer else (int, float)
            if isinstance(value, bool) or not isinstance(value, kinds) or not 0 <= value < float("inf"):
                raise bad(fld, f"must be a non-negative {'integer' if integer else 'number'}", value)
            return value

        for j, g in enumerate(d["gpus"]):
            for key in ("predicted_throughput_tok_s", "predicted_starved_probability", "offered_tok_s"):
                v = g.get(key)
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    raise bad(f"gpus[{j}].{key}", "must be a number", v)
        lower = number("lower_bound", d.get("lower_bound"), integer=True)
        runtime = number("runtime_s", d.get("runtime_s"))
        solver_bound = number("solver_bound", d.get("solver_bound"), default=None)
        if not isinstance(d.get("extra") or {}, dict):
            raise bad("extra", "must be an object", d.get("extra"))
        if d.get("reason") is not None and not isinstance(d["reason"], str):
            raise bad("reason", "must be a string", d["reason"])
        num = d["num_gpus"]
        if isinstance(num, bool) or not isinstance(num, int) or num < 0:
            raise bad("num_gpus", "must be a non-negative integer", num)
        if num != len(gpus):
            raise bad("num_gpus", f"does not match the {len(gpus)} GPUs listed", num)
        return cls(
            solver=str(d["solver"]), status=d["status"], num_gpus=num,
            lower_bound=int(lower), runtime_s=float(runtime),
            gpus=tuple(gpus), instance=str(d.get("instance", "")), model=str(d.get("model", "")),
            gpu=str(d.get("gpu", "")), oracle=str(d.get("oracle", "")), solver_bound=solver_bound,
            reason=d.get("reason"), stats=SolverStats.from_dict(d.get("extra") or {}, source=source),
            criterion=str(d.get("criterion") or ""),
            slo=dict(d["slo"]) if isinstance(d.get("slo"), dict) else None,
        )

    def save(self, path: str | Path) -> None:
        """Write the plan as JSON, atomically."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Result:
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except OSError as exc:
            raise InputError(f"cannot read plan ({exc.strerror or exc})", source=str(p)) from None
        except (ValueError, RecursionError) as exc:  # RecursionError: arrays nested thousands deep
            raise InputError(f"not valid JSON ({type(exc).__name__}: {exc})", source=str(p)) from None
        return cls.from_dict(data, source=str(p))
