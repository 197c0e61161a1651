"""``placer solve | verify | deploy | compare`` end to end on tiny instance files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_run import run_cli

from placer.problem.io import write_instance
from twin.spec import Adapter, Instance, Workload


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    inst = Instance(name="tiny", model="qwen-2.5-7b-instruct", gpu="h100-64gb",
                    workload=Workload(duration_s=900.0),
                    adapters=tuple(Adapter(f"a{i}", 8 if i % 2 else 16, 0.2) for i in range(6)))
    path = tmp_path / "tiny.yaml"
    write_instance(inst, path)
    return path


@pytest.fixture()
def invoke():
    """Run the console script in-process: (exit code, stdout)."""
    return lambda *args: run_cli(*args)[:2]


def test_solve_out_then_verify_and_deploy(tiny: Path, tmp_path: Path, invoke) -> None:
    plan = tmp_path / "plan.json"
    code, out = invoke("solve", str(tiny), "--oracle", "analytic", "--out", str(plan), "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["num_gpus"] == 1 and doc["status"] == "optimal" and doc["solver"] == "ffd-bisect"
    assert sorted(doc["gpus"][0]["adapters"]) == [f"a{i}" for i in range(6)]
    assert json.loads(plan.read_text())["gpus"] == doc["gpus"]

    code, out = invoke("verify", str(tiny), str(plan), "--json", "--workers", "1")
    assert code == 0, out
    report = json.loads(out)
    assert report["feasible"] is True and len(report["gpus"]) == 1
    assert report["gpus"][0]["starved"] is False and report["gpus"][0]["oom"] is False

    code, out = invoke("deploy", str(tiny), str(plan))
    assert code == 0
    assert "vllm serve Qwen/Qwen2.5-7B-Instruct --enable-lora" in out
    assert f"--max-loras {doc['gpus'][0]['max_loras']}" in out and "a3=adapters/a3" in out


def test_verify_rejects_a_plan_for_another_instance(tiny: Path, tmp_path: Path, invoke) -> None:
    plan = tmp_path / "bad.json"
    plan.write_text(json.dumps({"solver": "x", "status": "feasible", "num_gpus": 1, "gpus": [
        {"adapters": ["a0", "zz"], "max_loras": 1, "max_cpu_loras": 2, "max_lora_rank": 16}]}))
    code, _ = invoke("verify", str(tiny), str(plan))
    assert code == 2


def test_infeasible_instance_is_reported_with_its_reason(tmp_path: Path, invoke) -> None:
    inst = Instance(name="hot", model="llama-3.1-8b-instruct", gpu="h100-64gb",
                    adapters=(Adapter("cold", 8, 0.1), Adapter("hot", 8, 500.0)))
    path = tmp_path / "hot.yaml"
    write_instance(inst, path)
    code, out = invoke("solve", str(path), "--oracle", "analytic", "--json")
    assert code == 2
    doc = json.loads(out)
    assert doc["status"] == "infeasible" and doc["num_gpus"] == 0 and "'hot'" in doc["reason"]


def test_compare_writes_a_csv(tiny: Path, tmp_path: Path, invoke) -> None:
    csv_path = tmp_path / "cmp.csv"
    code, out = invoke("compare", str(tiny), "--solvers", "greedy-paper,ffd-bisect,round-robin",
                       "--oracle", "analytic", "--out", str(csv_path))
    assert code == 0, out
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("instance,n_adapters,model,solver,status,num_gpus,lower_bound,gap")
    assert len(lines) == 4 and all(",True," in line for line in lines[1:])


def test_unknown_solver_is_bad_input(tiny: Path, invoke) -> None:
    code, _ = invoke("solve", str(tiny), "--solver", "nope", "--oracle", "analytic")
    assert code != 0
