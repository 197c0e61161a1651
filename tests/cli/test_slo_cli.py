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
