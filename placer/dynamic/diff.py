"""What changes between two plans of one deployment: adapter moves, GPUs added and drained, restarts.

GPUs carry **ids** across plans: a plan written by :func:`placer.dynamic.replan.replan` lists them in
``extra["gpu_ids"]`` (a plan without them numbers its GPUs 0, 1, ...). A GPU id present in both plans is a
*kept* GPU (the same vLLM server); an id only in the new plan is *added*, one only in the old plan is
*drained*. A kept GPU whose LoRA settings (``max_loras``, ``max_cpu_loras``, ``max_lora_rank``) change needs
a **restart**; one whose settings stay only loads and unloads adapters at run time.

A from-scratch plan has no ids that mean anything for the old deployment: :func:`align` gives its GPUs the
ids of the old GPUs they overlap most (a maximum-weight matching on shared adapters, Hungarian algorithm),
which is how its moves are counted fairly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from placer.result import GpuPlan, Result

GPU_IDS = "gpu_ids"  # the key of the JSON plan's extra holding each GPU's id (Result.stats.gpu_ids)


def gpu_ids(plan: Result) -> list[int]:
    """The ids of the plan's GPUs (``extra["gpu_ids"]``, else 0..n-1)."""
    ids = plan.stats.gpu_ids
    if (ids is not None and len(ids) == len(plan.gpus) and len(set(ids)) == len(ids)
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)):
        return list(ids)
    return list(range(len(plan.gpus)))


def settings(g: GpuPlan) -> tuple[int, int, int]:
    """The server settings whose change needs a restart."""
    return (g.max_loras, g.max_cpu_loras, g.max_lora_rank)


@dataclass(frozen=True)
class PlanDiff:
    """The changes from an old plan to a new one (GPU ids as in :func:`gpu_ids`)."""

    moved: tuple[tuple[str, int, int], ...]   # (adapter, from GPU id, to GPU id)
    placed: tuple[tuple[str, int], ...]       # new adapters: (adapter, GPU id)
    retired: tuple[tuple[str, int], ...]      # adapters no longer served: (adapter, old GPU id)
    added: tuple[int, ...]
    drained: tuple[int, ...]
    restart: tuple[int, ...]
    kept: tuple[int, ...]

    @property
    def moves(self) -> int:
        return len(self.moved)

    def to_dict(self) -> dict[str, Any]:
        return {"moved": [{"adapter": a, "from": f, "to": t} for a, f, t in self.moved],
                "added": list(self.added), "drained": list(self.drained), "restart": list(self.restart),
                "kept": list(self.kept),
                "runtime_only": [j for j in self.kept if j not in set(self.restart)],
                "placed": [{"adapter": a, "to": t} for a, t in self.placed],
                "retired": [{"adapter": a, "from": f} for a, f in self.retired],
                "moves": self.moves}


def plan_diff(old: Result, new: Result) -> PlanDiff:
    """The diff of two plans whose GPUs carry ids (:func:`gpu_ids`)."""
    old_ids, new_ids = gpu_ids(old), gpu_ids(new)
    where_old = {a: j for j, g in zip(old_ids, old.gpus, strict=True) for a in g.adapters}
    where_new = {a: j for j, g in zip(new_ids, new.gpus, strict=True) for a in g.adapters}
    moved = tuple((a, where_old[a], j) for a, j in where_new.items() if a in where_old and where_old[a] != j)
    placed = tuple((a, j) for a, j in where_new.items() if a not in where_old)
    retired = tuple((a, j) for a, j in where_old.items() if a not in where_new)
    old_set, new_set = set(old_ids), set(new_ids)
    kept = tuple(sorted(old_set & new_set))
    old_by = dict(zip(old_ids, old.gpus, strict=True))
    new_by = dict(zip(new_ids, new.gpus, strict=True))
    restart = tuple(j for j in kept if settings(old_by[j]) != settings(new_by[j]))
    return PlanDiff(moved=tuple(sorted(moved, key=lambda m: (m[1], m[2], m[0]))), placed=placed,
                    retired=retired, added=tuple(sorted(new_set - old_set)),
                    drained=tuple(sorted(old_set - new_set)), restart=restart, kept=kept)


def overlap_matrix(old_sets: Sequence[set[str]], new_sets: Sequence[set[str]]) -> np.ndarray:
    """Shared adapters of every (old GPU, new GPU) pair."""
    owner = {a: i for i, s in enumerate(old_sets) for a in s}
    m = np.zeros((len(old_sets), len(new_sets)), dtype=np.int64)
    for j, s in enumerate(new_sets):
        for a in s:
            i = owner.get(a)
            if i is not None:
                m[i, j] += 1
    return m


def align(old: Result, new: Result) -> Result:
    """``new`` with GPU ids matched to ``old``'s: each new GPU gets the id of the old GPU it shares most
    adapters with (maximum total overlap, Hungarian algorithm); the unmatched get fresh ids. The fewest moves
    any relabelling of ``new`` can have."""
    from scipy.optimize import linear_sum_assignment

    old_ids = gpu_ids(old)
    m = overlap_matrix([set(g.adapters) for g in old.gpus], [set(g.adapters) for g in new.gpus])
    ids: list[int | None] = [None] * len(new.gpus)
    if m.size:
        rows, cols = linear_sum_assignment(m, maximize=True)
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
            if m[i, j] > 0:
                ids[j] = old_ids[i]
    fresh = max(old_ids, default=-1) + 1
    out: list[int] = []
    for i in ids:
        if i is None:
            i, fresh = fresh, fresh + 1
        out.append(i)
    return new.replace(stats=new.stats.replace(gpu_ids=tuple(out)))
