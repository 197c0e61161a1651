"""Seeded request generation: arrival times, adapters and request lengths for one run window.

:func:`generate_requests` turns an :class:`~twin.spec.Instance` (its adapters' rates and its
:class:`~twin.spec.Workload`) and a seed into :class:`Requests`: arrays sorted by arrival time. Everything is
vectorised numpy driven by one ``numpy.random.Generator``; the same seed gives the same requests.

Arrival processes (``workload.arrival``):

- ``poisson``: independent Poisson arrivals per adapter, generated as their superposition (a Poisson process
  of the total rate, each arrival assigned to adapter i with probability rate_i / total — the same law).
  Scaling every rate by c with the same seed compresses the same arrival sequence in time (common random
  numbers).
- ``gamma``: a renewal process per adapter with gamma gaps of mean 1/rate and coefficient of variation ``cv``
  (started 10 mean gaps before 0 so that the window sees the stationary process).
- ``unpredictable`` (arXiv 2602.24044): every 300 s each adapter independently redraws its gap law
  (exponential, or log-normal with σ = 1 of the same mean) and multiplies its rate by 1.5 or 1/1.5, kept
  within [1/7.5, 7.5] × its base rate; the process restarts at each switch.
- ``trace``: the arrival times of a real trace (:func:`twin.traces.load_trace`) rescaled so the total rate is
  the sum of the adapter rates, tiled to cover the window; each request goes to adapter i with probability
  rate_i / total.

Lengths (``workload.lengths``): ``sharegpt`` (see :func:`sharegpt_params`), ``normal`` (clipped Gaussians,
≥ 1 token) or ``trace`` (the empirical (prompt, output) pairs of a trace: the replayed requests' own lengths
when the arrivals come from the same trace, else pairs drawn uniformly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
from numba import njit

from twin.spec import Instance, Lengths, Workload

SWITCH_PERIOD_S = 300.0
SWITCH_FACTOR = 1.5
RATE_SPAN = 7.5
LOGNORMAL_GAP_SIGMA = 1.0

# ShareGPT V3 first-turn statistics of the calibration runs (calibration.md)
SHAREGPT_PROMPT_RANGE = (4, 1024)
SHAREGPT_MAX_TOTAL = 2048
SHAREGPT_PROMPT_MEAN = 222.7
SHAREGPT_OUTPUT_MEAN = {"llama-3.1-8b-instruct": 196.5, "qwen-2.5-7b-instruct": 200.1}
SHAREGPT_OUTPUT_MEAN_DEFAULT = 198.3
SHAREGPT_CV = 1.0  # standard deviation ≈ mean for both prompt and output


@dataclass(frozen=True, eq=False)
class Requests:
    """Requests of one run, sorted by arrival: read-only arrays of equal length.

    ``arrival_s`` (float64), ``adapter`` (int64 index into the instance's adapters), ``input_tokens`` and
    ``output_tokens`` (int64 ≥ 1; the output length is the request's ``max_tokens``, all of it generated).
    ``expected_tokens`` is the mean prompt + output tokens of one request under the length law (for the
    expected offered load rate × window × expected_tokens).
    """

    arrival_s: np.ndarray
    adapter: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    expected_tokens: float

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    @classmethod
    def from_arrays(cls, arrival_s: np.ndarray, adapter: np.ndarray, input_tokens: np.ndarray,
                    output_tokens: np.ndarray, expected_tokens: float | None = None) -> Requests:
        """Sort by arrival (stable) into read-only arrays; expected_tokens defaults to the sample mean."""
        arrival = np.asarray(arrival_s, dtype=np.float64)
        order = np.argsort(arrival, kind="stable")
        arrays = [np.ascontiguousarray(np.asarray(x)[order], dtype=dt) for x, dt in
                  ((arrival, np.float64), (adapter, np.int64), (input_tokens, np.int64),
                   (output_tokens, np.int64))]
        for a in arrays:
            a.setflags(write=False)
        if expected_tokens is None:
            expected_tokens = float((arrays[2] + arrays[3]).mean()) if arrays[0].size else 0.0
        return cls(arrays[0], arrays[1], arrays[2], arrays[3], float(expected_tokens))


# ---------------------------------------------------------------- lengths
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
    out_mean = SHAREGPT_OUTPUT_MEAN.get(model, SHAREGPT_OUTPUT_MEAN_DEFAULT)
    mu_out, s_out = _fit_tln(out_mean, SHAREGPT_CV, 0.5, SHAREGPT_MAX_TOTAL - prompts + 0.5)
    return mu_in, s_in, mu_out, s_out


def _sample_tln(mu: float, sigma: float, lo: float, hi: np.ndarray | float, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draws of a log-normal truncated to [lo, hi) from uniforms ``u``."""
    flo = _ndtr(np.asarray((np.log(lo) - mu) / sigma))
    fhi = _ndtr(np.asarray((np.log(hi) - mu) / sigma))
    q = np.clip(flo + u * (fhi - flo), 1e-300, 1 - 1e-16)
    return np.exp(mu + sigma * _ndtri(q))


@njit(cache=True)
def _draw(cdf: np.ndarray, u: np.ndarray, cap: np.ndarray) -> np.ndarray:
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


def sample_lengths(rng: np.random.Generator, n: int, lengths: Lengths, model: str = "",
                   ) -> tuple[np.ndarray, np.ndarray, float]:
    """``n`` (prompt, output) lengths and the expected prompt + output tokens of one request."""
    if lengths.kind == "sharegpt":
        cdf_in, cdf_out = _sharegpt_tables(model)
        inp = _draw(cdf_in, rng.random(n), _NO_CAP)
        out = _draw(cdf_out, rng.random(n), SHAREGPT_MAX_TOTAL - inp)
        out_mean = SHAREGPT_OUTPUT_MEAN.get(model, SHAREGPT_OUTPUT_MEAN_DEFAULT)
        return inp, out, SHAREGPT_PROMPT_MEAN + out_mean
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
def _poisson(rng: np.random.Generator, rates: np.ndarray, duration: float, arng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray]:
    total = float(rates.sum())
    if total <= 0:
        return np.empty(0), np.empty(0, np.int64)
    chunks = []
    t0 = 0.0
    while True:
        m = int(total * (duration - t0) + 6 * np.sqrt(total * (duration - t0)) + 16)
        times = t0 + np.cumsum(rng.exponential(1.0 / total, m))
        chunks.append(times)
        if times[-1] >= duration:
            break
        t0 = float(times[-1])
    times = np.concatenate(chunks)
    times = times[times < duration]
    return times, _draw(np.cumsum(rates), arng.random(times.size), _NO_CAP)


def _renewal(rng: np.random.Generator, rates: np.ndarray, t0: float, t1: float, warmup: bool,
             draw_gaps) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """Per-adapter renewal arrivals in [t0, t1): ``draw_gaps(idx)`` returns unit-mean gaps for the adapters
    ``idx`` (one per entry); gaps are divided by each adapter's rate. With ``warmup`` each process starts 10
    mean gaps before t0."""
    active = np.flatnonzero(rates > 0)
    rates = rates[active]
    start = t0 - (10.0 / rates if warmup else np.zeros_like(rates))
    times_out, ad_out = [], []
    while active.size:
        expect = rates * (t1 - start)
        m = (expect + 6 * np.sqrt(expect) + 16).astype(np.int64)
        idx = np.repeat(np.arange(active.size), m)
        gaps = draw_gaps(idx) / rates[idx]
        cs = np.cumsum(gaps)
        seg_end = np.cumsum(m)
        offs = np.concatenate(([0.0], cs[seg_end[:-1] - 1]))
        t = start[idx] + cs - offs[idx]
        keep = (t >= t0) & (t < t1)
        times_out.append(t[keep])
        ad_out.append(active[idx[keep]])
        last = t[seg_end - 1]
        more = last < t1
        active, rates, start = active[more], rates[more], last[more]
    if not times_out:
        return np.empty(0), np.empty(0, np.int64)
    return np.concatenate(times_out), np.concatenate(ad_out).astype(np.int64)


def _gamma(rng: np.random.Generator, rates: np.ndarray, duration: float, cv: float
           ) -> tuple[np.ndarray, np.ndarray]:
    shape = 1.0 / (cv * cv)
    return _renewal(rng, rates, 0.0, duration, True, lambda idx: rng.gamma(shape, 1.0 / shape, idx.size))


def _unpredictable(rng: np.random.Generator, rates: np.ndarray, duration: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    n = rates.size
    mult = np.ones(n)
    times, ads = [], []
    s2 = LOGNORMAL_GAP_SIGMA**2
    t0 = 0.0
    while t0 < duration:
        if t0 > 0:
            mult = np.clip(mult * np.where(rng.random(n) < 0.5, SWITCH_FACTOR, 1 / SWITCH_FACTOR),
                           1 / RATE_SPAN, RATE_SPAN)
        lognormal = rng.random(n) < 0.5

        def gaps(idx: np.ndarray, lognormal: np.ndarray = lognormal) -> np.ndarray:
            g = rng.exponential(1.0, idx.size)
            ln = lognormal[idx]
            g[ln] = rng.lognormal(-s2 / 2, LOGNORMAL_GAP_SIGMA, int(ln.sum()))
            return g

        t1 = min(t0 + SWITCH_PERIOD_S, duration)
        t, a = _renewal(rng, rates * mult, t0, t1, False, gaps)
        times.append(t)
        ads.append(a)
        t0 = t1
    return np.concatenate(times), np.concatenate(ads)


def _trace(arng: np.random.Generator, rates: np.ndarray, duration: float, name: str
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trace arrival times rescaled to the total rate and tiled; returns (times, adapter, trace row)."""
    from twin.traces import load_trace

    tr = load_trace(name)
    total = float(rates.sum())
    rel = tr.arrival_s - tr.arrival_s[0]
    period = tr.n_requests / total          # rescaled span + one mean gap, so tiles do not collide
    scale = period / (tr.span_s + tr.span_s / (tr.n_requests - 1))
    base = rel * scale
    reps = int(np.ceil(duration / period))
    times = (base[None, :] + period * np.arange(reps)[:, None]).ravel()
    rows = np.tile(np.arange(tr.n_requests), reps)
    keep = times < duration
    times, rows = times[keep], rows[keep]
    return times, _draw(np.cumsum(rates), arng.random(times.size), _NO_CAP), rows


def generate_requests(instance: Instance, seed: int = 0, *, workload: Workload | None = None,
                      rates: np.ndarray | None = None) -> Requests:
    """The requests of one run window of ``instance`` (arrivals in [0, duration_s)), sorted by arrival.

    ``workload`` and ``rates`` override the instance's (e.g. to scale every rate with common random numbers).
    """
    wl = workload if workload is not None else instance.workload
    r = np.asarray(instance.rates if rates is None else rates, dtype=np.float64)
    rng = np.random.default_rng(seed)
    arng = np.random.default_rng([seed, 2])  # adapter draws: their own stream (common random numbers)
    T = float(wl.duration_s)
    rows = None
    if wl.arrival == "poisson":
        times, adapter = _poisson(rng, r, T, arng)
    elif wl.arrival == "gamma":
        assert wl.cv is not None
        times, adapter = _gamma(rng, r, T, float(wl.cv))
    elif wl.arrival == "unpredictable":
        times, adapter = _unpredictable(rng, r, T)
    else:
        assert wl.trace is not None
        times, adapter, rows = _trace(arng, r, T, wl.trace)
    lrng = np.random.default_rng([seed, 1])  # lengths from their own stream: same lengths for any rates
    if wl.lengths.kind == "trace" and rows is not None and wl.lengths.trace == wl.trace:
        from twin.traces import load_trace

        assert wl.trace is not None
        tr = load_trace(wl.trace)
        inp, out = tr.input_tokens[rows], tr.output_tokens[rows]
        exp_tokens = float(tr.input_tokens.mean() + tr.output_tokens.mean())
    else:
        inp, out, exp_tokens = sample_lengths(lrng, times.size, wl.lengths, instance.model)
    if wl.arrival == "poisson" or rows is not None:  # already sorted
        arrays = [times, adapter, inp, out]
        for i, (a, dt) in enumerate(zip(arrays, (np.float64, np.int64, np.int64, np.int64), strict=True)):
            arrays[i] = np.ascontiguousarray(a, dtype=dt)
            arrays[i].setflags(write=False)
        return Requests(arrays[0], arrays[1], arrays[2], arrays[3], exp_tokens)
    return Requests.from_arrays(times, adapter, inp, out, exp_tokens)
