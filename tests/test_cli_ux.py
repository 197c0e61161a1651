"""Regression tests of issue 15: exit codes, untruncated tables, one-line errors, consistent wording."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from cli_run import run_cli
from rich.table import Table

from placer.io import write_instance
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
    from placer.commands._common import _Console

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
    from placer.verify import VerifyReport

    report = VerifyReport(feasible=True, num_gpus=11, simulated=(0, 4, 7), gpus=())
    assert report.summary() == "3 of 11 GPUs simulated: feasible for the sampled GPUs only " \
                               "(the others were not checked)"
    assert VerifyReport(feasible=True, num_gpus=1, simulated=(0,), gpus=()).summary() == \
        "1 GPU simulated: feasible"


def test_sweep_progress_never_reaches_stdout_or_a_redirected_stderr(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from surrogate.dataset import sweep
    from surrogate_fake import fake_simulate

    sweep(4, 1, tmp_path, chunk_size=2, workers=1, quiet=False, simulate=fake_simulate)
    out, err = capsys.readouterr()
    assert out == "" and "twin runs" not in err
