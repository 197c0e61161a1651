"""Request-length laws: the ShareGPT-like distribution of the calibration runs, clipped Gaussians, traces.

:func:`sample_lengths` draws (prompt, output) token counts from a :class:`~twin.spec.Lengths`; the ShareGPT
law's parameters come from :func:`sharegpt_fit` (a documented moment fit). Draws use one inverse-CDF table
lookup per request (:func:`draw_discrete`, compiled): a million requests take a few tens of milliseconds.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from numba import njit

from twin.spec import Lengths

# ShareGPT V3 first-turn statistics of the calibration runs (calibration.md)
SHAREGPT_PROMPT_RANGE = (4, 1024)
SHAREGPT_MAX_TOTAL = 2048
SHAREGPT_PROMPT_MEAN = 222.7
SHAREGPT_OUTPUT_MEAN = {"llama-3.1-8b-instruct": 196.5, "qwen-2.5-7b-instruct": 200.1}
SHAREGPT_OUTPUT_MEAN_DEFAULT = 198.3
SHAREGPT_CV = 1.0  # standard deviation ≈ mean for both prompt and output

_ERFC = np.frompyfunc(math.erfc, 1, 1)


def _ndtr(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF (elementwise, via math.erfc: for the small arrays of the fit and the tables)."""
    return np.asarray(0.5 * _ERFC(-np.asarray(x, dtype=np.float64) / math.sqrt(2.0)), dtype=np.float64)


def _ndtri(x: np.ndarray) -> np.ndarray:
    from scipy.special import ndtri

    return np.asarray(ndtri(x))


