"""Regression tests of issue 15: exit codes, untruncated tables, one-line errors, consistent wording."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from cli_run import run_cli
from rich.table import Table

from placer.problem.io import write_instance
from twin.spec import Adapter, Instance, Workload


@pytest.fixture()
def hot(tmp_path: Path) -> tuple[Path, Path]:
    """Four busy adapters (≈ 33k tok/s offered) all on one GPU: the twin says it starves."""
    inst = Instance(name="hot", model="llama-3.1-8b-instruct", gpu="h100-64gb",
                    workload=Workload(duration_s=60.0),
                    adapters=tuple(Adapter(f"a{i}", 8, 20.0) for i in range(4)))
    path = tmp_path / "hot.yaml"
    write_instance(inst, path)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"solver": "x", "status": "feasible", "num_gpus": 1, "gpus": [
        {"adapters": [f"a{i}" for i in range(4)], "max_loras": 4, "max_cpu_loras": 4, "max_lora_rank": 8}]}))
    return path, plan


def test_verify_exits_1_when_the_plan_fails(hot: tuple[Path, Path]) -> None:
    code, out, _ = run_cli("verify", str(hot[0]), str(hot[1]), "--workers", "1")
    assert code == 1, out
    assert "NOT feasible" in out and "GPU 0 starves" in out
    assert "1 GPU simulated" in out  # singular
    code, out, _ = run_cli("verify", str(hot[0]), str(hot[1]), "--workers", "1", "--json")
    assert code == 1
    assert json.loads(out)["feasible"] is False


def test_tables_never_truncate_in_a_pipe_or_a_narrow_terminal() -> None:
    from placer.cli.common import _Console

    def table() -> Table:
        t = Table()
        for col in ("GPU", "adapters", "max_loras", "max_cpu_loras", "max_lora_rank", "pred. tok/s",
                    "offered tok/s", "p_starved", "a-very-long-solver-name-column"):
            t.add_column(col)
        t.add_row(*(["greedy-paper-with-a-long-name"] * 9))
        return t

    pipe = io.StringIO()
    _Console(file=pipe, width=80).print(table())
    text = pipe.getvalue()
    assert "…" not in text and "max_lora_rank" in text and "greedy-paper-with-a-long-name" in text
    narrow = io.StringIO()
    _Console(file=narrow, width=60, force_terminal=True).print(table())
    assert "…" not in narrow.getvalue()  # folded onto more lines, never cut


def test_sampled_verification_says_feasible_for_the_sample_only() -> None:
    from placer.check.verify import VerifyReport

    report = VerifyReport(feasible=True, num_gpus=11, simulated=(0, 4, 7), gpus=())
    assert report.summary() == "3 of 11 GPUs simulated: feasible for the sampled GPUs only " \
                               "(the others were not checked)"
    assert VerifyReport(feasible=True, num_gpus=1, simulated=(0,), gpus=()).summary() == \
        "1 GPU simulated: feasible"


def test_sweep_progress_never_reaches_stdout_or_a_redirected_stderr(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from surrogate_fake import fake_simulate

    from surrogate.dataset import sweep

    sweep(4, 1, tmp_path, chunk_size=2, workers=1, quiet=False, simulate=fake_simulate)
    out, err = capsys.readouterr()
    assert out == "" and "twin runs" not in err


@pytest.fixture()
def two_tiny_files(tmp_path: Path) -> tuple[Path, Path]:
    """Two files sharing ``name: tiny``; in the second one adapter is too hot for any GPU (infeasible)."""
    adapters = tuple(Adapter(f"a{i}", 8, 0.2) for i in range(4))
    ok = Instance(name="tiny", model="llama-3.1-8b-instruct", gpu="h100-64gb", adapters=adapters)
    hot = ok.replace(adapters=(*adapters[:3], Adapter("a3", 8, 500.0)))
    write_instance(ok, tmp_path / "ok.yaml")
    write_instance(hot, tmp_path / "hot.yaml")
    return tmp_path / "ok.yaml", tmp_path / "hot.yaml"


def test_compare_groups_by_file_not_by_name(two_tiny_files: tuple[Path, Path], tmp_path: Path) -> None:
    from placer.check.compare import compare
    from placer.reporting.charts import compare_chart

    rows = compare(list(two_tiny_files), ["greedy-paper", "ffd-bisect"], oracle="analytic")
    assert [r.file for r in rows] == [str(two_tiny_files[0])] * 2 + [str(two_tiny_files[1])] * 2
    assert {r.instance for r in rows} == {"tiny"}
    assert [r.status for r in rows[2:]] == ["infeasible"] * 2
    svg = compare_chart(rows, tmp_path / "c.svg").read_text()
    assert "ok.yaml" in svg and "hot.yaml" in svg and "best lower bound" in svg  # two groups, bound in legend
    code, out, _ = run_cli("compare", *map(str, two_tiny_files), "--solver", "ffd-bisect", "--oracle",
                           "analytic", "--json")  # --solver is an alias of --solvers
    assert code == 0 and [r["file"] for r in json.loads(out)] == list(map(str, two_tiny_files))


def test_compare_pays_the_one_off_warm_up_before_timing(two_tiny_files: tuple[Path, Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import placer.check.compare
    from placer.oracle.backends import AnalyticOracle

    class ColdStart(AnalyticOracle):
        cold = True  # like a surrogate loaded (or a kernel compiled) once per process

        def _predict(self, problem, queries):  # type: ignore[no-untyped-def]
            if ColdStart.cold:
                ColdStart.cold = False
                time.sleep(0.5)
            return super()._predict(problem, queries)

    monkeypatch.setattr(placer.check.compare, "make_oracle", lambda problem, kind, **kw: ColdStart())
    rows = placer.check.compare.compare([two_tiny_files[0]], ["greedy-paper", "ffd-bisect"],
                                        oracle="analytic")
    assert max(r.runtime_s for r in rows) < 0.4


def test_every_solver_reports_the_same_best_bound_and_says_what_optimal_means() -> None:
    import placer

    problem = placer.read_instance(Path(__file__).parents[2] / "instances/examples/medium.yaml")
    heuristic = placer.solve(problem, "ffd-bisect", time_limit=30)
    exact = placer.solve(problem, "cpsat", time_limit=30)
    assert heuristic.lower_bound == exact.lower_bound == 3
    for r in (heuristic, exact):
        doc = r.to_dict()
        assert doc["optimal_wrt"] == ("linear model" if r.status == "optimal" else None)
        if r.status == "optimal":
            assert r.status_text == "optimal (for the linear model)"


def _tiny_on(tmp_path: Path, gpu: str) -> Path:
    inst = Instance(name="tiny", model="llama-3.1-8b-instruct", gpu="h100-64gb",
                    adapters=(Adapter("a0", 8, 0.2), Adapter("a1", 16, 0.1)))
    path = tmp_path / f"tiny-{gpu}.yaml"
    write_instance(inst, path)
    path.write_text(path.read_text().replace("gpu: h100-64gb", f"gpu: {gpu}"))
    return path


def test_an_unshipped_surrogate_names_file_field_value_and_suggests_the_twin(tmp_path: Path) -> None:
    from twin.catalogue import load_profile

    load_profile.cache_clear()  # the uncalibrated note is said once per process: make this the first time
    path = _tiny_on(tmp_path, "h100-80gb")
    code, out, err = run_cli("solve", str(path))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"error: {path}: gpu: ") and "'h100-80gb'" in lines[-1]
    assert "--oracle twin" in lines[-1] and "'llama-3.1-8b-instruct'" in lines[-1]
    assert "Warning" not in err and "warnings.warn" not in err and ".py:" not in err  # no raw Python warning
    assert [line for line in lines if line.startswith("note: ")] == [lines[0]] and "UNCALIBRATED" in lines[0]


def test_an_unknown_gpu_lists_every_accepted_value(tmp_path: Path) -> None:
    code, _, err = run_cli("solve", str(_tiny_on(tmp_path, "a100-40gb")))
    assert code == 2 and "'a100-40gb'" in err
    assert "h100-64gb" in err and "h100-80gb" in err and "a100-80gb" in err


def test_a_plan_for_another_instance_names_the_plan_file(tmp_path: Path, hot: tuple[Path, Path]) -> None:
    code, _, err = run_cli("verify", str(_tiny_on(tmp_path, "h100-64gb")), str(hot[1]))
    assert code == 2 and err.startswith(f"error: {hot[1]}: ")


def test_the_infeasible_reason_is_printed_once_on_stderr(two_tiny_files: tuple[Path, Path]) -> None:
    code, out, err = run_cli("solve", str(two_tiny_files[1]), "--oracle", "analytic")
    assert code == 2
    assert "fits on no GPU even alone" not in out and err.count("fits on no GPU even alone") == 1


def test_twin_simulate_rejects_more_slots_than_adapters(tmp_path: Path) -> None:
    path = _tiny_on(tmp_path, "h100-64gb")
    code, out, err = run_cli("twin", "simulate", str(path), "--max-loras", "10")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [err.strip()] and err.startswith(f"error: {path}: --max-loras: ")
    assert "(got 10)" in err


def test_twin_table_shows_integer_kv_tokens_and_plain_version_words(tmp_path: Path) -> None:
    import re

    from placer.cli.twin import version_text

    assert version_text("1.2") == "v1.2" and version_text("derived-from-llama@h100-64gb") == \
        "(derived-from-llama@h100-64gb)"
    code, out, _ = run_cli("twin", "simulate", str(_tiny_on(tmp_path, "h100-64gb")), "--max-loras", "2")
    assert code == 0
    kv = next(line for line in out.splitlines() if "KV cache (tokens)" in line)
    assert re.search(r"\b\d{1,3}(,\d{3})+\b", kv) and "." not in kv


def test_verify_shows_the_plans_offered_load(tmp_path: Path) -> None:
    path = _tiny_on(tmp_path, "h100-64gb")
    plan = tmp_path / "plan.json"
    assert run_cli("solve", str(path), "--oracle", "analytic", "--out", str(plan), "--json")[0] == 0
    offered = json.loads(plan.read_text())["gpus"][0]["offered_tok_s"]
    code, out, _ = run_cli("verify", str(path), str(plan), "--workers", "1")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("│   0 "))
    assert f" {offered:.0f} " in row  # the same definition as the plan (rate × mean tokens per request)


def _light(duration_s: float = 600.0) -> Instance:
    return Instance(name="light", model="llama-3.1-8b-instruct", gpu="h100-64gb",
                    workload=Workload(duration_s=duration_s),
                    adapters=(Adapter("alpha", 8, 0.05), Adapter("beta", 16, 0.05),
                              Adapter("gamma", 8, 0.02)))


def test_the_time_series_covers_the_whole_window_without_nan() -> None:
    import numpy as np

    import twin

    ts = twin.simulate(_light(), max_loras=3, seed=0, timeseries=True).timeseries
    assert ts is not None and len(ts["t_s"]) == 60 and ts["t_s"][-1] == 590.0
    for values in ts.values():
        assert np.isfinite(np.asarray(values, dtype=float)).all()


def test_twin_chart_smooths_names_adapters_and_states_the_queue_trend(tmp_path: Path,
                                                                        hot: tuple[Path, Path]) -> None:
    import twin
    from placer.problem.io import read_instance
    from placer.reporting.charts import twin_chart

    calm = twin_chart(twin.simulate(_light(), max_loras=3, seed=0, timeseries=True), tmp_path / "calm.svg")
    svg = calm.read_text()
    assert "rolling mean over 60 s" in svg and "queue growing" not in svg
    assert all(f">{a}<" in svg or f"{a}" in svg for a in ("alpha", "beta", "gamma"))  # bars named by id
    busy = twin.simulate(read_instance(hot[0]), max_loras=4, seed=0, timeseries=True)
    assert "queue growing" in twin_chart(busy, tmp_path / "busy.svg").read_text()


def test_plan_chart_states_the_margin_over_the_starvation_line(tmp_path: Path) -> None:
    from placer.problem.memory import tokens_per_request
    from placer.reporting.charts import plan_chart
    from placer.result import GpuPlan, Result

    problem = _light()
    offered = float(problem.rates.sum()) * tokens_per_request(problem)
    gpu = GpuPlan(adapters=("alpha", "beta", "gamma"), max_loras=3, max_cpu_loras=3, max_lora_rank=16,
                  predicted_throughput_tok_s=0.9 * offered * 1.01, offered_tok_s=offered)
    plan = Result(solver="x", status="feasible", num_gpus=1, lower_bound=1, runtime_s=0.0, gpus=(gpu,))
    svg = plan_chart(problem, plan, tmp_path / "p.svg").read_text()
    assert "+1%" in svg and "margin above the starvation line" in svg


def test_a_cold_simulator_says_it_is_compiling_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import twin.engine
    from twin._numba import core as _core

    path = _tiny_on(tmp_path, "h100-64gb")
    monkeypatch.setattr(twin.engine, "simulator_compiled", lambda: False)  # as on a fresh install
    code, out, err = run_cli("twin", "simulate", str(path), "--max-loras", "2", "--json")
    assert code == 0 and json.loads(out)["oom"] is False
    assert err.count("compiling the simulator (first run only") == 1
    monkeypatch.undo()
    assert _core.run_core.overloads and twin.engine.simulator_compiled() is True  # compiled now: quiet
    code, _, err = run_cli("twin", "simulate", str(path), "--max-loras", "2", "--json")
    assert code == 0 and "compiling" not in err


def test_readme_installs_extras_from_the_checkout_and_has_troubleshooting() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert "pip install 'lora-placer[" not in readme  # not on any index: that line fails
    assert "pip install '.[vllm]'" in readme
    trouble = readme.split("## Troubleshooting", 1)[1].split("\n## ", 1)[0]
    for message in ("compiling the simulator", "UNCALIBRATED", "no shipped surrogate", "--oracle twin",
                    "unknown GPU profile", "plan does not fit the instance", "fits on no GPU even alone",
                    "starves", "Exit codes"):
        assert message in trouble


def test_seeds_report_the_fraction_that_pass_and_verify_exits_1_unless_all_do(hot: tuple[Path, Path]) -> None:
    code, out, _ = run_cli("twin", "simulate", str(hot[0]), "--max-loras", "4", "--seeds", "3", "--json")
    d = json.loads(out)
    assert code == 0 and d["seeds"] == [0, 1, 2] and d["seed_passed"] == [False] * 3
    assert d["pass_fraction"] == 0.0 and d["seed"] == 0 and "throughput_tok_s" in d
    code, out, _ = run_cli("twin", "simulate", str(hot[0]), "--max-loras", "4", "--seeds", "2")
    assert code == 0 and "0 of 2 (0%)" in out
    code, out, _ = run_cli("verify", str(hot[0]), str(hot[1]), "--workers", "1", "--seeds", "2", "--json")
    d = json.loads(out)
    assert code == 1 and d["seed_feasible"] == [False, False] and d["pass_fraction"] == 0.0
    assert d["gpus"][0]["seed_passed"] == [False, False] and "fails on 2 of 2 seeds" in d["failures"][0]
    code, out, _ = run_cli("verify", "--help")
    assert code == 0 and "every seed" in " ".join(out.split())
    code, _, err = run_cli("twin", "simulate", str(hot[0]), "--max-loras", "4", "--seeds", "0")
    assert code == 2 and "seeds" in err
