"""verify(..., seeds=N): per-seed verdicts, the plan's pass fraction, feasible only on every seed."""

from __future__ import annotations

from placer.check.verify import verify
from placer.result import GpuPlan, Result
from twin.simulate import simulate
from twin.spec import Adapter, Instance, Workload

LLAMA = "llama-3.1-8b-instruct"


def _problem() -> Instance:
    # a0–a3: 4 × 2 req/s on 4 slots for 60 s sits on the starvation line (seeds disagree);
    # b0–b1 pass on seeds 0–3 (served ≥ 0.92)
    ads = tuple(Adapter(f"a{i}", 8, 2.0) for i in range(4))
    ads += tuple(Adapter(f"b{i}", 8, 1.0) for i in range(2))
    return Instance(name="v", model=LLAMA, gpu="h100-64gb", workload=Workload(duration_s=60.0), adapters=ads)


def _plan() -> Result:
    gpus = (GpuPlan(adapters=("a0", "a1", "a2", "a3"), max_loras=4, max_cpu_loras=4, max_lora_rank=8),
            GpuPlan(adapters=("b0", "b1"), max_loras=2, max_cpu_loras=2, max_lora_rank=8))
    return Result(solver="x", status="feasible", num_gpus=2, lower_bound=1, runtime_s=0.0, gpus=gpus)


def test_seeds_give_per_gpu_verdicts_and_the_plans_pass_fraction() -> None:
    problem, plan = _problem(), _plan()
    report = verify(problem, plan, workers=1, seeds=4)
    edge = [not simulate(problem.subset(["a0", "a1", "a2", "a3"]), max_loras=4, seed=s).starved
            for s in range(4)]
    assert 0 < sum(edge) < 4  # the edge GPU passes on some seeds only
    assert report.seeds == (0, 1, 2, 3) and report.seed_feasible == tuple(edge)
    assert report.pass_fraction == sum(edge) / 4
    assert not report.feasible  # not every seed passes
    g0, g1 = report.gpus
    assert g0["seed_passed"] == edge and g0["pass_fraction"] == sum(edge) / 4
    assert g1["seed_passed"] == [True] * 4 and g1["pass_fraction"] == 1.0
    assert g0["seed"] == 0  # the row's twin keys are the first seed's
    assert len(report.failures) == 1 and report.failures[0].startswith("GPU 0 ")
    assert f"fails on {4 - sum(edge)} of 4 seeds" in report.failures[0]
    d = report.to_dict()
    assert d["seeds"] == [0, 1, 2, 3] and d["seed_feasible"] == edge and d["pass_fraction"] == sum(edge) / 4
    assert "passes on" in report.summary()


def test_one_seed_keeps_the_old_report_and_adds_the_new_keys() -> None:
    problem, plan = _problem(), _plan()
    one = verify(problem, plan, workers=1, seed=1, only=[1])
    assert one.feasible and one.seeds == (1,) and one.pass_fraction == 1.0
    d = one.to_dict()
    assert {"feasible", "num_gpus", "sampled", "simulated", "failures", "seed", "wall_s", "gpus"} <= set(d)
    assert d["seeds"] == [1] and d["seed_feasible"] == [True] and d["pass_fraction"] == 1.0
    assert "seed_passed" not in d["gpus"][0] and d["gpus"][0]["seed"] == 1
    assert one.summary() == (f"1 of 2 GPUs simulated, checked against {one.criterion}: feasible for the "
                             "sampled GPUs only (the others were not checked)")
