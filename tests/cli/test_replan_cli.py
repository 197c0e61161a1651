"""``placer replan``, ``placer deploy --diff`` and ``placer solve --periods``, end to end (surrogate)."""

from __future__ import annotations

import json
from pathlib import Path

from cli_run import run_cli

from placer.dynamic.drift import scale_rates
from placer.problem.generate import generate
from placer.problem.io import write_instance
from twin.rates import RateProfile


def test_replan_json_diff_and_deploy_diff(tmp_path: Path) -> None:
    old = generate("zipf", 30, seed=0, total_rate_rps=30.0)
    write_instance(old, tmp_path / "old.yaml")
    write_instance(scale_rates(old, 1.5), tmp_path / "new.yaml")
    code, _, err = run_cli("solve", str(tmp_path / "old.yaml"), "--out", str(tmp_path / "old.json"))
    assert code == 0, err
    code, out, err = run_cli("replan", str(tmp_path / "new.yaml"), "--from", str(tmp_path / "old.json"),
                             "--out", str(tmp_path / "new.json"), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc["diff"]) >= {"moved", "added", "drained", "restart"}
    assert doc["num_gpus"] == len(doc["gpus"]) and doc["replan"]["scratch_gpus"] >= 1
    code, out, err = run_cli("deploy", str(tmp_path / "new.yaml"), "--diff", str(tmp_path / "old.json"),
                             str(tmp_path / "new.json"), "--out", str(tmp_path / "diff.sh"), "--json")
    assert code == 0, err
    routes = json.loads((tmp_path / "routes.json").read_text())
    assert set(routes) == {a for g in doc["gpus"] for a in g["adapters"]}
    assert (tmp_path / "diff.sh").read_text().startswith("#!/usr/bin/env bash")


def test_replan_from_a_missing_plan_is_one_line_exit_2(tmp_path: Path) -> None:
    write_instance(generate("zipf", 5, seed=0), tmp_path / "new.yaml")
    code, out, err = run_cli("replan", str(tmp_path / "new.yaml"), "--from", str(tmp_path / "nope.json"))
    assert code == 2 and out == "" and "nope.json" in err and len(err.strip().splitlines()) == 1


def test_solve_periods_json(tmp_path: Path) -> None:
    inst = generate("zipf", 20, seed=0, total_rate_rps=20.0).replace(
        rate_profile=RateProfile(periods=(0.5, 1.0, 2.0)))
    write_instance(inst, tmp_path / "day.yaml")
    code, out, err = run_cli("solve", str(tmp_path / "day.yaml"), "--periods", "--json")
    assert code == 0, err
    day = json.loads(out)
    assert day["n_periods"] == 3 and len(day["periods"]) == 3
    assert day["gpu_hours"] == sum(p["num_gpus"] for p in day["periods"])
    assert day["static_gpu_hours"] == 3 * day["static_gpus"] >= day["gpu_hours"]


def test_solve_periods_without_a_profile_is_exit_2(tmp_path: Path) -> None:
    write_instance(generate("zipf", 5, seed=0), tmp_path / "flat.yaml")
    code, _, err = run_cli("solve", str(tmp_path / "flat.yaml"), "--periods")
    assert code == 2 and "rate_profile" in err and "flat.yaml" in err
