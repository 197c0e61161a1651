"""``placer advise``: the JSON contract, a run on tiny.yaml, bad input as one red line (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CONTRACT = {"max_num_seqs", "throughput_tok_s", "ttft_p99_s", "tpot_p99_s", "kv_cache_tokens",
            "meets_criterion"}


def test_advise_json_contract_on_tiny(cli, tiny_yaml: Path, tmp_path: Path) -> None:
    png = tmp_path / "advise.png"
    code, out, err = cli("advise", str(tiny_yaml), "--max-loras", "5", "--grid", "2,8,64", "--json",
                         "--plot", str(png))
    assert code == 0, err
    doc = json.loads(out)
    assert {"points", "b_opt", "freed_gib"} <= set(doc)
    assert [p["max_num_seqs"] for p in doc["points"]] == [2, 8, 64]
    for p in doc["points"]:
        assert set(p) >= CONTRACT
    # 5 slots for 5 adapters: 2 sequences starve the queue, 8 serve it within the default SLO
    assert doc["points"][0]["meets_criterion"] is False and doc["points"][1]["meets_criterion"] is True
    assert doc["b_opt"] == doc["points"][1]
    assert doc["criterion"].startswith("SLO: TTFT p99 ≤ 2 s")
    assert doc["freed_gib"] > 0 and doc["freed_uses"]["extra_max_loras"] > 0
    assert doc["check"]["meets_criterion"] is True
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_advise_criterion_flags_change_b_opt(cli, tiny_yaml: Path) -> None:
    # 2 slots for 5 adapters: requests wait for a slot, the p99 TTFT (~23 s) fails the default SLO everywhere
    code, out, _ = cli("advise", str(tiny_yaml), "--max-loras", "2", "--grid", "2,8,64", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["b_opt"] is None and doc["freed_gib"] is None
    code, out, _ = cli("advise", str(tiny_yaml), "--max-loras", "2", "--grid", "2,8,64", "--json",
                       "--slo-ttft-p99", "60")
    assert json.loads(out)["b_opt"]["max_num_seqs"] == 8
    code, out, _ = cli("advise", str(tiny_yaml), "--max-loras", "2", "--grid", "2,8,64",
                       "--criterion", "paper")
    assert code == 0 and "← B_opt" in out and "GiB" in out


@pytest.mark.parametrize(("args", "line"), [
    (("--max-loras", "6"), "{f}: --max-loras: must be an integer in [1, 5] (the instance's adapters, as in a "
                           "plan) (got 6)"),
    (("--max-loras", "0"), "{f}: --max-loras: must be an integer in [1, 5] (the instance's adapters, as in a "
                           "plan) (got 0)"),
    (("--max-loras", "2", "--grid", "1,0"), "--grid: every max_num_seqs of the grid must be an integer ≥ 1 "
                                            "(got '0')"),
    (("--max-loras", "2", "--grid", "4,big"), "--grid: every max_num_seqs of the grid must be an integer ≥ 1 "
                                              "(got 'big')"),
    (("--max-loras", "2", "--max-lora-rank", "8"),
     "{f}: max_lora_rank: must be ≥ the largest adapter rank 32 (got 8)"),
    (("--max-loras", "2", "--plot", "x.pdf"), "--plot: chart file must end in .png or .svg (got '.pdf')"),
])
def test_advise_bad_input_is_one_line(cli, tiny_yaml: Path, args: tuple[str, ...], line: str) -> None:
    code, out, err = cli("advise", str(tiny_yaml), *args)
    assert code == 2 and out == ""
    assert err.strip() == "error: " + line.format(f=tiny_yaml)
