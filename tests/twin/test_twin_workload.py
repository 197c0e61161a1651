"""Request generation: length laws match their targets, arrival processes their rates, seeds reproduce."""

from __future__ import annotations

import numpy as np
import pytest

from twin.lengths import (
    SHAREGPT_OUTPUT_MEAN,
    SHAREGPT_PROMPT_MEAN,
    _tln_moments,
    sample_lengths,
    sharegpt_fit,
    sharegpt_params,
)
from twin.spec import Adapter, Instance, Lengths, Workload
from twin.traces import load_trace
from twin.workload import generate_requests

LLAMA = "llama-3.1-8b-instruct"


def _inst(rates, workload: Workload | None = None, ranks=(8,)) -> Instance:  # type: ignore[no-untyped-def]
    ads = tuple(Adapter(f"a{i}", ranks[i % len(ranks)], float(r)) for i, r in enumerate(rates))
    return Instance(name="t", model=LLAMA, gpu="h100-64gb", adapters=ads, workload=workload or Workload())


@pytest.mark.parametrize("model", [LLAMA, "qwen-2.5-7b-instruct", ""])
def test_stored_sharegpt_fit_is_the_fit(model: str) -> None:
    assert sharegpt_params(model) == pytest.approx(sharegpt_fit(model), rel=1e-9)


def test_sharegpt_fit_hits_the_prompt_moments_in_closed_form() -> None:
    mu, s, _, _ = sharegpt_params(LLAMA)
    m1, m2 = _tln_moments(mu, s, 3.5, 1024.5)
    assert float(m1) == pytest.approx(SHAREGPT_PROMPT_MEAN, rel=1e-6)
    assert np.sqrt(float(m2) - float(m1) ** 2) == pytest.approx(SHAREGPT_PROMPT_MEAN, rel=1e-6)


def test_sharegpt_sample_moments_and_filters() -> None:
    rng = np.random.default_rng(0)
    inp, out, expected = sample_lengths(rng, 400_000, Lengths(), LLAMA)
    assert inp.min() >= 4 and inp.max() <= 1024
    assert out.min() >= 1 and (inp + out).max() <= 2048
    assert inp.mean() == pytest.approx(222.7, rel=0.01)
    assert out.mean() == pytest.approx(SHAREGPT_OUTPUT_MEAN[LLAMA], rel=0.01)
    assert inp.std() / inp.mean() == pytest.approx(1.0, abs=0.03)
    assert out.std() / out.mean() == pytest.approx(1.0, abs=0.03)
    assert np.median(inp) < 0.75 * inp.mean()  # heavy right tail, many short prompts
    assert expected == pytest.approx(222.7 + 196.5)


def test_output_scale_shortens_sharegpt_outputs_and_their_expectation_only() -> None:
    full = sample_lengths(np.random.default_rng(5), 200_000, Lengths(), LLAMA)
    short = sample_lengths(np.random.default_rng(5), 200_000, Lengths(), LLAMA, output_scale=0.9)
    assert (short[0] == full[0]).all()  # prompts untouched
    assert short[1].mean() == pytest.approx(0.9 * full[1].mean(), rel=0.01) and short[1].min() >= 1
    assert short[2] == pytest.approx(222.7 + 0.9 * 196.5)
    normal = Lengths(kind="normal", input_mean=100, input_std=0, output_mean=50, output_std=0)
    out = sample_lengths(np.random.default_rng(5), 10, normal, LLAMA, output_scale=0.5)
    assert (out[1] == 50).all() and out[2] == pytest.approx(150)  # other laws are generated lengths


def test_output_exponent_thins_the_tail_and_keeps_the_mean() -> None:
    ref = sample_lengths(np.random.default_rng(6), 200_000, Lengths(), LLAMA)
    thin = sample_lengths(np.random.default_rng(6), 200_000, Lengths(), LLAMA, 0.95, 0.6)
    assert thin[1].mean() == pytest.approx(0.95 * SHAREGPT_OUTPUT_MEAN[LLAMA], rel=0.005)
    assert thin[1].std() < 0.75 * ref[1].std()  # the long tail is cut
    assert np.corrcoef(ref[1], thin[1])[0, 1] > 0.9  # same requests, monotone transform


