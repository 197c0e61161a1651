"""``Result.stats``: typed solver statistics, the JSON plan's ``extra`` keys unchanged, nothing lost on a
round trip, nothing mutable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from placer.oracle import AnalyticOracle
from placer.result import Result
from placer.solve import solve
from placer.stats import RepairStats, SolverStats
from twin.errors import InputError
from twin.spec import Adapter, Instance


def _tiny() -> Instance:
    rates = [0.4, 0.2, 0.1, 0.4, 0.1]
    return Instance(name="tiny", model="llama-3.1-8b-instruct", gpu="h100-64gb",
                    adapters=tuple(Adapter(f"a{i}", 8, r) for i, r in enumerate(rates)))


def test_each_solver_fills_its_typed_fields_and_json_keeps_the_old_keys(tmp_path: Path) -> None:
    problem = _tiny()
    heur = solve(problem, "ffd-bisect", time_limit=10, oracle=AnalyticOracle(capacity_rps=0.5))
    assert isinstance(heur.stats.construction, str)
    assert heur.stats.oracle_calls is not None and heur.stats.oracle_calls > 0
    assert heur.stats.bound_s is not None and heur.stats.bound_s >= 0
    exact = solve(problem, "cpsat", time_limit=10, oracle=AnalyticOracle(capacity_rps=0.5))
    assert exact.stats.optimal_wrt == "linear model" and exact.stats.model_objective == exact.num_gpus
    doc = json.loads(json.dumps(exact.to_dict()))
    assert doc["extra"]["model_objective"] == exact.num_gpus  # the JSON contract: same keys under extra
    assert exact.extra["model_status"] == exact.stats.model_status
    path = tmp_path / "plan.json"
    exact.save(path)
    again = Result.load(path)
    assert again.stats == exact.stats and again.to_dict() == exact.to_dict()


def test_unknown_keys_of_another_version_survive_a_round_trip(tmp_path: Path) -> None:
    plan = Result(solver="x", status="feasible", num_gpus=0, lower_bound=0, runtime_s=0.0, gpus=(),
                  stats=SolverStats(rounds=3, repair=RepairStats(1, 4, 2, True, 0.5),
                                    other={"future_key": {"nested": [1, 2]}}))
    path = tmp_path / "p.json"
    plan.save(path)
    back = Result.load(path)
    assert back.stats.other["future_key"]["nested"] == (1, 2)
    assert back.to_dict()["extra"] == {"rounds": 3, "repair": {"split_gpus": 1, "simulations": 4,
                                                                "gpus_before": 2, "all_pass": True,
                                                                "seconds": 0.5},
                                       "future_key": {"nested": [1, 2]}}


def test_stats_cannot_be_mutated_through_the_result() -> None:
    stats = SolverStats(candidates={"paper": 3}, classes=[{"max_loras": 4}])
    r = Result(solver="x", status="feasible", num_gpus=0, lower_bound=0, runtime_s=0.0, gpus=(), stats=stats)
    with pytest.raises(TypeError):
        r.extra["rounds"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        r.stats.candidates["paper"] = 9  # type: ignore[index]
    assert r.stats.classes is not None and isinstance(r.stats.classes, tuple)


def test_a_broken_repair_record_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"solver": "x", "status": "feasible", "num_gpus": 0, "gpus": [],
                                "extra": {"repair": {"split_gpus": 1}}}))
    with pytest.raises(InputError, match="extra.repair"):
        Result.load(path)
