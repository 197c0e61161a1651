"""Re-placement, plan diffs, deployment diffs and day plans, on hand-checkable instances.

The oracle is the analytic test double: a GPU serves up to 10 req/s in total whatever its adapters
(``slot_points=(1,)`` makes ``max_loras`` 1 on every GPU, so settings change only with the rank).
"""

from __future__ import annotations

import re

import pytest

from placer.check.evaluate import evaluate
from placer.dynamic import plan_diff, replan, solve_periods
from placer.dynamic.deploy_diff import diff_actions, diff_script
from placer.dynamic.exact_moves import exact_moves
from placer.oracle import AnalyticOracle
from placer.result import GpuPlan, Result
from placer.solve import solve
from placer.stats import SolverStats
from twin.errors import InputError
from twin.rates import RateProfile
from twin.spec import Adapter, Instance


def oracle() -> AnalyticOracle:
    return AnalyticOracle(capacity_rps=10.0, slot_points=(1,))


def inst(*adapters: tuple[str, int, float], profile: RateProfile | None = None) -> Instance:
    return Instance(name="t", model="llama-3.1-8b-instruct", gpu="h100-64gb",
                    adapters=tuple(Adapter(a, r, x) for a, r, x in adapters), rate_profile=profile)


def plan(problem: Instance, *gpus: tuple[str, ...]) -> Result:
    """A plan with the given adapter sets and the analytic oracle's settings."""
    o = oracle()
    index = problem.index
    out = [o.evaluate(problem, [index[a] for a in g]).gpu_plan(g) for g in gpus]
    return Result(solver="hand", status="feasible", num_gpus=len(out), lower_bound=1, runtime_s=0.0,
                  gpus=tuple(out))


OLD = inst(("a0", 8, 4.0), ("a1", 8, 4.0), ("a2", 8, 4.0), ("a3", 8, 4.0))
OLD_PLAN = plan(OLD, ("a0", "a1"), ("a2", "a3"))


def test_one_rate_doubles_gives_one_move_to_one_new_gpu() -> None:
    new = inst(("a0", 8, 8.0), ("a1", 8, 4.0), ("a2", 8, 4.0), ("a3", 8, 4.0))
    res = replan(new, OLD_PLAN, oracle=oracle(), time_limit=10)
    # GPU 0 now carries 12 > 10 req/s: a0 (the hottest) leaves; GPU 1 (8 req/s) cannot take it: a new GPU.
    assert res.diff.moved == (("a0", 0, 2),)
    assert res.diff.added == (2,) and res.diff.drained == () and res.diff.restart == ()
    assert res.plan.num_gpus == res.scratch_gpus == 3
    assert evaluate(new, res.plan, oracle()).feasible


def test_new_and_retired_adapters_are_placed_and_dropped_without_moves() -> None:
    new = inst(("a0", 8, 4.0), ("a1", 8, 4.0), ("a2", 8, 4.0), ("n0", 8, 1.0))
    res = replan(new, OLD_PLAN, oracle=oracle(), time_limit=10)
    assert res.moves == 0
    assert res.diff.retired == (("a3", 1),)
    assert [a for a, _ in res.diff.placed] == ["n0"]
    assert res.plan.num_gpus == 2 and res.diff.added == () and res.diff.drained == ()


def test_a_gpu_that_empties_is_drained() -> None:
    new = inst(("a0", 8, 4.0), ("a1", 8, 4.0))
    res = replan(new, OLD_PLAN, oracle=oracle(), time_limit=10)
    assert res.diff.drained == (1,) and res.moves == 0 and res.plan.num_gpus == 1


def test_a_higher_rank_flags_a_restart() -> None:
    old = inst(("a0", 8, 1.0), ("a1", 8, 1.0))
    old_plan = plan(old, ("a0", "a1"))
    new = inst(("a0", 8, 1.0), ("a1", 8, 1.0), ("n0", 64, 1.0))
    res = replan(new, old_plan, oracle=oracle(), time_limit=10)
    assert res.plan.num_gpus == 1 and res.plan.gpus[0].max_lora_rank == 64
    assert res.diff.restart == (0,)


