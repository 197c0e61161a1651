"""Workloads that change: re-placement with few adapter moves (:mod:`.replan`), plan diffs (:mod:`.diff`)."""

from placer.dynamic.diff import PlanDiff, align, gpu_ids, plan_diff
from placer.dynamic.replan import ReplanResult, replan

__all__ = ["PlanDiff", "ReplanResult", "align", "gpu_ids", "plan_diff", "replan"]
