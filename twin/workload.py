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

from dataclasses import dataclass

import numpy as np

from twin.lengths import _NO_CAP, draw_discrete, sample_lengths
from twin.spec import Instance, Workload

SWITCH_PERIOD_S = 300.0
SWITCH_FACTOR = 1.5
RATE_SPAN = 7.5
LOGNORMAL_GAP_SIGMA = 1.0



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
def _poisson(rng: np.random.Generator, rates: np.ndarray, duration: float, arng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray]:
    total = float(rates.sum())
    if total <= 0:
        return np.empty(0), np.empty(0, np.int64)
    chunks = []
    t0 = 0.0
    while True:
        m = int(total * (duration - t0) + 6 * np.sqrt(total * (duration - t0)) + 16)
        times = rng.exponential(1.0 / total, m)
        np.cumsum(times, out=times)
        if t0:
            times += t0
        chunks.append(times)
        if times[-1] >= duration:
            break
        t0 = float(times[-1])
    times = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    times = times[: int(np.searchsorted(times, duration, side="left"))]
    return times, draw_discrete(np.cumsum(rates), arng.random(times.size), _NO_CAP)


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
    return times, draw_discrete(np.cumsum(rates), arng.random(times.size), _NO_CAP), rows


def generate_requests(instance: Instance, seed: int = 0, *, workload: Workload | None = None,
                      rates: np.ndarray | None = None, output_scale: float = 1.0,
                      output_exponent: float = 1.0) -> Requests:
    """The requests of one run window of ``instance`` (arrivals in [0, duration_s)), sorted by arrival.

    ``workload`` and ``rates`` override the instance's (e.g. to scale every rate with common random numbers).
    ``output_scale`` and ``output_exponent`` are the serving model's EOS shortfall on ShareGPT reference
    lengths (the profile's; see :func:`twin.lengths.generated_outputs`).
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
        inp, out, exp_tokens = sample_lengths(lrng, times.size, wl.lengths, instance.model, output_scale,
                                             output_exponent)
    if wl.arrival == "poisson" or rows is not None:  # already sorted
        arrays = [times, adapter, inp, out]
        for i, (a, dt) in enumerate(zip(arrays, (np.float64, np.int64, np.int64, np.int64), strict=True)):
            arrays[i] = np.ascontiguousarray(a, dtype=dt)
            arrays[i].setflags(write=False)
        return Requests(arrays[0], arrays[1], arrays[2], arrays[3], exp_tokens)
    return Requests.from_arrays(times, adapter, inp, out, exp_tokens)