def test_max_moves_zero_keeps_gpus_instead_of_consolidating() -> None:
    new = inst(("a0", 8, 2.0), ("a1", 8, 2.0), ("a2", 8, 2.0), ("a3", 8, 2.0))  # 8 req/s fit one GPU
    free = replan(new, OLD_PLAN, oracle=oracle(), time_limit=10)
    assert free.plan.num_gpus == 1 and free.moves == 2
    held = replan(new, OLD_PLAN, oracle=oracle(), time_limit=10, max_moves=0)
    assert held.plan.num_gpus == 2 and held.moves == 0 and held.extra_gpus == 1
    costly = replan(new, OLD_PLAN, oracle=oracle(), time_limit=10, move_cost=0.6)  # 2 moves > 1 GPU
    assert costly.plan.num_gpus == 2 and costly.moves == 0


def test_same_seed_same_plan() -> None:
    new = inst(("a0", 8, 8.0), ("a1", 8, 4.0), ("a2", 8, 4.0), ("a3", 8, 4.0))
    a = replan(new, OLD_PLAN, oracle=oracle(), time_limit=10, seed=3)
    b = replan(new, OLD_PLAN, oracle=oracle(), time_limit=10, seed=3)
    assert a.plan.gpus == b.plan.gpus and a.diff == b.diff


@pytest.mark.parametrize(("kwargs", "field"), [({"max_moves": -1}, "max_moves"),
                                               ({"move_cost": -0.5}, "move_cost"),
                                               ({"time_limit": 0}, "time_limit")])
def test_bad_arguments_name_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(InputError) as exc:
        replan(OLD, OLD_PLAN, oracle=oracle(), **kwargs)  # type: ignore[arg-type]
    assert exc.value.field == field


def test_deploy_diff_loads_before_unloading_and_restarts_only_changed_settings() -> None:
    keep = (("a0", 8, 3.0), ("a1", 8, 3.0), ("b0", 8, 1.0), ("b1", 8, 1.0), ("d0", 8, 3.5), ("d1", 8, 3.0))
    old = inst(*keep, ("a2", 8, 3.0))
    old_plan = plan(old, ("a0", "a1", "a2"), ("b0", "b1"), ("d0", "d1"))
    # a2 gets hotter: GPU 0 (12 req/s) evicts it and GPU 1 (2 req/s) takes it at run time; the new c0
    # (rank 32, 2.5 req/s) fits GPU 0 (8.5) and GPU 2 (9.0): best fit, GPU 2, whose rank goes 8 -> 32.
    new = inst(*keep, ("a2", 8, 6.0), ("c0", 32, 2.5))
    res = replan(new, old_plan, oracle=oracle(), time_limit=10)
    assert res.diff.moved == (("a2", 0, 1),) and res.diff.placed == (("c0", 2),)
    assert res.diff.restart == (2,)
    text = diff_script(new, old_plan, res.plan).text
    lines = text.splitlines()

    def where(pattern: str) -> list[int]:
        return [k for k, line in enumerate(lines) if re.match(pattern, line)]

    load, unload = where(r"load 1 a2 "), where(r"unload 0 a2 ")
    assert len(load) == 1 and len(unload) == 1 and load[0] < unload[0]
    assert '"lora_path": "adapters/a2"' in lines[load[0]]
    restarted = {int(m.group(1)) for line in lines if (m := re.match(r"stop_server (\d+)  # restart", line))}
    changed = {gid for gid, g in zip([0, 1, 2], res.plan.gpus, strict=True)
               if (g.max_loras, g.max_cpu_loras, g.max_lora_rank) != (
                   old_plan.gpus[gid].max_loras, old_plan.gpus[gid].max_cpu_loras,
                   old_plan.gpus[gid].max_lora_rank)}
    assert restarted == set(res.diff.restart) == changed
    _, acts = diff_actions(old_plan, res.plan)
    kinds = [a.kind for a in acts]
    last_up = max(k for k, a in enumerate(acts) if a.kind in ("load", "restart", "start"))
    assert kinds.index("routes") > last_up
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in text


