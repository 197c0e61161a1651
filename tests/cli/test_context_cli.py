"""``--profile FILE`` and ``--models DIR`` on the commands that simulate or predict: a user's own calibrated
profile (or trained models) works from the command line, and a file for another model/GPU is refused."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from cli_run import run_cli

from twin.catalogue import load_profile

EXAMPLES = Path(__file__).resolve().parents[2] / "instances" / "examples"
LLAMA, QWEN, GPU = "llama-3.1-8b-instruct", "qwen-2.5-7b-instruct", "h100-64gb"


def _small_gpu_profile(tmp_path: Path, slots_at_rank_32: int = 2) -> Path:
    """The shipped Llama profile on a GPU whose KV cache leaves room for ``slots_at_rank_32`` rank-32
    slots."""
    base = load_profile(LLAMA, GPU)
    mem = replace(base.memory, table=())
    per_slot = mem.kv_per_slot_rank * 32 + mem.kv_per_slot
    kv_base = base.max_model_len + per_slot * (slots_at_rank_32 + 0.5)
    small = base.replace(memory=replace(mem, kv_base_tokens=kv_base), version="test-small-gpu")
    path = tmp_path / "small.json"
    small.save(path)
    return path


def test_solve_and_verify_use_the_given_profile(tmp_path: Path) -> None:
    prof = _small_gpu_profile(tmp_path)
    plan = tmp_path / "plan.json"
    code, out, err = run_cli("solve", str(EXAMPLES / "tiny.yaml"), "--profile", str(prof), "--out", str(plan),
                             "--json", "--time-limit", "20")
    assert code == 0, err
    doc = json.loads(out)
    rank32 = [g for g in doc["gpus"] if g["max_lora_rank"] == 32]
    assert rank32 and all(g["max_loras"] <= 2 for g in rank32)
    code, out, err = run_cli("solve", str(EXAMPLES / "tiny.yaml"), "--json", "--time-limit", "20")
    assert code == 0, err
    assert json.loads(out)["gpus"] != doc["gpus"] or doc["num_gpus"] != json.loads(out)["num_gpus"]
    code, out, err = run_cli("verify", str(EXAMPLES / "tiny.yaml"), str(plan), "--profile", str(prof),
                             "--json", "--workers", "1")
    assert code in (0, 1), err
    assert {g["gpu"] for g in json.loads(out)["gpus"]} == set(range(doc["num_gpus"]))


def test_twin_simulate_and_surrogate_predict_take_a_profile(tmp_path: Path) -> None:
    prof = _small_gpu_profile(tmp_path)
    tiny = str(EXAMPLES / "tiny.yaml")
    code, out, err = run_cli("twin", "simulate", tiny, "--max-loras", "4", "--max-lora-rank", "32",
                             "--profile", str(prof), "--json")
    assert code == 0, err
    assert json.loads(out)["oom"] is True  # 4 rank-32 slots do not fit the small GPU
    code, out, err = run_cli("surrogate", "predict", tiny, "--max-loras", "4", "--max-lora-rank", "32",
                             "--profile", str(prof), "--json")
    assert code == 0, err
    assert json.loads(out)["oom"] is True
    code, out, _ = run_cli("surrogate", "predict", tiny, "--max-loras", "4", "--max-lora-rank", "32",
                           "--json")
    assert code == 0 and json.loads(out)["oom"] is False


def test_a_profile_for_another_model_is_refused_with_one_line(tmp_path: Path) -> None:
    qwen = tmp_path / "qwen.json"
    load_profile(QWEN, GPU).save(qwen)
    for args in (("solve", str(EXAMPLES / "tiny.yaml"), "--profile", str(qwen)),
                 ("twin", "simulate", str(EXAMPLES / "tiny.yaml"), "--max-loras", "2",
                  "--profile", str(qwen))):
        code, out, err = run_cli(*args)
        assert code == 2
        assert len(err.strip().splitlines()) == 1 and "profile is for qwen-2.5-7b-instruct@h100-64gb" in err


def test_missing_profile_or_models_is_bad_input(tmp_path: Path) -> None:
    tiny = str(EXAMPLES / "tiny.yaml")
    code, _, err = run_cli("solve", tiny, "--profile", str(tmp_path / "nope.json"))
    assert code == 2 and "nope.json" in err
    code, _, err = run_cli("solve", tiny, "--models", str(tmp_path / "no-models"))
    assert code == 2 and "no-models" in err


def test_frontier_takes_a_profile_and_refuses_one_for_another_model(tmp_path: Path) -> None:
    qwen = tmp_path / "qwen.json"
    load_profile(QWEN, GPU).save(qwen)
    code, _, err = run_cli("frontier", str(EXAMPLES / "tiny.yaml"), "--ttft-p99", "2", "--profile", str(qwen))
    assert code == 2 and "profile is for qwen-2.5-7b-instruct@h100-64gb" in err
    mine = tmp_path / "mine.json"
    load_profile(LLAMA, GPU).save(mine)
    code, out, err = run_cli("frontier", str(EXAMPLES / "tiny.yaml"), "--ttft-p99", "2", "--profile",
                             str(mine), "--json", "--time-limit", "20")
    assert code == 0, err
    assert json.loads(out)["points"]
