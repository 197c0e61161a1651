"""The trace-like workloads: their figures are what bench/bench_tracelike.py measures on the public traces,
and seeded samples of the generator reproduce the figures of the real traces within stated tolerances."""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np
import pytest
from external_data import external_file

from twin.errors import InputError
from twin.tracelike import (
    TraceLike,
    arrival_figures,
    generate_arrays,
    load_tracelike,
    measure,
    sample_arrivals,
    tracelike_names,
)
from twin.traces import load_trace

SEEDS = range(10)
# relative tolerances on the mean over SEEDS of one generated span; the code service's arrivals cluster more
# than a renewal process can (bench/results/tracelike-*.md), hence its looser burstiness bounds
ARRIVAL_TOL: dict[str, dict[str, float]] = {
    "azure-like-conv": {"requests": 0.02, "gap_cv": 0.05, "idc_10s": 0.15, "idc_60s": 0.15, "shape": 0.03},
    "azure-like-code": {"requests": 0.08, "gap_cv": 0.25, "idc_10s": 0.45, "idc_60s": 0.25, "shape": 0.10},
}
MEAN_TOL = {"azure-like-conv": 0.03, "azure-like-code": 0.06}


@pytest.mark.parametrize("name", tracelike_names())
def test_shipped_figures_are_consistent(name: str) -> None:
    like = load_tracelike(name)
    assert like.name == name and "not the trace itself" in like.description
    assert np.mean(like.volume) == pytest.approx(1.0, abs=1e-4)
    assert sum(like.gap_weights) == pytest.approx(1.0, abs=1e-5)
    assert float(np.dot(like.gap_weights, like.gap_means)) == pytest.approx(1.0, abs=1e-4)  # unit mean gap
    assert like.levels[0] == 0.0 and like.levels[-1] == 1.0
    assert like.input_quantiles[-1] > like.input_quantiles[0] >= 1


@pytest.mark.parametrize("name", tracelike_names())
def test_generator_reproduces_the_arrival_figures(name: str) -> None:
    like, tol = load_tracelike(name), ARRIVAL_TOL[name]
    figures = [arrival_figures(sample_arrivals(like, np.random.default_rng(s)), like.span_s) for s in SEEDS]
    counts = [sample_arrivals(like, np.random.default_rng(s)).size for s in SEEDS]
    assert np.mean(counts) == pytest.approx(like.n_requests, rel=tol["requests"])
    for key in ("gap_cv", "idc_10s", "idc_60s"):
        assert np.mean([f[key] for f in figures]) == pytest.approx(like.checks[key], rel=tol[key]), key
    shape = np.mean([f["volume_5min"] for f in figures], axis=0)  # the hour's volume curve, 5-minute bins
    assert np.mean(np.abs(shape - np.asarray(like.checks["volume_5min"]))) < tol["shape"]


@pytest.mark.parametrize("name", tracelike_names())
def test_generator_reproduces_the_length_quantiles(name: str) -> None:
    like = load_tracelike(name)
    _, inp, out = generate_arrays(like, seed=3, duration_s=4 * like.span_s)  # ~4 hours of requests
    assert inp.min() >= 1 and out.min() >= 1
    lv = np.asarray(like.levels)
    for sample, quantiles, real_mean in ((inp, like.input_quantiles, like.checks["input_mean"]),
                                         (out, like.output_quantiles, like.checks["output_mean"])):
        for level, q in zip(lv, quantiles, strict=True):
            if 0.05 <= level <= 0.99:  # the empirical CDF brackets the level at the real quantile
                assert np.mean(sample < np.floor(q)) <= level + 0.01, (level, q)
                assert np.mean(sample <= np.ceil(q)) >= level - 0.01, (level, q)
        assert sample.mean() == pytest.approx(real_mean, rel=MEAN_TOL[name])
    from scipy.stats import spearmanr

    assert float(spearmanr(inp, out)[0]) == pytest.approx(like.length_spearman, abs=0.03)


def test_same_seed_same_sample_and_longer_windows_repeat_the_hour() -> None:
    like = load_tracelike("azure-like-conv")
    a, b = generate_arrays(like, 5), generate_arrays(like, 5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0][:100], generate_arrays(like, 6)[0][:100])
    two = sample_arrivals(like, np.random.default_rng(0), 2 * like.span_s)
    assert np.all(np.diff(two) >= 0) and two.max() < 2 * like.span_s
    first, second = np.sum(two < like.span_s), np.sum(two >= like.span_s)
    assert second == pytest.approx(first, rel=0.05) and first + second == pytest.approx(2 * like.n_requests,
                                                                                        rel=0.03)


def test_named_trace_is_the_seed_0_sample() -> None:
    tr = load_trace("azure-like-code")
    arrival, inp, out = generate_arrays(load_tracelike("azure-like-code"), 0)
    assert np.array_equal(tr.arrival_s, arrival) and np.array_equal(tr.output_tokens, out)


def _good() -> dict[str, Any]:
    return load_tracelike("azure-like-code").to_dict()


@pytest.mark.parametrize(("change", "expected"), [
    ({"volume": None}, "f.json: volume: is missing"),
    ({"gap_weights": [0.5, 0.4, 0.2]}, "f.json: gap_weights: must sum to 1, one weight per gap mean"),
    ({"levels": [0.5, 1.0]}, "f.json: levels: must increase from 0 to 1 (got [0.5, 1.0])"),
    ({"output_quantiles": [3.0, 2.0]}, "f.json: output_quantiles: must be non-decreasing, ≥ 1, one per"),
    ({"input_quantiles": "many"}, "f.json: input_quantiles: must be a list of numbers (got 'many')"),
    ({"volume": [1.0, -1.0]}, "f.json: volume: must be a non-empty list of finite non-negative numbers"),
    ({"length_spearman": 2.0}, "f.json: length_spearman: must be in [-1, 1] (got 2.0)"),
])
def test_bad_figure_files_are_one_line_errors(change: dict[str, Any], expected: str) -> None:
    d = _good()
    for key, value in change.items():
        if value is None:
            del d[key]
        else:
            d[key] = value
    with pytest.raises(InputError) as info:
        TraceLike.from_dict(d, "f.json")
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)


def test_unknown_trace_like_name() -> None:
    with pytest.raises(InputError, match=r"trace: unknown trace-like workload \(got 'azure-like-chat'"):
        load_tracelike("azure-like-chat")


@pytest.mark.parametrize(("name", "public"), [
    ("azure-like-code", "azure_code_2023"),
    pytest.param("azure-like-conv", "azure_conv_2023", marks=pytest.mark.slow),  # its EM needs ~3,000 steps
])
def test_shipped_figures_are_measured_from_the_public_trace(name: str, public: str) -> None:
    external_file("traces", f"{public}.csv")
    tr = load_trace(public)
    shipped = load_tracelike(name)
    like = measure(tr.arrival_s, tr.input_tokens, tr.output_tokens, name=name,
                   description=shipped.description)
    text = resources.files("twin").joinpath("workloads", f"{name}.json").read_text()
    assert like.to_json() == text  # the same bytes as bench/bench_tracelike.py wrote