def test_normal_lengths_are_clipped_at_one() -> None:
    rng = np.random.default_rng(1)
    lengths = Lengths(kind="normal", input_mean=10, input_std=20, output_mean=50, output_std=0)
    inp, out, expected = sample_lengths(rng, 50_000, lengths)
    assert inp.min() == 1 and (out == 50).all()
    assert inp.mean() == pytest.approx(expected - 50, rel=0.02)


def test_poisson_rates_sorting_and_window() -> None:
    rates = [2.0, 1.0, 0.5]
    req = generate_requests(_inst(rates, Workload(duration_s=2000.0)), seed=3)
    assert np.all(np.diff(req.arrival_s) >= 0)
    assert req.arrival_s.min() >= 0 and req.arrival_s.max() < 2000.0
    counts = np.bincount(req.adapter, minlength=3)
    expect = np.array(rates) * 2000.0
    assert np.all(np.abs(counts - expect) < 5 * np.sqrt(expect))
    assert not req.arrival_s.flags.writeable


def test_same_seed_same_requests_other_seed_other_requests() -> None:
    inst = _inst([1.0, 0.3], Workload(duration_s=600.0))
    a, b, c = (generate_requests(inst, seed=s) for s in (5, 5, 6))
    for name in ("arrival_s", "adapter", "input_tokens", "output_tokens"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert len(a) != len(c) or not np.array_equal(a.arrival_s, c.arrival_s)


def test_scaling_rates_compresses_the_same_poisson_stream() -> None:
    inst = _inst([1.0, 0.5], Workload(duration_s=1000.0))
    a = generate_requests(inst, seed=2)
    b = generate_requests(inst, seed=2, rates=inst.rates * 2)
    k = len(a)
    assert np.allclose(b.arrival_s[:k], a.arrival_s / 2)
    assert np.array_equal(b.adapter[:k], a.adapter)
    assert np.array_equal(b.input_tokens[:k], a.input_tokens)


@pytest.mark.parametrize("cv", [0.5, 2.0])
def test_gamma_gaps_have_the_requested_cv(cv: float) -> None:
    req = generate_requests(_inst([2.0], Workload(duration_s=20_000.0, arrival="gamma", cv=cv)), seed=0)
    gaps = np.diff(req.arrival_s)
    assert len(req) == pytest.approx(40_000, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.08)


def test_unpredictable_rates_stay_in_band_and_move() -> None:
    rates = [1.0] * 40
    req = generate_requests(_inst(rates, Workload(duration_s=3600.0, arrival="unpredictable")), seed=0)
    seg = (req.arrival_s // 300).astype(int)
    per = np.zeros((40, 12))
    np.add.at(per, (req.adapter, seg), 1)
    per_rate = per / 300.0
    assert per_rate.max() < 7.5 * 1.5 and per_rate[:, 0].mean() == pytest.approx(1.0, rel=0.1)
    # after a few switches the per-segment rates spread far beyond Poisson noise (sd ≈ 0.06 req/s)
    assert per_rate[:, 6:].std() > 0.3


def test_trace_replay_matches_total_rate_and_popularity() -> None:
    # total rate = trace requests / 1800 s: the rescaled trace is tiled exactly twice in one hour
    tr = load_trace("azure-like-conv")
    total = tr.n_requests / 1800.0
    rates = [0.75 * total, 0.25 * total]
    wl = Workload(duration_s=3600.0, arrival="trace", trace="azure-like-conv",
                  lengths=Lengths(kind="trace", trace="azure-like-conv"))
    req = generate_requests(_inst(rates, wl), seed=0)
    assert len(req) == 2 * tr.n_requests
    assert np.all(np.diff(req.arrival_s) >= 0) and req.arrival_s.max() < 3600.0
    assert np.mean(req.adapter == 0) == pytest.approx(0.75, abs=0.01)
    assert np.array_equal(np.sort(req.input_tokens[: tr.n_requests]), np.sort(tr.input_tokens))
    assert req.expected_tokens == pytest.approx(tr.input_tokens.mean() + tr.output_tokens.mean())
