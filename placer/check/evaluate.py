"""The one evaluator that judges every plan — any solver's, or a plan read from disk — with an oracle.

:func:`check_plan` finds structural violations (unknown or duplicate adapter ids, adapters left out, empty
GPUs, ``max_loras`` outside [1, adapters on the GPU], ``max_lora_rank`` not an allowed rank or below a rank
present, ``max_cpu_loras`` below ``max_loras``, a GPU count that does not match, memory errors by the twin's
exact rule). :func:`evaluate` adds the oracle's judgement of every GPU *at the plan's own settings* (one
batched call). Solvers never grade themselves; the CLI, the comparisons and the tests all call this.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from placer.oracle.base import Oracle
from placer.problem.memory import memory_fits
from placer.result import GpuPlan, ReplicaPlan, Result
from twin.profile import Profile
from twin.spec import ALLOWED_RANKS, Instance


@dataclass(frozen=True)
class GpuCheck:
    """The evaluator's judgement of one GPU of a plan."""

    gpu: int
    n_adapters: int
    max_loras: int
    max_lora_rank: int
    max_cpu_loras: int
    feasible: bool
    oom: bool
    starved: bool
    throughput_tok_s: float
    offered_tok_s: float
    starved_probability: float
    errors: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Evaluation:
    """A plan judged: ``valid`` (no structural error) and ``feasible`` (valid and every GPU feasible)."""

    valid: bool
    feasible: bool
    num_gpus: int
    oracle: str
    errors: tuple[str, ...] = ()
    gpus: tuple[GpuCheck, ...] = field(default=())

    @property
    def failing_gpus(self) -> tuple[int, ...]:
        return tuple(g.gpu for g in self.gpus if not g.feasible)

    def to_dict(self) -> dict[str, Any]:
        return {"valid": self.valid, "feasible": self.feasible, "num_gpus": self.num_gpus,
                "oracle": self.oracle, "errors": list(self.errors), "failing_gpus": list(self.failing_gpus),
                "gpus": [g.to_dict() for g in self.gpus]}


def check_plan(problem: Instance, plan: Result, profile: Profile | None = None) -> list[str]:
    """Structural violations of ``plan`` for ``problem`` (empty list: none). Memory errors included."""
    errors: list[str] = []
    if plan.num_gpus != len(plan.gpus):
        errors.append(f"num_gpus is {plan.num_gpus} but {len(plan.gpus)} GPUs are listed")
    if not plan.gpus:
        why = f": {plan.reason}" if plan.reason else ""
        errors.append(f"plan has no GPUs (status {plan.status}{why})")
        return errors
    seen: Counter[str] = Counter()
    index = problem.index
    for j, g in enumerate(plan.gpus):
        seen.update(g.adapters)
        where = f"gpus[{j}]"
        unknown = [a for a in g.adapters if a not in index]
        if unknown:
            errors.append(f"{where}: unknown adapter ids {_few(unknown)}")
        if not g.adapters:
            errors.append(f"{where}: no adapters")
            continue
        servers: list[tuple[str, GpuPlan | ReplicaPlan]] = (
            [(where, g)] if not g.replicas
            else [(f"{where}.replicas[{i}]", r) for i, r in enumerate(g.replicas)])
        for at, srv in servers:  # one server, or each replica sharing the GPU at its memory share
            errors += _server_errors(problem, at, srv, profile)
    dup = sorted(a for a, c in seen.items() if c > 1 and a in index)
    if dup:
        errors.append(f"adapters placed more than once: {_few(dup)}")
    missing = [a for a in problem.ids if a not in seen]
    if missing:
        errors.append(f"{len(missing)} adapters not placed: {_few(missing)}")
    return errors


def _server_errors(problem: Instance, where: str, g: GpuPlan | ReplicaPlan, profile: Profile | None
                   ) -> list[str]:
    """The settings of one vLLM server (a GPU's, or one replica's) against its adapters and memory."""
    errors = []
    index = problem.index
    known = [index[a] for a in g.adapters if a in index]
    top_rank = int(problem.ranks[known].max()) if known else 0
    if not 1 <= g.max_loras <= len(g.adapters):
        errors.append(f"{where}: max_loras {g.max_loras} outside [1, {len(g.adapters)} adapters]")
    if g.max_lora_rank not in ALLOWED_RANKS:
        errors.append(f"{where}: max_lora_rank {g.max_lora_rank} is not one of {list(ALLOWED_RANKS)}")
    if g.max_lora_rank < top_rank:
        errors.append(f"{where}: max_lora_rank {g.max_lora_rank} below rank {top_rank} of an adapter")
    if g.max_cpu_loras < g.max_loras:
        errors.append(f"{where}: max_cpu_loras {g.max_cpu_loras} below max_loras {g.max_loras}")
    if g.max_loras >= 1 and not memory_fits(problem, g.max_loras, g.max_lora_rank, profile,
                                            g.gpu_memory_utilization):
        at = "" if g.gpu_memory_utilization is None else \
            f" at gpu_memory_utilization {g.gpu_memory_utilization:g}"
        errors.append(f"{where}: memory error (OOM) with max_loras {g.max_loras}, rank {g.max_lora_rank}"
                      + at)
    return errors


def _few(items: list[str]) -> str:
    return str(items[:5]) + (" ..." if len(items) > 5 else "")


def evaluate(problem: Instance, plan: Result, oracle: Oracle) -> Evaluation:
    """Judge ``plan``: structure first, then every GPU with ``oracle`` at the plan's own settings."""
    errors = check_plan(problem, plan, oracle.profile(problem))
    index = problem.index
    queries, slots = [], []
    for j, g in enumerate(plan.gpus):
        idx = np.array([index[a] for a in dict.fromkeys(g.adapters) if a in index], dtype=np.int64)
        if idx.size and g.max_loras >= 1:
            queries.append((idx, g.max_loras, g.max_lora_rank, g.max_cpu_loras))
            slots.append(j)
    points = dict(zip(slots, oracle.points(problem, queries), strict=True)) if queries else {}
    checks = []
    for j, g in enumerate(plan.gpus):
        mine = tuple(e.split(": ", 1)[1] for e in errors if e.startswith(f"gpus[{j}]:"))
        p = points.get(j)
        if p is None:
            checks.append(GpuCheck(j, len(g.adapters), g.max_loras, g.max_lora_rank, g.max_cpu_loras, False,
                                   False, False, 0.0, 0.0, 1.0, mine))
            continue
        checks.append(GpuCheck(j, len(g.adapters), g.max_loras, g.max_lora_rank, g.max_cpu_loras,
                               p.feasible and not mine, p.oom, p.starved, p.throughput_tok_s, p.offered_tok_s,
                               p.starved_probability, mine))
    valid = not errors
    feasible = valid and all(c.feasible for c in checks)
    return Evaluation(valid, feasible, len(plan.gpus), oracle.name, tuple(errors), tuple(checks))
