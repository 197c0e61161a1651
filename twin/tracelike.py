"""Trace-like workloads: synthetic request traces whose parameters are figures measured on public traces.

The public Azure LLM inference traces are not part of the package (see :mod:`twin.external`). For users
without them the package ships *trace-like* workloads, ``azure-like-conv`` and ``azure-like-code``: a few
numbers measured on the real traces (by ``bench/bench_tracelike.py``, which anyone with the traces can
re-run), never their rows. A trace-like workload is the model below; :func:`generate_trace` draws a
:class:`~twin.traces.Trace` from it with an explicit seed.

The model (one trace span ``span_s`` with ``n_requests`` requests):

- **volume curve**: the span is cut into ``len(volume)`` equal bins; ``volume[b]`` is the request rate in
  bin b relative to the mean rate (mean 1). The cumulative volume maps wall time to *operational time*, in
  which the process is stationary.
- **burstiness**: in operational time the gaps between requests are i.i.d. hyper-exponential: with
  probability ``gap_weights[k]`` an exponential of mean ``gap_means[k]`` (unit mean overall), fitted by EM to
  the real trace's operational-time gaps. Its squared coefficient of variation is 2·Σ w·m² − 1.
- **lengths**: prompt and output lengths are drawn from their empirical quantile functions, given at
  ``levels`` and interpolated linearly in log tokens, rounded to whole tokens (≥ 1); their dependence is a
  Gaussian copula with the measured Spearman rank correlation ``length_spearman``.

``checks`` holds figures of the real trace that the model is not fitted to directly (the gap CV, the
index of dispersion of counts, the 5-minute volume shape, mean lengths); a test checks that seeded samples
of the generator reproduce them within stated tolerances.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
from scipy.special import ndtr

from twin.errors import InputError

WORKLOAD_DIR = "workloads"
TRACELIKE: tuple[str, ...] = ("azure-like-code", "azure-like-conv")
VOLUME_BINS = 60
GAP_PHASES = 3
LEVELS: tuple[float, ...] = ((0.0, 0.005, 0.01, 0.025, 0.05) + tuple(k / 20 for k in range(2, 19))
                             + (0.925, 0.95, 0.975, 0.99, 0.995, 0.999, 1.0))
CHECK_BINS_S = (10.0, 60.0)   # windows of the index of dispersion of counts
SHAPE_BIN_S = 300.0           # the coarse volume shape kept as a check


@dataclass(frozen=True)
class TraceLike:
    """The measured figures of one trace-like workload (see the module docstring for the model)."""

    name: str
    description: str
    span_s: float
    n_requests: int
    volume: tuple[float, ...]
    gap_weights: tuple[float, ...]
    gap_means: tuple[float, ...]
    levels: tuple[float, ...]
    input_quantiles: tuple[float, ...]
    output_quantiles: tuple[float, ...]
    length_spearman: float
    checks: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def rate_rps(self) -> float:
        return self.n_requests / self.span_s

    def to_json(self) -> str:
        """The JSON file text: one field per line, lists on one line."""
        lines = (f" {json.dumps(k)}: {json.dumps(v)}" for k, v in self.to_dict().items())
        return "{\n" + ",\n".join(lines) + "\n}\n"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "span_s": self.span_s,
                "n_requests": self.n_requests, "volume": list(self.volume),
                "gap_weights": list(self.gap_weights), "gap_means": list(self.gap_means),
                "levels": list(self.levels), "input_quantiles": list(self.input_quantiles),
                "output_quantiles": list(self.output_quantiles), "length_spearman": self.length_spearman,
                "checks": self.checks}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str) -> TraceLike:
        """Validated; a bad file gives one :class:`InputError` naming ``source``, the field and the value."""
        def bad(key: str, rule: str) -> InputError:
            return InputError(f"{rule} (got {d.get(key)!r})", source=source, field=key, value=d.get(key))

        keys = [f for f in cls.__dataclass_fields__ if f != "checks"]
        for key in keys:
            if key not in d:
                raise InputError("is missing", source=source, field=key)
        vec: dict[str, np.ndarray] = {}
        for key in ("volume", "gap_weights", "gap_means", "levels", "input_quantiles", "output_quantiles"):
            try:
                v = np.asarray(d[key], dtype=np.float64)
            except (TypeError, ValueError):
                raise bad(key, "must be a list of numbers") from None
            if v.ndim != 1 or v.size == 0 or not np.all(np.isfinite(v)) or np.any(v < 0):
                raise bad(key, "must be a non-empty list of finite non-negative numbers")
            vec[key] = v
        if not float(d["span_s"]) > 0 or int(d["n_requests"]) < 2:
            raise bad("span_s" if not float(d["span_s"]) > 0 else "n_requests", "must be positive (≥ 2)")
        if vec["volume"].sum() <= 0:
            raise bad("volume", "must have a positive bin")
        if vec["gap_weights"].size != vec["gap_means"].size or abs(vec["gap_weights"].sum() - 1) > 1e-6:
            raise bad("gap_weights", "must sum to 1, one weight per gap mean")
        lv = vec["levels"]
        if lv[0] != 0 or lv[-1] != 1 or np.any(np.diff(lv) <= 0):
            raise bad("levels", "must increase from 0 to 1")
        for key in ("input_quantiles", "output_quantiles"):
            q = vec[key]
            if q.size != lv.size or np.any(np.diff(q) < 0) or q[0] < 1:
                raise bad(key, "must be non-decreasing, ≥ 1, one per level")
        if not -1 <= float(d["length_spearman"]) <= 1:
            raise bad("length_spearman", "must be in [-1, 1]")
        tup = {k: tuple(float(x) for x in v) for k, v in vec.items()}
        return cls(name=str(d["name"]), description=str(d["description"]), span_s=float(d["span_s"]),
                   n_requests=int(d["n_requests"]), length_spearman=float(d["length_spearman"]),
                   checks=dict(d.get("checks", {})), **tup)


def tracelike_names() -> tuple[str, ...]:
    """Names of the shipped trace-like workloads."""
    return TRACELIKE


def load_tracelike(name: str) -> TraceLike:
    """The shipped trace-like workload ``name`` (see :func:`tracelike_names`)."""
    if name not in TRACELIKE:
        raise InputError(f"unknown trace-like workload (got {name!r}; shipped: {', '.join(TRACELIKE)})",
                         field="trace", value=name)
    source = f"twin/{WORKLOAD_DIR}/{name}.json"
    text = resources.files("twin").joinpath(WORKLOAD_DIR).joinpath(f"{name}.json").read_text()
    return TraceLike.from_dict(json.loads(text), source)


# ------------------------------------------------------------------------------------------------ measuring
def _operational(arrival: np.ndarray, span: float, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(relative volume per bin, operational time of each arrival in units of mean gaps ≈ request index)."""
    edges = np.linspace(0.0, span, bins + 1)
    counts = np.histogram(arrival, edges)[0].astype(np.float64)
    volume = counts / counts.mean()
    cum = np.concatenate(([0.0], np.cumsum(counts)))
    return volume, np.interp(arrival, edges, cum)


