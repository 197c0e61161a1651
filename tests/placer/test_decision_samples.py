"""Samples from the placer's own plans: each GPU becomes a twin sample that reproduces it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from surrogate_fake import fake_simulate

from placer.oracle import AnalyticOracle
from placer.oracle.decisions import plan_specs
from placer.solve import solve
from surrogate.dataset import load_dataset, sweep_specs
from surrogate.sampling import sample_instance
from twin.errors import InputError
from twin.spec import Adapter, Instance, ServerSettings, Workload


def _problem() -> Instance:
    return Instance(name="d", model="llama-3.1-8b-instruct", gpu="h100-64gb",
                    workload=Workload(duration_s=120.0),
                    adapters=tuple(Adapter(f"a{i}", (8, 16)[i % 2], 0.1 * (1 + i % 3)) for i in range(12)))


def test_each_gpu_and_load_is_a_sample_that_rebuilds_its_adapters() -> None:
    problem = _problem()
    plan = solve(problem, "ffd-bisect", oracle=AnalyticOracle(capacity_rps=0.9), time_limit=10)
    assert plan.num_gpus >= 2
    specs = plan_specs(problem, plan, seed=3, loads=(1.0, 1.5))
    assert len(specs) == 2 * plan.num_gpus
    for k, spec in enumerate(specs):
        g = plan.gpus[k // 2]
        load = (1.0, 1.5)[k % 2]
        inst, kwargs = sample_instance({**spec, "sample": k})
        want = Counter((problem.adapters[problem.index[a]].rank,
                        round(problem.adapters[problem.index[a]].rate_rps * load, 6)) for a in g.adapters)
        assert Counter((a.rank, round(a.rate_rps, 6)) for a in inst.adapters) == want
        assert kwargs["max_loras"] == g.max_loras and kwargs["max_lora_rank"] == g.max_lora_rank
        assert inst.workload == problem.workload
    assert plan_specs(problem, plan, seed=3, loads=(1.0, 1.5)) == specs  # seeded
    assert len(plan_specs(problem, plan, max_gpus=1)) == 1


def test_other_server_settings_are_refused() -> None:
    problem = _problem().replace(server=ServerSettings(max_num_seqs=64))
    plan = solve(_problem(), "ffd-bisect", oracle=AnalyticOracle(capacity_rps=0.9), time_limit=10)
    with pytest.raises(InputError, match="server"):
        plan_specs(problem, plan)


def test_explicit_samples_sweep_is_resumable_and_guards_its_directory(tmp_path: Path) -> None:
    problem = _problem()
    plan = solve(problem, "ffd-bisect", oracle=AnalyticOracle(capacity_rps=0.9), time_limit=10)
    specs = plan_specs(problem, plan, loads=(1.0, 1.2))
    stats = sweep_specs(specs, tmp_path, chunk_size=2, workers=1, quiet=True, simulate=fake_simulate,
                        source="test")
    assert stats.runs == len(specs)
    frame = load_dataset(tmp_path)
    assert sorted(frame["sample"]) == list(range(len(specs))) and frame["error"].isna().all()
    again = sweep_specs(specs, tmp_path, chunk_size=2, workers=1, quiet=True, simulate=fake_simulate,
                        source="test")
    assert again.runs == 0  # every chunk recorded: nothing re-run
    with pytest.raises(InputError, match="other parameters"):
        sweep_specs(specs[:1], tmp_path, chunk_size=2, workers=1, quiet=True, simulate=fake_simulate,
                    source="test")


def test_instances_the_oracle_refuses_give_their_refused_adapters_alone() -> None:
    from placer.oracle.decisions import _alone

    problem = _problem()
    oracle = AnalyticOracle(capacity_rps=0.25)  # the 0.3 req/s adapters fit nowhere
    bad = oracle.unplaceable(problem)
    assert bad
    alone = _alone(problem, oracle)
    assert [g.adapters for g in alone.gpus] == [(problem.adapters[i].id,) for i in bad]
    specs = plan_specs(problem, alone)
    assert all(s["n_adapters"] == 1 and s["max_loras"] == 1 for s in specs)
    want = sorted(problem.adapters[i].rate_rps for i in bad)
    assert sorted(s["rates"][0] for s in specs) == pytest.approx(want)
