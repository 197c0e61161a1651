"""The instance schema's optional ``rate_profile``: round trip, resolution, and broken inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_run import run_cli

from placer.dynamic.periods import peak_instance, period_instances
from placer.problem.io import read_instance, write_instance
from twin.rates import RateProfile, resample

HEAD = """name: day
model: llama-3.1-8b-instruct
gpu: h100-64gb
adapters:
  - {id: a0, rank: 16, rate_rps: 0.4}
  - {id: a1, rank: 8, rate_rps: 0.1}
"""


def write(tmp_path: Path, profile: str) -> Path:
    p = tmp_path / "day.yaml"
    p.write_text(HEAD + profile)
    return p


def test_old_files_keep_working_without_a_profile(tmp_path: Path) -> None:
    assert read_instance(write(tmp_path, "")).rate_profile is None


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip_writes_the_same_bytes(tmp_path: Path, suffix: str) -> None:
    src = write(tmp_path, "rate_profile:\n  period_s: 1800\n  periods: [0.5, 1.0, 1.5]\n"
                          "  adapters: {a1: [2, 1, 0.25]}\n")
    first = read_instance(src)
    write_instance(first, tmp_path / f"a{suffix}")
    again = read_instance(tmp_path / f"a{suffix}")
    assert again == first
    write_instance(again, tmp_path / f"b{suffix}")
    assert (tmp_path / f"a{suffix}").read_bytes() == (tmp_path / f"b{suffix}").read_bytes()
    assert np.array_equal(first.rate_profile.matrix(first.ids), [[0.5, 2.0], [1.0, 1.0], [1.5, 0.25]])


def test_periods_and_peak_instances(tmp_path: Path) -> None:
    p = read_instance(write(tmp_path, "rate_profile:\n  periods: [0.5, 2.0]\n  adapters: {a1: [3, 1]}\n"))
    a, b = period_instances(p)
    assert a.rates.tolist() == pytest.approx([0.2, 0.3]) and b.rates.tolist() == pytest.approx([0.8, 0.1])
    assert peak_instance(p).rates.tolist() == pytest.approx([0.8, 0.3])


def test_trace_profile_has_mean_one_and_the_trace_shape() -> None:
    m = RateProfile(trace="azure-like-conv", n_periods=24).global_multipliers()
    assert len(m) == 24 and m.mean() == pytest.approx(1.0, rel=0.01) and (m >= 0.05).all()
    # resampling a 4-bin curve to 2 periods averages pairs of bins (then normalises to mean 1)
    assert resample([1, 3, 2, 2], 2).tolist() == pytest.approx([1.0, 1.0])
    assert resample([1, 1, 3, 3], 2).tolist() == pytest.approx([0.5, 1.5])


BROKEN = [
    ("negative", "rate_profile:\n  periods: [1, -1]\n", "rate_profile.periods[1]", "-1"),
    ("zero", "rate_profile:\n  periods: [0]\n", "rate_profile.periods[0]", "0"),
    ("text", "rate_profile:\n  periods: [1, x]\n", "rate_profile.periods[1]", "'x'"),
    ("empty", "rate_profile:\n  periods: []\n", "rate_profile.periods", "[]"),
    ("unknown-field", "rate_profile:\n  periodz: [1]\n", "rate_profile.periodz", "'periodz'"),
    ("unknown-adapter", "rate_profile:\n  adapters: {zz: [1]}\n", "rate_profile.adapters.zz", "'zz'"),
    ("length", "rate_profile:\n  periods: [1, 2]\n  adapters: {a0: [1]}\n", "rate_profile.adapters.a0", "1"),
    ("both", "rate_profile:\n  periods: [1]\n  trace: azure-like-conv\n  n_periods: 2\n",
     "rate_profile.trace", "'azure-like-conv'"),
    ("unknown-trace", "rate_profile:\n  trace: nope\n  n_periods: 2\n", "rate_profile.trace", "'nope'"),
    ("no-count", "rate_profile:\n  trace: azure-like-conv\n", "rate_profile.n_periods", "None"),
    ("period-s", "rate_profile:\n  period_s: 0\n  periods: [1]\n", "rate_profile.period_s", "0"),
    ("nothing", "rate_profile: {period_s: 60}\n", "rate_profile", "None"),
    ("not-a-mapping", "rate_profile: [1, 2]\n", "rate_profile", "[1, 2]"),
]


@pytest.mark.parametrize(("name", "profile", "field", "value"), list(BROKEN), ids=[c[0] for c in BROKEN])
def test_broken_rate_profile_is_one_line_exit_2(tmp_path: Path, name: str, profile: str, field: str,
                                                value: str) -> None:
    path = write(tmp_path, profile)
    code, out, err = run_cli("show", str(path))
    assert code == 2 and out == ""
    line = err.strip()
    assert "\n" not in line
    assert str(path) in line and f"{field}:" in line and f"(got {value})" in line
