"""Generators: seeded and reproducible, each family valid from 5 to 10,000 adapters, the papers' laws."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from placer.cli.app import main
from placer.problem.generate import FAMILIES, PAPER_RATES, generate
from placer.problem.io import read_instance, write_instance
from twin.errors import InputError
from twin.traces import load_trace


def _cli(args: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(sys, "argv", ["placer", *args])
    with pytest.raises(SystemExit) as info:
        main()
    return int(info.value.code or 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_bytes_different_seed_different_adapters(tmp_path: Path, family: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    files = {}
    for label, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        out = tmp_path / label / "inst.yaml"
        assert _cli(["generate", "--family", family, "--adapters", "300", "--seed", seed, "--out", str(out)],
                    monkeypatch) == 0
        files[label] = (out.read_bytes(), (out.parent / "inst.adapters.csv").read_bytes())
    assert files["a"] == files["b"]
    assert files["a"][1] != files["c"][1]  # the adapters differ, not only the name


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("n", [5, 10_000])
def test_each_family_is_valid_at_both_ends(tmp_path: Path, family: str, n: int) -> None:
    inst = generate(family, n, seed=1)
    assert inst.n_adapters == n
    assert len(set(inst.ids)) == n
    assert np.all(inst.rates > 0)
    assert set(inst.ranks.tolist()) <= {8, 16, 32}
    path = tmp_path / "x.yaml"
    write_instance(inst, path)
    assert read_instance(path) == inst


def test_paper_family_follows_the_papers_recipe() -> None:
    for seed in range(10):
        inst = generate("paper", 96, seed=seed)
        ranks, counts = np.unique(inst.ranks, return_counts=True)
        assert tuple(ranks.tolist()) in {(8, 16), (16, 32), (8, 16, 32)}
        assert counts.max() - counts.min() == 0  # round-robin: 96 splits evenly into 2 or 3 ranks
        rates, rate_counts = np.unique(inst.rates, return_counts=True)
        assert len(rates) == 3 and set(rate_counts.tolist()) == {32}
        i = PAPER_RATES.index(float(rates.max()))
        assert sorted(rates.tolist(), reverse=True) == list(PAPER_RATES[i:i + 3])  # three consecutive values


def test_paper_family_with_given_sets_is_hand_checkable() -> None:
    inst = generate("paper", 6, seed=0, ranks=[8, 16], rates=[1.6, 0.8, 0.4])
    assert sorted(inst.ranks.tolist()) == [8, 8, 8, 16, 16, 16]
    assert sorted(inst.rates.tolist()) == [0.4, 0.4, 0.8, 0.8, 1.6, 1.6]
    assert inst.total_rate_rps == pytest.approx(5.6)


@pytest.mark.parametrize("family", ["zipf", "dirichlet"])
def test_popularity_families_split_the_total_rate(family: str) -> None:
    inst = generate(family, 1000, seed=2, total_rate_rps=120.0)
    assert inst.total_rate_rps == pytest.approx(120.0, rel=1e-4)
    assert inst.rates.max() <= 3.2
    assert inst.rates.max() / np.median(inst.rates) > 3  # skewed, not uniform


def test_zipf_shares_follow_the_law_below_the_cap() -> None:
    inst = generate("zipf", 10, seed=0, total_rate_rps=2.0, zipf_s=1.0)
    harmonic = sum(1 / k for k in range(1, 11))
    expected = sorted((2.0 / harmonic / k for k in range(1, 11)), reverse=True)
    assert sorted(inst.rates.tolist(), reverse=True) == pytest.approx(expected, rel=1e-5)


def test_rate_cap_spreads_the_excess() -> None:
    inst = generate("zipf", 100, seed=0, total_rate_rps=100.0, zipf_s=2.0, max_rate_rps=2.0)
    assert inst.rates.max() == pytest.approx(2.0)
    assert inst.total_rate_rps == pytest.approx(100.0, rel=1e-4)
    uniform = generate("zipf", 10, seed=0, total_rate_rps=100.0, max_rate_rps=2.0)  # cap < total/n
    assert uniform.rates.tolist() == [10.0] * 10


@pytest.mark.parametrize("family", ["trace", "tracelike"])
def test_trace_family_rates_are_assigned_requests_over_span(family: str) -> None:
    trace = load_trace("azure-like-code")
    inst = generate(family, 50, seed=4, trace="azure-like-code")
    assert inst.workload.arrival == "trace" and inst.workload.trace == "azure-like-code"
    assert inst.workload.lengths.trace == "azure-like-code"
    counts = inst.rates * trace.span_s
    assert np.allclose(counts, np.round(counts), atol=1e-3)  # whole requests per adapter
    assert counts.min() >= 1 - 1e-3
    assert counts.sum() == pytest.approx(trace.n_requests, abs=0.05)
    scaled = generate(family, 50, seed=4, trace="azure-like-code", total_rate_rps=3 * trace.rate_rps)
    assert scaled.total_rate_rps == pytest.approx(3 * trace.rate_rps, rel=1e-3)


def test_trace_families_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # tracelike works anywhere; trace defaults to the public conversation trace, which must be found
    assert generate("tracelike", 5, seed=0).workload.trace == "azure-like-conv"
    monkeypatch.setenv("PLACER_TRACES_DIR", str(tmp_path))
    with pytest.raises(InputError, match=r"^trace: azure_conv_2023 is not shipped: .*AzurePublicDataset"):
        generate("trace", 5, seed=0)
    with pytest.raises(InputError, match=r"^trace: family tracelike takes a shipped trace-like workload"):
        generate("tracelike", 5, seed=0, trace="azure_conv_2023")
    (tmp_path / "azure_conv_2023.csv").write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n"
                                                  + "".join(f"{i},{i + 1},{i + 2}\n" for i in range(20)))
    inst = generate("trace", 5, seed=0)
    assert inst.workload.trace == "azure_conv_2023" and inst.workload.duration_s == 19.0


def test_generator_argument_errors() -> None:
    with pytest.raises(InputError, match="family"):
        generate("pareto", 5, seed=0)
    with pytest.raises(InputError, match=r"seed: must be a non-negative integer \(got -1\)"):
        generate("zipf", 5, seed=-1)
    with pytest.raises(InputError, match="adapters"):
        generate("zipf", 0, seed=0)
    with pytest.raises(InputError, match="ranks"):
        generate("zipf", 5, seed=0, ranks=[7])
    with pytest.raises(InputError, match="total_rate_rps: is not used by family paper"):
        generate("paper", 5, seed=0, total_rate_rps=3.0)
    with pytest.raises(InputError, match="raise total_rate_rps"):
        generate("trace", 100, seed=0, total_rate_rps=0.01)
    with pytest.raises(InputError, match="trace"):
        generate("zipf", 5, seed=0, arrival="trace", trace="nope")


def test_generate_cli_bad_option_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code = _cli(["generate", "--family", "pareto", "--out", str(tmp_path / "x.yaml")], monkeypatch)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: family: must be one of") and err.count("\n") == 1
    assert not (tmp_path / "x.yaml").exists()