def fit_hyperexponential(gaps: np.ndarray, phases: int = GAP_PHASES, iters: int = 3000
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood mixture of ``phases`` exponentials (EM) of the gaps scaled to unit mean;
    returns (weights, means), sorted by mean. Deterministic: starts at quantiles of the data, stops after
    ``iters`` iterations or when no parameter moves by 1e-12 (relative for the means)."""
    x = np.asarray(gaps, dtype=np.float64)
    x = x / x.mean()
    w = np.full(phases, 1.0 / phases)
    m = np.quantile(x, np.linspace(0.2, 0.95, phases)) + 1e-4
    for _ in range(iters):
        dens = w / m * np.exp(-x[:, None] / m)
        r = dens / np.maximum(dens.sum(axis=1, keepdims=True), 1e-300)
        w_new = r.mean(axis=0)
        m_new = np.maximum((r * x[:, None]).sum(axis=0) / np.maximum(r.sum(axis=0), 1e-300), 1e-9)
        step = max(float(np.max(np.abs(w_new - w))), float(np.max(np.abs(m_new / m - 1))))
        w, m = w_new, m_new
        if step < 1e-12:
            break
    m = m / float(w @ m)  # exactly unit mean
    order = np.argsort(m)
    return w[order], m[order]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b)[0])


def arrival_figures(arrival: np.ndarray, span: float) -> dict[str, Any]:
    """Burstiness and volume figures of arrival times over [0, span): gap CV, index of dispersion of counts
    (variance/mean) in windows of CHECK_BINS_S, relative volume per SHAPE_BIN_S window (last partial
    window dropped)."""
    gaps = np.diff(np.sort(arrival))
    out: dict[str, Any] = {"gap_cv": float(gaps.std() / gaps.mean())}
    for w in CHECK_BINS_S:
        c = np.histogram(arrival, np.arange(0.0, span + 1e-9, w))[0]
        out[f"idc_{w:g}s"] = float(c.var() / c.mean())
    c = np.histogram(arrival, np.arange(0.0, span + 1e-9, SHAPE_BIN_S))[0].astype(float)
    out["volume_5min"] = [round(float(v), 4) for v in c / c.mean()]
    return out


def measure(arrival_s: np.ndarray, input_tokens: np.ndarray, output_tokens: np.ndarray, *, name: str,
            description: str) -> TraceLike:
    """The trace-like figures of a real trace (arrival times from 0, token counts)."""
    t = np.sort(np.asarray(arrival_s, dtype=np.float64) - float(np.min(arrival_s)))
    span = float(t[-1])
    volume, op = _operational(t, span, VOLUME_BINS)
    w, m = fit_hyperexponential(np.diff(op))
    lv = np.asarray(LEVELS)
    inp = np.asarray(input_tokens, dtype=np.float64)
    out = np.asarray(output_tokens, dtype=np.float64)
    checks = arrival_figures(t, span)
    checks.update(input_mean=float(inp.mean()), output_mean=float(out.mean()))
    r6 = lambda v: tuple(float(f"{x:.6g}") for x in v)  # noqa: E731
    return TraceLike(name=name, description=description, span_s=round(span, 6), n_requests=int(t.size),
                     volume=r6(volume), gap_weights=r6(w / w.sum()), gap_means=r6(m), levels=LEVELS,
                     input_quantiles=r6(np.quantile(inp, lv)), output_quantiles=r6(np.quantile(out, lv)),
                     length_spearman=round(_spearman(inp, out), 6),
                     checks={k: (round(v, 6) if isinstance(v, float) else v) for k, v in checks.items()})


# ----------------------------------------------------------------------------------------------- generating
def sample_arrivals(like: TraceLike, rng: np.random.Generator, duration_s: float | None = None) -> np.ndarray:
    """Sorted arrival times in [0, duration_s) (default: the span); the volume curve repeats past the span."""
    T = like.span_s if duration_s is None else float(duration_s)
    vol = np.asarray(like.volume)
    reps = int(np.ceil(T / like.span_s))
    bins = vol.size * reps
    edges = np.linspace(0.0, like.span_s * reps, bins + 1)
    cum = np.concatenate(([0.0], np.cumsum(np.tile(vol, reps)))) * (like.n_requests / vol.sum())
    total = float(cum[-1])
    w, m = np.asarray(like.gap_weights), np.asarray(like.gap_means)
    k = int(total + 8 * np.sqrt(total * float(2 * w @ (m * m))) + 64)
    phase = rng.choice(w.size, size=k, p=w / w.sum())
    gaps = rng.exponential(1.0, k) * m[phase]
    stationary = (w * m) / float(w @ m)   # the first gap: the phase seen by a random time point, whose
    gaps[0] = rng.exponential(1.0) * m[rng.choice(w.size, p=stationary)]  # residual is memoryless
    op = np.cumsum(gaps)
    while op[-1] < total:                 # rare: extend
        more = rng.exponential(1.0, k) * m[rng.choice(w.size, size=k, p=w / w.sum())]
        op = np.concatenate((op, op[-1] + np.cumsum(more)))
    op = op[op < total]
    times = np.interp(op, cum, edges)
    return times[times < T]


def sample_lengths(like: TraceLike, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (prompt, output) token counts (int64, ≥ 1) from the quantile functions and the copula."""
    rho = 2.0 * np.sin(np.pi * like.length_spearman / 6.0)  # Spearman -> Gaussian-copula correlation
    z = rng.standard_normal((2, n))
    z[1] = rho * z[0] + np.sqrt(max(1.0 - rho * rho, 0.0)) * z[1]
    u = ndtr(z)
    lv = np.asarray(like.levels)
    out = []
    for q, uu in ((like.input_quantiles, u[0]), (like.output_quantiles, u[1])):
        logq = np.log(np.asarray(q))
        out.append(np.maximum(np.rint(np.exp(np.interp(uu, lv, logq))), 1).astype(np.int64))
    return out[0], out[1]


def generate_arrays(like: TraceLike, seed: int, duration_s: float | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(arrival_s, input_tokens, output_tokens) of one seeded sample; same seed, same arrays."""
    arrival = sample_arrivals(like, np.random.default_rng([seed, 0]), duration_s)
    inp, out = sample_lengths(like, np.random.default_rng([seed, 1]), arrival.size)
    return arrival, inp, out