def test_deploy_diff_starts_added_and_stops_drained_servers_last() -> None:
    old_plan = plan(OLD, ("a0", "a1"), ("a2", "a3"))
    new_plan = Result(solver="hand", status="feasible", num_gpus=2, lower_bound=1, runtime_s=0.0,
                      gpus=(old_plan.gpus[0], GpuPlan(("a2", "a3"), 1, 2, 8)),
                      stats=SolverStats(gpu_ids=(0, 5)))
    d, acts = diff_actions(old_plan, new_plan)
    assert d.added == (5,) and d.drained == (1,) and d.moves == 2
    assert acts[0].kind == "start" and acts[0].gpu == 5
    assert acts[-1].kind == "stop" and acts[-1].gpu == 1
    text = diff_script(OLD, old_plan, new_plan, base_port=9000).text
    assert "CUDA_VISIBLE_DEVICES=5" in text and "--port 9005" in text


def test_plan_diff_of_a_plan_with_itself_is_empty() -> None:
    d = plan_diff(OLD_PLAN, OLD_PLAN)
    assert d.moved == d.placed == d.retired == d.added == d.drained == d.restart == ()
    assert d.kept == (0, 1)


def test_three_period_day() -> None:
    day_inst = inst(("a0", 8, 2.0), ("a1", 8, 2.0), ("a2", 8, 2.0), ("a3", 8, 2.0),
                    profile=RateProfile(periods=(0.5, 1.0, 1.5)))
    day = solve_periods(day_inst, time_limit=10, oracle=oracle())
    # 4, 8 and 12 req/s at 10 req/s per GPU: 1, 1 and 2 GPUs; the peak all day needs 2
    assert [p.plan.num_gpus for p in day.periods] == [1, 1, 2]
    assert day.static_gpus == 2
    assert day.gpu_hours == 4.0 and day.static_gpu_hours == 6.0
    assert day.periods[1].diff is not None and day.periods[1].diff.moves == 0
    assert day.periods[2].diff is not None and day.periods[2].diff.added == (1,)


def test_exact_moves_matches_the_hand_optimum() -> None:
    new = inst(("a0", 8, 8.0), ("a1", 8, 4.0), ("a2", 8, 4.0), ("a3", 8, 4.0))
    e = exact_moves(new, OLD_PLAN, oracle(), time_limit=20)
    assert (e.num_gpus, e.moves) == (3, 1) and e.gpus_optimal and e.moves_optimal
    assert solve(new, oracle=oracle(), time_limit=10).num_gpus == 3


def test_surplus_gpus_are_drained_at_once_with_the_fewest_moves() -> None:
    # a1, a3 retire and n0 arrives: 4 + 4 + 1 + 1 = 10 req/s fit one GPU. Every GPU keeps one adapter; the
    # drain empties the fewest adapters, then least load, then lowest id first (GPU 2: a4, GPU 0: a0):
    # 2 moves, GPU 1 kept; no plan on one GPU moves fewer than 2 of the 3 served adapters.
    old = inst(("a0", 8, 4.0), ("a1", 8, 4.0), ("a2", 8, 4.0), ("a3", 8, 4.0), ("a4", 8, 1.0))
    old_plan = plan(old, ("a0", "a1"), ("a2", "a3"), ("a4",))
    new = inst(("a0", 8, 4.0), ("a2", 8, 4.0), ("a4", 8, 1.0), ("n0", 8, 1.0))
    res = replan(new, old_plan, oracle=oracle(), time_limit=10)
    assert res.plan.num_gpus == res.scratch_gpus == 1
    assert res.moves == 2 and res.diff.kept == (1,) and res.diff.drained == (0, 2)
    assert evaluate(new, res.plan, oracle()).feasible
    capped = replan(new, old_plan, oracle=oracle(), time_limit=10, max_moves=1)  # the drain needs 2 moves
    assert capped.moves <= 1 and capped.plan.num_gpus == 2
