"""Seeded instance generators: the papers' workloads, popularity laws, real-trace and trace-like workloads.

Families (see :data:`FAMILIES`):

- ``paper``: as in the calibration runs of Agulló et al. A rank set is drawn from {8,16}, {16,32}, {8,16,32}
  (or given) and ranks are assigned round-robin over a shuffled adapter list; a group of three consecutive
  rates of :data:`PAPER_RATES` (e.g. 1.6/0.8/0.4 req/s) is drawn (or given) and assigned round-robin over
  another shuffled list, so rank and rate are paired at random. The total rate follows from the group.
- ``zipf``: a total rate split over adapters with Zipf weights ``1/k^s`` (``zipf_s``) in a random order;
  ranks drawn uniformly from ``ranks``. Popularity laws are capped at ``max_rate_rps`` per adapter (the
  excess is spread pro rata over the others; a cap below total/n is raised to it), since one adapter cannot
  be split over GPUs.
- ``dirichlet``: a total rate split with weights drawn from a symmetric Dirichlet(``alpha``).
- ``trace``: the requests of a real trace (volume scaled to ``total_rate_rps`` if given) are assigned to
  adapters, one to each first and the rest by a popularity law (``popularity``: zipf, dirichlet or uniform);
  rate = assigned requests / trace span. The workload replays the trace (``arrival: trace``) with its lengths.
  The default trace, ``azure_conv_2023``, is a public trace that is not shipped (see :mod:`twin.traces`);
  ``trace`` may name any trace or CSV path.
- ``tracelike``: the same, on a shipped trace-like workload (default ``azure-like-conv``; see
  :mod:`twin.tracelike`): works without any external data.

Same arguments, same instance: all randomness comes from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from twin.errors import InputError
from twin.spec import ALLOWED_RANKS, Adapter, Instance, Lengths, Workload
from twin.traces import is_trace_name, load_trace, shipped_traces

FAMILIES: tuple[str, ...] = ("paper", "zipf", "dirichlet", "trace", "tracelike")
POPULARITY: tuple[str, ...] = ("zipf", "dirichlet", "uniform")
PAPER_RATES: tuple[float, ...] = (3.2, 1.6, 0.8, 0.4, 0.1, 0.05, 0.025, 0.0125, 0.00625, 0.003125)
PAPER_RANK_SETS: tuple[tuple[int, ...], ...] = ((8, 16), (16, 32), (8, 16, 32))
DEFAULT_RANKS: tuple[int, ...] = (8, 16, 32)
DEFAULT_RATE_PER_ADAPTER = 0.25  # req/s; default total rate of zipf/dirichlet = this × adapters
MIN_RATE_RPS = 1e-6              # popularity weights are floored so that every adapter has a positive rate
DEFAULT_MODEL = "llama-3.1-8b-instruct"
DEFAULT_GPU = "h100-64gb"
DEFAULT_TRACE = "azure_conv_2023"        # public, read from the traces folder (twin.external)
DEFAULT_TRACELIKE = "azure-like-conv"    # shipped
MAX_ADAPTERS = 100_000
DEFAULT_MAX_RATE_RPS = 3.2       # the papers' hottest adapter; popularity laws are capped there


def _round(x: np.ndarray) -> list[float]:
    """Rates with 6 significant digits (short, readable files), floored at MIN_RATE_RPS."""
    return [max(float(f"{v:.6g}"), MIN_RATE_RPS) for v in x.tolist()]


def _weights(law: str, n: int, rng: np.random.Generator, zipf_s: float, alpha: float) -> np.ndarray:
    if law == "zipf":
        w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** zipf_s
        w = w[rng.permutation(n)]
    elif law == "dirichlet":
        w = rng.dirichlet(np.full(n, alpha))
    elif law == "uniform":
        w = np.ones(n)
    else:
        raise InputError(f"must be one of {list(POPULARITY)} (got {law!r})", field="popularity", value=law)
    return w / w.sum()


def _cap(w: np.ndarray, total: float, cap: float) -> np.ndarray:
    """Weights whose share of ``total`` is at most ``cap`` (at least the uniform share total/n); the excess
    goes to the others pro rata."""
    cap = max(cap, total / w.size)
    w = w.copy()
    fixed = np.zeros(w.size, dtype=bool)
    while True:
        over = ~fixed & (w * total > cap)
        if not over.any():
            return w
        fixed |= over
        w[fixed] = cap / total
        free = ~fixed
        if not free.any():
            return w
        w[free] *= (1.0 - w[fixed].sum()) / w[free].sum()


def _round_robin(values: Sequence[float] | Sequence[int], n: int, rng: np.random.Generator) -> list:
    """values[k % len(values)] for the k-th adapter of a shuffled adapter list."""
    order = rng.permutation(n)
    out: list = [None] * n
    for k, i in enumerate(order.tolist()):
        out[i] = values[k % len(values)]
    return out


def _check_args(family: str, n_adapters: int, ranks: Sequence[int] | None, total_rate_rps: float | None,
                zipf_s: float, alpha: float, max_rate_rps: float) -> None:
    if family not in FAMILIES:
        raise InputError(f"must be one of {list(FAMILIES)} (got {family!r})", field="family", value=family)
    if isinstance(n_adapters, bool) or not isinstance(n_adapters, int) or not 1 <= n_adapters <= MAX_ADAPTERS:
        raise InputError(f"must be an integer in [1, {MAX_ADAPTERS}] (got {n_adapters!r})", field="adapters",
                         value=n_adapters)
    if ranks is not None and (not ranks or any(r not in ALLOWED_RANKS for r in ranks)):
        raise InputError(f"must be a non-empty subset of {list(ALLOWED_RANKS)} (got {list(ranks)})",
                         field="ranks", value=ranks)
    if total_rate_rps is not None and not total_rate_rps > 0:
        raise InputError(f"must be positive (got {total_rate_rps!r})", field="total_rate_rps",
                         value=total_rate_rps)
    if family == "paper" and total_rate_rps is not None:
        raise InputError("is not used by family paper (its rates come from the rate group)",
                         field="total_rate_rps", value=total_rate_rps)
    if not max_rate_rps > 0:
        raise InputError(f"must be positive (got {max_rate_rps!r})", field="max_rate_rps", value=max_rate_rps)
    if not zipf_s >= 0:
        raise InputError(f"must be non-negative (got {zipf_s!r})", field="zipf_s", value=zipf_s)
    if not alpha > 0:
        raise InputError(f"must be positive (got {alpha!r})", field="alpha", value=alpha)


def generate(family: str, n_adapters: int, seed: int, *, model: str = DEFAULT_MODEL, gpu: str = DEFAULT_GPU,
             total_rate_rps: float | None = None, duration_s: float | None = None, arrival: str | None = None,
             cv: float | None = None, lengths: str | None = None, ranks: Sequence[int] | None = None,
             rates: Sequence[float] | None = None, zipf_s: float = 1.0, alpha: float = 1.0,
             popularity: str = "zipf", trace: str | None = None, max_rate_rps: float = DEFAULT_MAX_RATE_RPS,
             name: str | None = None) -> Instance:
    """A reproducible instance of ``family`` with ``n_adapters`` adapters.

    ``arrival`` (poisson | gamma with ``cv`` | unpredictable | trace) defaults to ``trace`` for the trace
    and tracelike families and ``poisson`` otherwise; ``lengths`` (``sharegpt`` | ``trace``) likewise.
    ``duration_s`` defaults to 3600 (the trace families: the trace span, rounded down). ``ranks``: the rank
    set (paper: drawn when not given); ``rates``: the paper family's rate group (drawn when not given).
    ``trace``: trace name or CSV path used by ``arrival``/``lengths`` ``trace`` and by the trace families
    (default :data:`DEFAULT_TRACE` for the trace family, else the shipped :data:`DEFAULT_TRACELIKE`).
    """
    _check_args(family, n_adapters, ranks, total_rate_rps, zipf_s, alpha, max_rate_rps)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(f"must be a non-negative integer (got {seed!r})", field="seed", value=seed)
    if trace is None:
        trace = DEFAULT_TRACE if family == "trace" else DEFAULT_TRACELIKE
    if family == "tracelike" and trace not in shipped_traces():
        names = ", ".join(shipped_traces())
        raise InputError(f"family tracelike takes a shipped trace-like workload ({names}; got {trace!r}); "
                         "use family trace for other traces", field="trace", value=trace)
    rng = np.random.default_rng(seed)
    n = n_adapters
    trace_span: float | None = None
    if family == "paper":
        rank_set = tuple(ranks) if ranks else PAPER_RANK_SETS[int(rng.integers(len(PAPER_RANK_SETS)))]
        if rates is None:
            start = int(rng.integers(len(PAPER_RATES) - 2))
            rates = PAPER_RATES[start:start + 3]
        elif not rates or any(not r > 0 for r in rates):
            raise InputError(f"must be positive numbers (got {list(rates)})", field="rates", value=rates)
        rank_of = _round_robin(rank_set, n, rng)
        rate_of = _round_robin([float(r) for r in rates], n, rng)
    else:
        rank_set = tuple(ranks) if ranks else DEFAULT_RANKS
        rank_of = [int(r) for r in rng.choice(np.asarray(rank_set), size=n)]
        if family in ("zipf", "dirichlet"):
            total = total_rate_rps if total_rate_rps is not None else DEFAULT_RATE_PER_ADAPTER * n
            rate_of = _round(total * _cap(_weights(family, n, rng, zipf_s, alpha), total, max_rate_rps))
        else:
            tr = load_trace(trace)
            trace_span = tr.span_s
            total_requests = tr.n_requests if total_rate_rps is None else round(total_rate_rps * tr.span_s)
            if total_requests < n:
                raise InputError(f"gives {total_requests} requests for {n} adapters; raise total_rate_rps "
                                 f"(trace {tr.name}: {tr.rate_rps:.4g} req/s)", field="total_rate_rps",
                                 value=total_rate_rps)
            w = _cap(_weights(popularity, n, rng, zipf_s, alpha), total_requests / tr.span_s, max_rate_rps)
            counts = 1 + rng.multinomial(total_requests - n, w)
            rate_of = _round(counts / tr.span_s)
    width = len(str(n - 1))
    adapters = tuple(Adapter(f"a{i:0{width}d}", int(rank_of[i]), float(rate_of[i])) for i in range(n))
    if arrival is None:
        arrival = "trace" if family in ("trace", "tracelike") else "poisson"
    if lengths is None:
        lengths = "trace" if family in ("trace", "tracelike") else "sharegpt"
    if lengths not in ("sharegpt", "trace"):
        raise InputError(f"must be 'sharegpt' or 'trace' (got {lengths!r})", field="lengths", value=lengths)
    if "trace" in (arrival, lengths):
        load_trace(trace)  # an unknown name or a bad file fails here, not in the twin
        if not is_trace_name(trace):
            trace = str(Path(trace).resolve())
    if duration_s is None:
        duration_s = float(int(trace_span)) if trace_span is not None else 3600.0
    workload = Workload(
        duration_s=float(duration_s), arrival=arrival, cv=cv,
        trace=trace if arrival == "trace" else None,
        lengths=Lengths(kind="trace", trace=trace) if lengths == "trace" else Lengths(),
    )
    return Instance(name=name or f"{family}-{n}-s{seed}", model=model, gpu=gpu, adapters=adapters,
                    workload=workload)