def _tln_moments(mu: float, sigma: float, lo: float, hi: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """E[X] and E[X²] of a log-normal(mu, sigma) truncated to [lo, hi] (closed form)."""
    a = (np.log(lo) - mu) / sigma
    b = (np.log(hi) - mu) / sigma
    z = _ndtr(b) - _ndtr(a)
    m1 = np.exp(mu + sigma**2 / 2) * (_ndtr(b - sigma) - _ndtr(a - sigma)) / z
    m2 = np.exp(2 * mu + 2 * sigma**2) * (_ndtr(b - 2 * sigma) - _ndtr(a - 2 * sigma)) / z
    return m1, m2


def _fit_tln(mean: float, cv: float, lo: float, hi: np.ndarray | float) -> tuple[float, float]:
    """(mu, sigma) of a log-normal truncated to [lo, hi] (hi may be an array of equally likely bounds)
    whose mean and coefficient of variation are ``mean`` and ``cv``."""
    from scipy.optimize import fsolve

    def eqs(x: np.ndarray) -> list[float]:
        m1, m2 = _tln_moments(float(x[0]), float(np.exp(x[1])), lo, hi)
        mean_ = float(np.mean(m1))
        var = float(np.mean(m2)) - mean_**2
        return [np.log(mean_ / mean), np.log(np.sqrt(max(var, 1e-12)) / mean_ / cv)]

    x0 = np.array([np.log(mean) - 0.4, np.log(0.9)])
    sol = fsolve(eqs, x0, xtol=1e-12)
    return float(sol[0]), float(np.exp(sol[1]))


# sharegpt_fit(model) for the shipped models, stored to spare every process the solve (a test re-fits them)
_SHAREGPT_FITTED: dict[str, tuple[float, float, float, float]] = {
    "llama-3.1-8b-instruct": (5.076932753060164, 1.329723856988206, 4.907588670277593, 0.8873199795447795),
    "qwen-2.5-7b-instruct": (5.076932753060164, 1.329723856988206, 4.9247715107220635, 0.890148799957173),
    "": (5.076932753060164, 1.329723856988206, 4.916221577904532, 0.8887229635192047),
}


def sharegpt_params(model: str = "") -> tuple[float, float, float, float]:
    """(mu_in, sigma_in, mu_out, sigma_out) of the ShareGPT-like length law for ``model`` (see
    :func:`sharegpt_fit`; stored values for the shipped models and the default)."""
    key = model if model in SHAREGPT_OUTPUT_MEAN else ""
    if key in _SHAREGPT_FITTED:
        return _SHAREGPT_FITTED[key]
    return sharegpt_fit(key)


@cache
def sharegpt_fit(model: str = "") -> tuple[float, float, float, float]:
    """(mu_in, sigma_in, mu_out, sigma_out) of the ShareGPT-like length law, solved from the moments.

    The fit: prompt ~ log-normal truncated to [3.5, 1024.5) and rounded (so 4–1024 tokens), with mean 222.7
    and standard deviation = mean; output ~ log-normal truncated to [0.5, 2048 − prompt + 0.5) and rounded,
    with mean 196.5 (Llama tokenizer), 200.1 (Qwen) or 198.3 (other models) and standard deviation = mean, the
    output's moments averaged over 256 prompt quantiles. Both are solved in closed form (truncated log-normal
    moments) with ``scipy.optimize.fsolve``; prompt and output are independent apart from the 2048 cap.
    """
    lo_in, hi_in = SHAREGPT_PROMPT_RANGE[0] - 0.5, SHAREGPT_PROMPT_RANGE[1] + 0.5
    mu_in, s_in = _fit_tln(SHAREGPT_PROMPT_MEAN, SHAREGPT_CV, lo_in, hi_in)
    u = (np.arange(256) + 0.5) / 256
    prompts = np.round(_sample_tln(mu_in, s_in, lo_in, hi_in, u))
    out_mean = sharegpt_output_mean(model)
    mu_out, s_out = _fit_tln(out_mean, SHAREGPT_CV, 0.5, SHAREGPT_MAX_TOTAL - prompts + 0.5)
    return mu_in, s_in, mu_out, s_out


def _sample_tln(mu: float, sigma: float, lo: float, hi: np.ndarray | float, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draws of a log-normal truncated to [lo, hi) from uniforms ``u``."""
    flo = _ndtr(np.asarray((np.log(lo) - mu) / sigma))
    fhi = _ndtr(np.asarray((np.log(hi) - mu) / sigma))
    q = np.clip(flo + u * (fhi - flo), 1e-300, 1 - 1e-16)
    return np.exp(mu + sigma * _ndtri(q))


@njit(cache=True)
def draw_discrete(cdf: np.ndarray, u: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Inverse-CDF draws from a discrete law: out[i] = smallest k with cdf[k] > u[i]·cdf[cap[i]] (cap[i] < 0:
    no truncation), found from a guide table (O(1) expected per draw)."""
    m = cdf.shape[0]
    g = 4 * m
    guide = np.empty(g + 1, np.int64)
    k = 0
    for j in range(g + 1):
        x = j / g * cdf[m - 1]
        while k < m - 1 and cdf[k] <= x:
            k += 1
        guide[j] = k
    out = np.empty(u.shape[0], np.int64)
    for i in range(u.shape[0]):
        top = cdf[cap[i]] if cap.shape[0] > 0 and cap[i] >= 0 else cdf[m - 1]
        x = u[i] * top
        j = int(x / cdf[m - 1] * g)
        k = guide[j] - 1 if guide[j] > 0 else 0
        while k > 0 and cdf[k - 1] > x:
            k -= 1
        while k < m - 1 and cdf[k] <= x:
            k += 1
        out[i] = k
    return out


_NO_CAP = np.empty(0, np.int64)


@cache
def _sharegpt_tables(model: str) -> tuple[np.ndarray, np.ndarray]:
    """CDFs of the rounded, truncated log-normals: prompt over 0..1024 tokens (0 below 4) and output over
    0..2047 tokens (0 at 0); a value k has probability F(k + 0.5) − F(k − 0.5)."""
    mu_in, s_in, mu_out, s_out = sharegpt_params(model)
    lo, hi = SHAREGPT_PROMPT_RANGE
    k = np.arange(hi + 1, dtype=np.float64)
    f = _ndtr((np.log(np.maximum(k + 0.5, lo - 0.5)) - mu_in) / s_in)
    pmf = np.diff(np.concatenate(([0.0], f)))
    pmf[:lo] = 0.0
    cdf_in = np.cumsum(pmf)
    k = np.arange(SHAREGPT_MAX_TOTAL, dtype=np.float64)
    f = _ndtr((np.log(k + 0.5) - mu_out) / s_out)
    pmf = np.diff(np.concatenate(([0.0], f)))
    pmf[0] = 0.0
    cdf_out = np.cumsum(pmf)
    return cdf_in, cdf_out


def sharegpt_output_mean(model: str = "", output_scale: float = 1.0) -> float:
    """Mean output tokens of the ShareGPT law for ``model``: the reference completions' mean × the profile's
    EOS shortfall ``output_scale`` (:attr:`twin.profile.Profile.output_scale`; 1 = the reference mean)."""
    return output_scale * SHAREGPT_OUTPUT_MEAN.get(model, SHAREGPT_OUTPUT_MEAN_DEFAULT)


def expected_tokens(lengths: Lengths, model: str = "", output_scale: float = 1.0) -> float:
    """Mean prompt + output tokens of one request under ``lengths`` (without drawing any).

    ``output_scale`` (a profile's EOS shortfall, :attr:`twin.profile.Profile.output_scale`) scales the
    ShareGPT law's reference output lengths; other laws are generated lengths and ignore it.
    """
    if lengths.kind == "sharegpt":
        return SHAREGPT_PROMPT_MEAN + sharegpt_output_mean(model, output_scale)
    if lengths.kind == "normal":
        assert lengths.input_mean is not None and lengths.input_std is not None
        assert lengths.output_mean is not None and lengths.output_std is not None
        return _clipped_normal_mean(lengths.input_mean, lengths.input_std) + _clipped_normal_mean(
            lengths.output_mean, lengths.output_std)
    from twin.traces import load_trace

    assert lengths.trace is not None
    tr = load_trace(lengths.trace)
    return float(tr.input_tokens.mean() + tr.output_tokens.mean())


@cache
def _reference_outputs(model: str) -> np.ndarray:
    """A fixed sample (2^18 draws, seed 12345) of the ShareGPT law's reference output lengths for ``model``,
    with the prompt-dependent cap."""
    _, out, _ = sample_lengths(np.random.default_rng(12345), 1 << 18, Lengths(), model)
    return out.astype(np.float64)


@cache
def _power_norm(model: str, exponent: float) -> float:
    """E[o] / E[o^exponent] under the ShareGPT output law of ``model`` (on :func:`_reference_outputs`)."""
    out = _reference_outputs(model)
    return float(out.mean() / (out**exponent).mean())


def generated_outputs(reference: np.ndarray, model: str, output_scale: float = 1.0,
                      output_exponent: float = 1.0) -> np.ndarray:
    """Generated output tokens of requests whose ShareGPT reference completions are ``reference``.

    The model stops at EOS before ``max_tokens`` = the reference length, more often on long references:
    generated = max(1, round(c · reference^output_exponent)) with c = output_scale · E[o] / E[o^exponent],
    so the mean is ``output_scale`` × the reference mean and an exponent below 1 thins the long tail (both
    are profile parameters fitted by :mod:`twin.calibration.fit`; 1, 1 = the reference lengths).
    """
    if output_scale == 1.0 and output_exponent == 1.0:
        return reference
    c = output_scale * _power_norm(model, float(output_exponent))
    return np.maximum(np.rint(c * reference.astype(np.float64) ** output_exponent), 1).astype(np.int64)


def sample_lengths(rng: np.random.Generator, n: int, lengths: Lengths, model: str = "",
                   output_scale: float = 1.0, output_exponent: float = 1.0
                   ) -> tuple[np.ndarray, np.ndarray, float]:
    """``n`` (prompt, output) lengths and the expected prompt + output tokens of one request.

    For the ShareGPT law, outputs are the serving model's generated lengths (:func:`generated_outputs`:
    its EOS shortfall against the reference completions, see :func:`expected_tokens`).
    """
    if lengths.kind == "sharegpt":
        cdf_in, cdf_out = _sharegpt_tables(model)
        inp = draw_discrete(cdf_in, rng.random(n), _NO_CAP)
        out = draw_discrete(cdf_out, rng.random(n), SHAREGPT_MAX_TOTAL - inp)
        out = generated_outputs(out, model, output_scale, output_exponent)
        return inp, out, expected_tokens(lengths, model, output_scale)
    if lengths.kind == "normal":
        assert lengths.input_mean is not None and lengths.input_std is not None
        assert lengths.output_mean is not None and lengths.output_std is not None
        inp = np.maximum(np.round(rng.normal(lengths.input_mean, lengths.input_std, n)), 1).astype(np.int64)
        out = np.maximum(np.round(rng.normal(lengths.output_mean, lengths.output_std, n)), 1).astype(np.int64)
        return inp, out, _clipped_normal_mean(lengths.input_mean, lengths.input_std) + _clipped_normal_mean(
            lengths.output_mean, lengths.output_std)
    from twin.traces import load_trace

    assert lengths.trace is not None
    tr = load_trace(lengths.trace)
    idx = rng.integers(0, tr.n_requests, n)
    exp_tokens = float(tr.input_tokens.mean() + tr.output_tokens.mean())
    return tr.input_tokens[idx].astype(np.int64), tr.output_tokens[idx].astype(np.int64), exp_tokens


def _clipped_normal_mean(m: float, s: float) -> float:
    """Mean of max(round(N(m, s²)), 1), ignoring rounding: E[max(X, 1)]."""
    if s <= 0:
        return max(round(m), 1)
    z = (1 - m) / s
    phi = float(np.exp(-z * z / 2) / np.sqrt(2 * np.pi))
    cdf = float(_ndtr(np.asarray(z)))
    return 1.0 * cdf + m * (1 - cdf) + s * phi


# ---------------------------------------------------------------- arrivals
