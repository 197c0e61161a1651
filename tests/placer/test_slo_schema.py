"""The ``slo`` section and the SLO flags: defaults, overrides, and one exact error line per broken input."""

from __future__ import annotations

from pathlib import Path

import pytest

from placer.problem.generate import generate
from placer.problem.io import read_instance, write_instance
from placer.problem.schema import slo_with_options
from twin.errors import InputError
from twin.spec import Slo

HEAD = ("name: t\nmodel: llama-3.1-8b-instruct\ngpu: h100-64gb\n"
        "adapters:\n  - {id: a0, rank: 16, rate_rps: 0.4}\n")
KEYS = ("criterion, ttft_p50_s, ttft_p95_s, ttft_p99_s, tpot_p50_ms, tpot_p95_ms, tpot_p99_ms, "
        "min_served_fraction")

# (case, slo section, expected error after "{file}: ")
BROKEN: list[tuple[str, str, str]] = [
    ("not-a-mapping", "slo: fast\n", "slo: must be a mapping (got 'fast')"),
    ("unknown-key", "slo: {ttft_p99: 2}\n",
     f"slo.ttft_p99: unknown field (allowed: {KEYS}) (got 'ttft_p99')"),
    ("bad-criterion", "slo: {criterion: strict}\n",
     "slo.criterion: must be one of ['slo', 'paper'] (got 'strict')"),
    ("negative-ttft", "slo: {ttft_p99_s: -1}\n", "slo.ttft_p99_s: must be positive (got -1)"),
    ("zero-tpot", "slo: {tpot_p99_ms: 0}\n", "slo.tpot_p99_ms: must be positive (got 0)"),
    ("string-ttft", "slo: {ttft_p95_s: '2'}\n", "slo.ttft_p95_s: must be a number (got '2')"),
    ("bool-tpot", "slo: {tpot_p50_ms: true}\n", "slo.tpot_p50_ms: must be a number (got True)"),
    ("inf-ttft", "slo: {ttft_p50_s: .inf}\n", "slo.ttft_p50_s: must be finite (got inf)"),
    ("served-above-1", "slo: {min_served_fraction: 1.5}\n",
     "slo.min_served_fraction: must be in [0, 1] (got 1.5)"),
    ("served-negative", "slo: {min_served_fraction: -0.1}\n",
     "slo.min_served_fraction: must be non-negative (got -0.1)"),
]


@pytest.mark.parametrize(("case", "section", "message"), BROKEN, ids=[c[0] for c in BROKEN])
def test_broken_slo_section_names_file_field_value(tmp_path: Path, case: str, section: str,
                                                  message: str) -> None:
    path = tmp_path / "i.yaml"
    path.write_text(HEAD + section)
    with pytest.raises(InputError) as info:
        read_instance(path)
    assert str(info.value) == f"{path}: {message}"


@pytest.mark.parametrize(("case", "section", "message"), BROKEN[:3], ids=[c[0] for c in BROKEN[:3]])
def test_broken_slo_section_exits_2_with_one_line(tmp_path: Path, cli, case: str, section: str,
                                                 message: str) -> None:
    path = tmp_path / "i.yaml"
    path.write_text(HEAD + section)
    code, out, err = cli("show", str(path))
    assert code == 2
    assert err.strip().splitlines() == [f"error: {path}: {message}"]


def test_no_section_means_the_default_slo(tmp_path: Path) -> None:
    path = tmp_path / "i.yaml"
    path.write_text(HEAD)
    slo = read_instance(path).slo
    assert slo == Slo()
    assert (slo.criterion, slo.ttft_p99_s, slo.tpot_p99_ms, slo.min_served_fraction) == (
        "slo", 2.0, 200.0, 0.9)
    assert slo.describe() == "SLO: TTFT p99 ≤ 2 s, TPOT p99 ≤ 200 ms, served fraction ≥ 0.9"
    assert Slo.paper().describe() == "papers' rule (not starved; no latency bound)"
    assert Slo.paper().limits() == ()


def test_section_keys_override_defaults_and_null_removes_a_bound(tmp_path: Path) -> None:
    path = tmp_path / "i.yaml"
    path.write_text(HEAD + "slo: {ttft_p50_s: 0.5, tpot_p99_ms: null}\n")
    slo = read_instance(path).slo
    assert (slo.ttft_p50_s, slo.ttft_p99_s, slo.tpot_p99_ms) == (0.5, 2.0, None)
    assert [k for k, _, _ in slo.limits()] == ["ttft_p50_s", "ttft_p99_s"]
    out = tmp_path / "o.yaml"
    write_instance(read_instance(path), out)  # null survives a write: the default must not come back
    assert read_instance(out).slo == slo
    assert "tpot_p99_ms: null" in out.read_text()


def test_old_files_without_slo_still_read(repo_root: Path, tmp_path: Path) -> None:
    text = (repo_root / "instances/examples/tiny.yaml").read_text()
    old = text.split("slo:")[0] + "adapters:" + text.split("adapters:")[1]
    assert "slo" not in old
    (tmp_path / "old.yaml").write_text(old)
    assert read_instance(tmp_path / "old.yaml") == read_instance(repo_root / "instances/examples/tiny.yaml")


def test_flags_override_the_file() -> None:
    base = Slo(ttft_p99_s=5.0)
    got = slo_with_options(base, {"ttft_p99_s": "1", "tpot_p99_ms": "none", "criterion": None,
                                  "min_served_fraction": 0.95})
    assert (got.ttft_p99_s, got.tpot_p99_ms, got.min_served_fraction, got.criterion) == (
        1.0, None, 0.95, "slo")
    assert slo_with_options(base, {"criterion": "paper"}).criterion == "paper"
    with pytest.raises(InputError, match=r"--slo-ttft-p99: must be a number or 'none' \(got 'soon'\)"):
        slo_with_options(base, {"ttft_p99_s": "soon"})
    with pytest.raises(InputError, match=r"--slo-min-served: must be in \[0, 1\] \(got 2.0\)"):
        slo_with_options(base, {"min_served_fraction": 2.0})


def test_generate_writes_the_slo_it_used(tmp_path: Path, cli) -> None:
    out = tmp_path / "g.yaml"
    code, _, _ = cli("generate", "--family", "zipf", "--adapters", "8", "--slo-ttft-p99", "5",
                     "--criterion", "slo", "--out", str(out))
    assert code == 0
    assert read_instance(out).slo == Slo(ttft_p99_s=5.0)
    assert "slo:\n  criterion: slo\n  ttft_p99_s: 5.0\n  tpot_p99_ms: 200.0\n" in out.read_text()
    assert generate("zipf", 8, 0).slo == Slo()
