"""The SLO flags of the console script override the instance file's slo section."""

from __future__ import annotations

import json
from pathlib import Path

HEAD = ("name: t\nmodel: llama-3.1-8b-instruct\ngpu: h100-64gb\n"
        "adapters:\n  - {id: a0, rank: 16, rate_rps: 0.4}\n")


def test_cli_flags_override_the_file_in_twin_simulate(tmp_path: Path, cli) -> None:
    path = tmp_path / "i.yaml"
    path.write_text(HEAD + "slo: {ttft_p99_s: 0.000001}\n")
    code, out, _ = cli("twin", "simulate", str(path), "--max-loras", "1", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["meets_criterion"] is False and "TTFT p99" in doc["criterion_failures"][0]
    code, out, _ = cli("twin", "simulate", str(path), "--max-loras", "1", "--json", "--slo-ttft-p99", "100")
    doc = json.loads(out)
    assert doc["meets_criterion"] is True
    assert doc["criterion"] == "SLO: TTFT p99 ≤ 100 s, TPOT p99 ≤ 200 ms, served fraction ≥ 0.9"
    code, out, _ = cli("twin", "simulate", str(path), "--max-loras", "1", "--json", "--criterion", "paper")
    assert json.loads(out)["criterion"].startswith("papers' rule")
    code, _, err = cli("twin", "simulate", str(path), "--max-loras", "1", "--slo-tpot-p99", "-5")
    assert code == 2 and err.strip() == f"error: {path}: --slo-tpot-p99: must be positive (got -5.0)"


def _plan(path: Path, max_loras: int) -> Path:
    plan = {"solver": "hand", "status": "feasible", "num_gpus": 1, "lower_bound": 1,
            "gpus": [{"adapters": ["a0", "a1", "a2", "a3", "a4"], "max_loras": max_loras, "max_cpu_loras": 5,
                      "max_lora_rank": 32}]}
    path.write_text(json.dumps(plan))
    return path


def test_verify_exits_1_on_a_plan_that_fails_the_slo_and_names_the_gpu(tmp_path: Path, cli,
                                                                        tiny_yaml: Path) -> None:
    # tiny on one GPU with 2 slots for its 5 adapters: every request is served (the papers' rule holds),
    # but adapters wait for a slot and the p99 TTFT is ~23 s, far above the default 2 s
    plan = _plan(tmp_path / "plan.json", 2)
    code, out, _ = cli("verify", str(tiny_yaml), str(plan), "--workers", "1", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["feasible"] is False
    assert doc["criterion"] == "SLO: TTFT p99 ≤ 2 s, TPOT p99 ≤ 200 ms, served fraction ≥ 0.9"
    assert len(doc["failures"]) == 1 and doc["failures"][0].startswith("GPU 0 TTFT p99 ")
    assert "> 2 s (×" in doc["failures"][0]
    assert doc["gpus"][0]["ttft_p99_s"] > 2 and doc["gpus"][0]["meets_criterion"] is False
    # the papers' rule alone passes the same plan; a loose enough SLO too
    code, out, _ = cli("verify", str(tiny_yaml), str(plan), "--workers", "1", "--criterion", "paper")
    assert code == 0 and "papers' rule" in out
    code, _, _ = cli("verify", str(tiny_yaml), str(plan), "--workers", "1", "--slo-ttft-p99", "60")
    assert code == 0
    # five slots for five adapters: no slot waits, the default SLO holds
    code, out, _ = cli("verify", str(tiny_yaml), str(_plan(tmp_path / "p5.json", 5)), "--workers", "1")
    assert code == 0 and "checked against SLO: TTFT p99 ≤ 2 s" in out
