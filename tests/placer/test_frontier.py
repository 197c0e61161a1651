"""The SLO frontier: monotone by construction, and its order of tightness."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from placer.frontier import at_least_as_tight, frontier, levels
from placer.oracle import AnalyticOracle
from placer.problem.io import read_instance
from twin.errors import InputError
from twin.spec import Slo


def test_tightness_order() -> None:
    assert at_least_as_tight(Slo(ttft_p99_s=1.0), Slo(ttft_p99_s=2.0))
    assert not at_least_as_tight(Slo(ttft_p99_s=2.0), Slo(ttft_p99_s=1.0))
    assert at_least_as_tight(Slo(), Slo.paper())                 # any SLO is tighter than the papers' rule
    assert not at_least_as_tight(Slo.paper(), Slo())
    assert not at_least_as_tight(Slo(tpot_p99_ms=None), Slo())   # no TPOT bound is looser, not tighter
    assert at_least_as_tight(Slo(ttft_p99_s=1.0, tpot_p99_ms=100), Slo(ttft_p99_s=5.0, tpot_p99_ms=200))
    assert not at_least_as_tight(Slo(ttft_p99_s=1.0, tpot_p99_ms=300), Slo(ttft_p99_s=5.0, tpot_p99_ms=200))


def test_levels_grid_and_bad_levels(examples_dir: Path) -> None:
    problem = read_instance(examples_dir / "tiny.yaml")
    got = levels(problem, [1, 2], [100, 200])
    assert len(got) == 5 and got[-1].criterion == "paper"
    assert {(s.ttft_p99_s, s.tpot_p99_ms) for s in got[:4]} == {(1, 100), (1, 200), (2, 100), (2, 200)}
    with pytest.raises(InputError, match="--ttft-p99: every level must be a positive number"):
        levels(problem, [0.0])


@pytest.mark.slow
def test_frontier_of_medium_is_monotone(examples_dir: Path) -> None:
    problem = read_instance(examples_dir / "medium.yaml")
    points = frontier(problem, [0.5, 1, 2, 5, 10], time_limit=30)
    slo = [p for p in points if p.slo.criterion == "slo"]
    paper = [p for p in points if p.slo.criterion == "paper"][0]
    gpus = [p.num_gpus for p in slo]          # TTFT p99 0.5 → 10 s: never more GPUs as it loosens
    assert all(g > 0 for g in gpus)
    assert gpus == sorted(gpus, reverse=True)
    assert paper.num_gpus <= gpus[-1]
    bounds = [p.lower_bound for p in slo]
    assert bounds == sorted(bounds, reverse=True)
    assert all(p.lower_bound <= p.num_gpus for p in points)


def test_frontier_reuses_a_tighter_plan_when_it_is_better(examples_dir: Path, monkeypatch) -> None:
    # a solver whose answers are not monotone (a looser level gets more GPUs): the frontier must fix it by
    # reusing the tighter level's plan, and say so
    import placer.frontier as fr

    problem = read_instance(examples_dir / "tiny.yaml")
    real = fr.solve
    calls: list[Slo] = []

    def solve(p, *args, **kw):  # type: ignore[no-untyped-def]
        calls.append(p.slo)
        res = real(p, "round-robin" if p.slo.ttft_p99_s == 5.0 else "ffd-bisect", **kw)
        return res

    monkeypatch.setattr(fr, "solve", solve)
    oracle = AnalyticOracle(capacity_rps=0.5)
    points = fr.frontier(problem, [1.0, 5.0], oracle=oracle, time_limit=5)
    tight, loose = points[0], points[1]
    assert loose.num_gpus <= tight.num_gpus
    doc = [p.to_dict(i) for i, p in enumerate(points)]
    assert json.loads(json.dumps(doc))[0]["criterion"].startswith("SLO: TTFT p99 ≤ 1 s")
    if loose.solved_for != 1:
        assert doc[1]["from"] == 0


def test_frontier_cli_table_json_csv_and_chart(tmp_path: Path, cli, examples_dir: Path) -> None:
    out, png = tmp_path / "f.csv", tmp_path / "f.png"
    code, stdout, err = cli("frontier", str(examples_dir / "tiny.yaml"), "--ttft-p99", "2,10", "--json",
                            "--out", str(out), "--plot", str(png))
    assert code == 0, err
    doc = json.loads(stdout)
    assert [p["criterion"] for p in doc["points"]] == [
        "SLO: TTFT p99 ≤ 2 s, TPOT p99 ≤ 200 ms, served fraction ≥ 0.9",
        "SLO: TTFT p99 ≤ 10 s, TPOT p99 ≤ 200 ms, served fraction ≥ 0.9",
        "papers' rule (not starved; no latency bound)"]
    for p in doc["points"]:
        assert set(p) >= {"slo", "criterion", "num_gpus", "lower_bound", "status"}
    gpus = [p["num_gpus"] for p in doc["points"]]
    assert gpus[0] >= gpus[1] >= gpus[2] >= 1
    assert out.read_text().splitlines()[0].startswith("criterion,rule,ttft_p99_s")
    assert png.stat().st_size > 1000
