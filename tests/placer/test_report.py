"""Charts and placement reports: the files a person looks at and hands on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_run import run_cli

import twin
from placer.check.compare import CompareRow
from placer.problem.io import read_instance
from placer.reporting.charts import compare_chart, plan_chart, twin_chart
from placer.reporting.report import MARKER, write_report
from placer.result import GpuPlan, Result
from twin.errors import InputError
from twin.spec import Adapter, Workload

TINY = Path(__file__).resolve().parents[2] / "instances" / "examples" / "tiny.yaml"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def problem() -> twin.Instance:
    return read_instance(TINY).replace(workload=Workload(duration_s=120.0))


def _plan(*groups: tuple[str, int, int]) -> Result:
    gpus = tuple(GpuPlan(adapters=tuple(ids.split()), max_loras=s, max_cpu_loras=len(ids.split()),
                         max_lora_rank=r, predicted_throughput_tok_s=1000.0, offered_tok_s=1000.0)
                 for ids, s, r in groups)
    return Result(solver="hand", status="feasible", num_gpus=len(gpus), lower_bound=1, runtime_s=0.5,
                  gpus=gpus, instance="tiny")


TWO = (("a0 a1 a2", 3, 16), ("a3 a4", 2, 32))


def test_plan_chart_png_and_svg(problem: twin.Instance, tmp_path: Path) -> None:
    plan = _plan(*TWO)
    assert plan_chart(problem, plan, tmp_path / "p.png").read_bytes().startswith(PNG)
    svg = plan_chart(problem, plan, tmp_path / "p.svg").read_text()
    assert "<svg" in svg and "rank 32" in svg and "max_loras" in svg


def test_chart_suffix_must_be_png_or_svg(problem: twin.Instance, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"\.png or \.svg"):
        plan_chart(problem, _plan(*TWO), tmp_path / "p.gif")
    assert not list(tmp_path.iterdir())


def test_twin_chart_shows_starving_adapters_and_oom(problem: twin.Instance, tmp_path: Path) -> None:
    hot = problem.replace(adapters=tuple(Adapter(a.id, a.rank, 40.0 if a.id == "a0" else a.rate_rps)
                                         for a in problem.adapters))
    sim = twin.simulate(hot, max_loras=1, seed=0, timeseries=True)
    assert sim.timeseries is not None
    svg = twin_chart(sim, tmp_path / "t.svg", title="hot").read_text()
    assert "served fraction per adapter" in svg and "waiting" in svg
    if sim.starved:
        assert "STARVED" in svg and "below 90% served" in svg
    oom = twin.simulate(problem, max_loras=100_000, max_cpu_loras=100_000, max_lora_rank=512, seed=0)
    assert oom.oom
    assert "cannot start" in twin_chart(oom, tmp_path / "o.svg").read_text()


def test_compare_chart_marks_the_lower_bound(tmp_path: Path) -> None:
    rows = [CompareRow("tiny", 5, "m", s, "feasible", g, 2, 0.0, t, ok, "")
            for s, g, t, ok in (("a", 2, 0.01, True), ("b", 3, 1.5, True), ("c", 1, 0.2, False))]
    svg = compare_chart(rows, tmp_path / "c.svg").read_text()
    assert "lower bound" in svg and "wall time" in svg
    assert compare_chart([r.to_dict() for r in rows], tmp_path / "c.png").read_bytes().startswith(PNG)


def test_report_folder_has_plan_launch_verification_charts_and_summary(problem: twin.Instance,
                                                                      tmp_path: Path) -> None:
    plan = _plan(("a0 a1 a2 a3 a4", 5, 32))
    out = write_report(problem, plan, tmp_path / "rep", workers=1)
    names = {p.name for p in out.iterdir()}
    assert {"README.md", "plan.json", "instance.yaml", "launch.sh", "launch.json", "routes.json",
            "verification.json", "plan.png", "gpu-0-twin.png", MARKER} <= names
    assert Result.load(out / "plan.json") == plan
    assert read_instance(out / "instance.yaml") == problem
    launch = (out / "launch.sh").read_text()
    assert "vllm serve meta-llama/Llama-3.1-8B-Instruct --enable-lora --max-loras 5" in launch
    assert "trap " in launch and "/health" in launch
    routes = json.loads((out / "routes.json").read_text())
    assert routes == {f"a{i}": "http://localhost:8000" for i in range(5)}
    check = json.loads((out / "verification.json").read_text())
    readme = (out / "README.md").read_text()
    assert "**1 GPU**" in readme and "![plan](plan.png)" in readme
    assert ("**feasible**" in readme) == check["feasible"]
    assert "| 0 | 5 | 8, 16, 32 | 5 | 5 | 32 |" in readme
    assert not [p for p in tmp_path.iterdir() if p.name != "rep"]  # no temporary sibling left


def test_report_replaces_an_old_report_but_no_other_folder(problem: twin.Instance, tmp_path: Path) -> None:
    plan = _plan(*TWO)
    out = write_report(problem, plan, tmp_path / "rep", verify=False, charts=False)
    write_report(problem, plan.replace(solver="second"), out, verify=False, charts=False)
    assert Result.load(out / "plan.json").solver == "second"
    assert "not run" in (out / "README.md").read_text()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a placer report"):
        write_report(problem, plan, other, verify=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        write_report(problem, plan, tmp_path / "file", verify=False)
    assert (other / "notes.txt").read_text() == "keep me"


def test_report_rejects_a_plan_that_does_not_fit(problem: twin.Instance, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown adapter ids"):
        write_report(problem, _plan(("a0 a1 a2 a3 a4 zz", 2, 32)), tmp_path / "rep")
    assert not list(tmp_path.iterdir())


def test_report_of_an_infeasible_result_says_why(problem: twin.Instance, tmp_path: Path) -> None:
    none = Result(solver="hand", status="infeasible", num_gpus=0, lower_bound=0, runtime_s=0.0, gpus=(),
                  reason="adapter 'a4' fits on no GPU even alone")
    out = write_report(problem, none, tmp_path / "rep")
    readme = (out / "README.md").read_text()
    assert "**No plan**: adapter 'a4' fits on no GPU even alone" in readme
    assert not (out / "launch.sh").exists() and not (out / "routes.json").exists()


# --- the CLI hooks: --plot on solve / compare / twin simulate, --report on solve --------------------------
def test_cli_plot_and_report_options(problem: twin.Instance, tmp_path: Path) -> None:
    from placer.problem.io import write_instance

    inst = tmp_path / "tiny.yaml"
    write_instance(problem, inst)
    code, out, err = run_cli("solve", str(inst), "--oracle", "analytic", "--plot", str(tmp_path / "p.svg"),
                          "--report", str(tmp_path / "rep"), "--json")
    assert code == 0, err
    doc = json.loads(out)  # --json: only JSON on stdout, progress stays off
    assert doc["num_gpus"] == 1 and "verification" in doc
    assert "<svg" in (tmp_path / "p.svg").read_text()
    assert (tmp_path / "rep" / "README.md").exists() and (tmp_path / "rep" / "verification.json").exists()
    code, out, err = run_cli("twin", "simulate", str(inst), "--max-loras", "2",
                          "--plot", str(tmp_path / "t.png"))
    assert code == 0, err
    assert (tmp_path / "t.png").read_bytes().startswith(PNG) and "chart written" in out
    code, out, err = run_cli("compare", str(inst), "--solvers", "ffd-bisect,least-loaded",
                          "--oracle", "analytic", "--plot", str(tmp_path / "c.svg"), "--time-limit", "5")
    assert code == 0, err
    assert "lower bound" in (tmp_path / "c.svg").read_text()
    code, _out, err = run_cli("solve", str(inst), "--oracle", "analytic", "--plot", str(tmp_path / "p.gif"))
    assert code == 2 and "png or .svg" in err and not (tmp_path / "p.gif").exists()
