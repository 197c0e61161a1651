"""``placer surrogate predict --json``: the contract fields, on tiny models trained from a fake sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from surrogate_fake import fake_simulate
from typer.testing import CliRunner

from placer.cli.app import app
from surrogate import sweep, train

TINY = Path(__file__).resolve().parents[2] / "instances" / "examples" / "tiny.yaml"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("sweep")
    sweep(60, 2, data, workers=1, quiet=True, simulate=fake_simulate)
    out = tmp_path_factory.mktemp("models")
    train(data, out, iterations=20, depth=3)
    return out


def test_predict_json_fields(models: Path) -> None:
    res = CliRunner().invoke(app, ["surrogate", "predict", str(TINY), "--max-loras", "4", "--models",
                                   str(models), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert {"throughput_tok_s", "starved", "starved_probability", "oom"} <= set(doc)
    assert isinstance(doc["starved"], bool) and isinstance(doc["oom"], bool)
    assert doc["throughput_tok_s"] >= 0 and 0 <= doc["starved_probability"] <= 1 and not doc["oom"]


def test_predict_table_output(models: Path) -> None:
    res = CliRunner().invoke(app, ["surrogate", "predict", str(TINY), "--max-loras", "2", "--models",
                                   str(models)])
    assert res.exit_code == 0, res.output
    assert "throughput_tok_s" in res.stdout


def test_sweep_json(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["surrogate", "sweep", "--samples", "0", "--out", str(tmp_path), "--json"])
    assert res.exit_code != 0  # zero samples is bad input (InputError)


def test_eval_real_runs_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cli_run import run_cli

    from surrogate.evaluate import default_real_runs

    code, out, err = run_cli("surrogate", "eval", "--real-runs", str(tmp_path / "nope.csv"), "--samples", "1")
    assert code == 2 and out == ""
    assert err.strip() == f"error: {tmp_path / 'nope.csv'}: real_runs: is not a readable file"
    monkeypatch.setenv("PLACER_CALIBRATION_DIR", str(tmp_path))
    assert default_real_runs() is None  # the default is skipped when absent, an explicit path is not
    (tmp_path / "real_runs.csv").write_text("source\n")
    assert default_real_runs() == tmp_path / "real_runs.csv"
