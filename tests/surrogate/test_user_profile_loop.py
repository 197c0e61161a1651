"""The loop a user with their own GPU runs, from files only (no source checkout): a profile JSON → a sweep
with it → models trained on it → solve with ``--profile`` and ``--models``. The profile travels with the
dataset, the models record its fingerprint, and every step uses it instead of the shipped one."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from cli_run import run_cli
from surrogate_fake import fake_simulate

from surrogate.bundle import StaleSurrogateWarning, profile_fingerprint
from surrogate.dataset import sweep, user_profiles
from surrogate.train import train
from twin.catalogue import load_profile

LLAMA, GPU = "llama-3.1-8b-instruct", "h100-64gb"
EXAMPLES = Path(__file__).resolve().parents[2] / "instances" / "examples"
SEEN: list[Any] = []


def _recording_simulate(instance: Any, **kwargs: Any) -> Any:
    SEEN.append(kwargs.get("profile"))
    return fake_simulate(instance, **kwargs)


def _my_profile(tmp_path: Path) -> tuple[Path, Any]:
    base = load_profile(LLAMA, GPU)
    mine = base.replace(step=replace(base.step, base_ms=base.step.base_ms * 1.3), version="mine-1")
    path = tmp_path / "mine.json"
    mine.save(path)
    return path, mine


def test_a_users_profile_goes_through_sweep_train_and_solve(tmp_path: Path) -> None:
    path, mine = _my_profile(tmp_path)
    data = tmp_path / "sweep"
    SEEN.clear()
    sweep(24, 0, data, workers=1, chunk_size=8, quiet=True, simulate=_recording_simulate,
          user_profiles=(mine,), duration_s=600.0)
    assert SEEN and all(p == mine for p in SEEN)  # every run simulated the user's profile
    assert user_profiles(data) == {mine.name: mine}  # and the dataset carries it
    manifest = json.loads((data / "manifest.json").read_text())
    digest = profile_fingerprint(mine.name, mine)["profile_sha256"]
    assert manifest["params"]["user_profiles"] == {mine.name: digest}
    models = tmp_path / "models"
    bundles = train(data, models, iterations=30, depth=3)
    assert bundles[mine.name].meta["profile_version"] == "mine-1"
    assert bundles[mine.name].meta["profile_sha256"] == profile_fingerprint(mine.name, mine)["profile_sha256"]
    # the fake twin of this test has no latency: the models judge the papers' rule only
    code, out, err = run_cli("solve", str(EXAMPLES / "tiny.yaml"), "--profile", str(path), "--models",
                             str(models), "--criterion", "paper", "--json", "--time-limit", "20")
    assert code == 0, err
    assert json.loads(out)["num_gpus"] >= 1
    assert StaleSurrogateWarning.__name__ not in err and "trained on twin profile" not in err


def test_models_trained_on_the_shipped_profile_warn_when_given_another(tmp_path: Path) -> None:
    path, _ = _my_profile(tmp_path)
    code, _, err = run_cli("surrogate", "predict", str(EXAMPLES / "tiny.yaml"), "--max-loras", "2",
                           "--profile", str(path), "--json")
    assert code == 0
    assert "trained on twin profile" in err  # the shipped models were not trained on the user's profile
