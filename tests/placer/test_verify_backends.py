"""``verify(..., backend=)``: the same per-GPU rows on every backend; bad backends fail at once, naming it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_run import run_cli

from placer.check.verify import verify
from placer.problem.io import write_instance
from placer.result import GpuPlan, Result
from twin.errors import InputError
from twin.spec import Adapter, Instance, Workload

HAS_RAY = importlib.util.find_spec("ray") is not None
TIMING = ("wall_s",)  # the twin's own wall-clock time per GPU: a measurement, not a result


def _problem() -> Instance:
    # 4 GPUs of 3 adapters, different loads: GPU 3 (3 × 20 req/s at max_loras 1) starves, the others pass
    rates = (0.5, 1.0, 2.0, 20.0)
    adapters = tuple(Adapter(f"a{g}{k}", (8, 16, 32)[k], rates[g]) for g in range(4) for k in range(3))
    return Instance(name="four", model="llama-3.1-8b-instruct", gpu="h100-64gb",
                    workload=Workload(duration_s=300.0), adapters=adapters)


def _plan() -> Result:
    gpus = tuple(GpuPlan(adapters=tuple(f"a{g}{k}" for k in range(3)), max_loras=3 if g < 3 else 1,
                         max_cpu_loras=3, max_lora_rank=32) for g in range(4))
    return Result(solver="hand", status="feasible", num_gpus=4, lower_bound=1, runtime_s=0.0, gpus=gpus)


def _rows(report: Any) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in report.gpus]


def test_local_pool_and_in_process_give_the_same_rows_in_plan_order() -> None:
    ticks: list[tuple[int, int]] = []
    pooled = verify(_problem(), _plan(), seed=3, workers=2, progress=lambda d, t: ticks.append((d, t)))
    alone = verify(_problem(), _plan(), seed=3, workers=1)
    assert [r["gpu"] for r in pooled.gpus] == [0, 1, 2, 3]  # finished in any order, reported in plan order
    assert _rows(pooled) == _rows(alone)
    assert ticks[0] == (0, 4) and ticks[-1] == (4, 4) and len(ticks) == 5
    assert not pooled.feasible and [f.split(":")[0] for f in pooled.failures] == ["GPU 3 starves"]


@pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (extra 'ray': pip install 'lora-placer[ray]')")
def test_ray_backend_gives_the_same_rows_as_the_local_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a fresh local Ray, never someone else's cluster
    ticks: list[tuple[int, int]] = []
    on_ray = verify(_problem(), _plan(), seed=3, workers=2, backend="ray",
                    progress=lambda d, t: ticks.append((d, t)))
    local = verify(_problem(), _plan(), seed=3, workers=2, backend="local")
    assert _rows(on_ray) == _rows(local) and len(on_ray.gpus) == 4
    assert (on_ray.feasible, on_ray.failures, on_ray.simulated) == (local.feasible, local.failures,
                                                                    local.simulated)
    assert ticks[-1] == (4, 4)
    sampled = verify(_problem(), _plan(), seed=5, workers=2, backend="ray", sample=2)
    assert _rows(sampled) == _rows(verify(_problem(), _plan(), seed=5, workers=2, sample=2))
    assert [r["gpu"] for r in sampled.gpus] == list(sampled.simulated) and len(sampled.simulated) == 2


def test_unknown_backend_is_an_input_error_naming_the_option_and_value() -> None:
    with pytest.raises(InputError) as err:
        verify(_problem(), _plan(), backend="dask")
    assert err.value.field == "--backend" and "'dask'" in str(err.value)


@pytest.fixture()
def files(tmp_path: Path) -> tuple[str, str]:
    inst, plan = tmp_path / "four.yaml", tmp_path / "plan.json"
    write_instance(_problem(), inst)
    plan.write_text(json.dumps(_plan().to_dict()))
    return str(inst), str(plan)


def test_cli_unknown_backend_is_one_line_exit_2(files: tuple[str, str]) -> None:
    code, out, err = run_cli("verify", *files, "--backend", "dask")
    assert code == 2 and out == ""
    assert err == "error: --backend: must be one of ['local', 'ray'] (got 'dask')\n"


def test_cli_ray_backend_without_ray_is_one_line_exit_2(files: tuple[str, str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # ``import ray`` now raises ImportError, as when missing
    code, out, err = run_cli("verify", *files, "--backend", "ray", "--workers", "1")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("error: --backend: 'ray' needs Ray, which is not installed")
    assert "pip install 'lora-placer[ray]'" in err


def test_cli_verify_backend_local_json(files: tuple[str, str]) -> None:
    code, out, _ = run_cli("verify", *files, "--backend", "local", "--workers", "1", "--sample", "2",
                           "--json")
    report = json.loads(out)
    assert report["sampled"] and len(report["gpus"]) == 2
    assert report["feasible"] == (3 not in report["simulated"])  # only GPU 3 starves
    assert code == (0 if report["feasible"] else 1)
