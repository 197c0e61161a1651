"""Workloads that change: re-placement with few adapter moves (:mod:`.replan`), plan diffs (:mod:`.diff`),
plans over a day (:mod:`.periods`), deployment diffs (:mod:`.deploy_diff`)."""

from placer.dynamic.diff import PlanDiff, align, gpu_ids, plan_diff
from placer.dynamic.periods import DayPlan, PeriodPlan, period_instances, solve_periods
from placer.dynamic.replan import ReplanResult, replan

__all__ = ["DayPlan", "PeriodPlan", "PlanDiff", "ReplanResult", "align", "gpu_ids", "period_instances",
           "plan_diff", "replan", "solve_periods"]
