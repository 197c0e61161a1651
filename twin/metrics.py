"""Every metric of a twin run, each defined once with its formula, and the :class:`SimResult` that holds them.

With window T = duration_s, "completed" = finished at a time ≤ T, "arrived" = arrival time < T:

- throughput_tok_s = Σ_completed (prompt + output tokens) / T        (the papers' throughput)
- offered_tok_s    = Σ_arrived (prompt + expected output tokens) / T (offered load; the expected output is
  the request's max_tokens, which the twin always generates in full)
- expected_offered_tok_s = total rate × expected tokens per request (the calibration runs' "ideal throughput")
- served_fraction  = throughput / offered;   starved ⇔ throughput < 0.9 × offered (only for runs that start)
- oom              ⇔ KV tokens < max_model_len or a measured OOM (then nothing is simulated)
- TTFT = first-token time − arrival; ttft_mean_s, ttft_completed_p50_s / _p99_s (what a benchmark client
  reports: it times the requests that succeed) and ITL mean = Σ (finish − first token) / Σ (output − 1) are
  over completed requests; ITL p50/p99 from the step-duration histogram weighted by decode tokens (exact
  between preemptions)
- **TTFT percentiles (ttft_p50_s, ttft_p95_s, ttft_p99_s) are censored honestly**: they are taken over *every*
  request that arrived in the window, and a request with no first token by T (still waiting, or its first
  token comes in a step that ends after T) counts with TTFT = T − arrival, a lower bound of its true TTFT.
  So a GPU whose queue grows can never look good: its waiting requests push the tail up, where a
  completed-only percentile would hide them.
- **TPOT** of a request (time per output token) = (last-token time − first-token time) / (output tokens − 1)
  for a completed request with ≥ 2 output tokens (the last token is the finish time). A request that has its
  first token by T but is not finished counts with the TPOT observed so far, (T − first token) /
  max(tokens generated − 1, 1), so a request stalled after its first token (preempted, waiting again) also
  counts. tpot_p50_s, tpot_p95_s, tpot_p99_s are percentiles over these requests (NaN if there are none).
- waiting_end = requests waiting (not running) at T; **queue trend** from the backlog b(t) = arrived by t −
  completed by t (requests inside the server) at T/2 and T: "growing" ⇔ b(T) − b(T/2) > max(5,
  3·√max(b(T/2), 1), 0.01 × arrivals in [T/2, T)), else "stable" (a stable queue fluctuates by ~√b).
- per adapter: served fraction (its completed tokens / its offered tokens), mean TTFT (completed), censored
  TTFT p99 and TPOT p99 (as above, over the adapter's requests).
- the **criterion** (:class:`twin.spec.Slo`): ``meets`` ⇔ not OOM, served fraction ≥ min_served_fraction and,
  under ``criterion: slo``, every latency bound in force met (a percentile that cannot be computed — no
  request — is not a violation). Under ``paper`` with 0.9 it is exactly "neither starved nor OOM".

:func:`smape_paper` and :func:`smape` are the two SMAPE forms of mission.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from numba import njit

from twin._numba import core as _core
from twin.spec import Slo

STARVED_FRACTION = 0.9
QUEUE_TRENDS = ("stable", "growing")


def smape_paper(actual: Any, predicted: Any) -> float:
    """SMAPE as the papers report it: 100 · mean(|a − b| / (|a| + |b|)) (0 where both are 0; NaN for no
    rows)."""
    a = np.asarray(actual, dtype=np.float64)
    b = np.asarray(predicted, dtype=np.float64)
    if a.size == 0:
        return float("nan")
    den = np.abs(a) + np.abs(b)
    ratio = np.divide(np.abs(a - b), den, out=np.zeros(np.broadcast(a, b).shape), where=den > 0)
    return float(100.0 * ratio.mean())


def smape_symmetric(actual: Any, predicted: Any) -> float:
    """The usual symmetric MAPE: 100 · mean(2|a − b| / (|a| + |b|)) = 2 × :func:`smape_paper`."""
    return 2.0 * smape_paper(actual, predicted)


def is_starved(throughput_tok_s: float, offered_tok_s: float) -> bool:
    """Starved ⇔ throughput < 0.9 × offered load."""
    return bool(throughput_tok_s < STARVED_FRACTION * offered_tok_s)


def _none_if_nan(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True, eq=False)
class SimResult:
    """The outcome of one simulated run of one GPU (see the module docstring for each formula)."""

    throughput_tok_s: float
    offered_tok_s: float
    expected_offered_tok_s: float
    served_fraction: float
    starved: bool
    oom: bool
    completed: int
    arrived: int
    running_end: int
    waiting_end: int
    throughput_out_tok_s: float
    ttft_mean_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    itl_mean_s: float
    itl_p50_s: float
    itl_p99_s: float
    preemptions: int
    gpu_loads: int
    disk_loads: int
    steps: int
    busy_fraction: float
    kv_cache_tokens: float | None
    max_loras: int
    max_cpu_loras: int
    max_lora_rank: int
    duration_s: float
    seed: int | None
    wall_s: float
    adapter_ids: tuple[str, ...] = ()
    adapter_served_fraction: np.ndarray = field(default_factory=lambda: np.empty(0))
    adapter_ttft_mean_s: np.ndarray = field(default_factory=lambda: np.empty(0))
    adapter_completed: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    adapter_arrived: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    timeseries: dict[str, np.ndarray] | None = None
    dropped: int = 0  # refused by a client at its connection limit (see simulate's max_inflight)
    profile: str = ""  # the (model@gpu) profile that produced this result
    profile_version: str = ""
    profile_calibrated: bool = True  # False: a datasheet profile, not fitted to real runs
    ttft_p95_s: float = math.nan
    tpot_p50_s: float = math.nan
    tpot_p95_s: float = math.nan
    tpot_p99_s: float = math.nan
    queue_trend: str = "stable"
    adapter_ttft_p99_s: np.ndarray = field(default_factory=lambda: np.empty(0))
    adapter_tpot_p99_s: np.ndarray = field(default_factory=lambda: np.empty(0))
    slo: Slo = field(default_factory=Slo)  # the criterion this run is judged by (``criterion``, ``meets``)
    #: the window's fraction spent in forward passes (GPU time, no scheduler time: twin.replicas)
    forward_fraction: float = 0.0
    scrapes: int = 0  # metrics scrapes that stalled the frontend (profile's metrics_scrape_interval_s > 0)
    scrape_stall_s: float = 0.0  # their total duration
    scrape_series_mean: float = 0.0  # label sets the LoRA gauge held at a scrape, mean over scrapes
    scrape_names_mean: float = 0.0  # adapter names those label sets list, mean over scrapes
    #: TTFT percentiles over the requests completed by T only — what a benchmark client reports (it times
    #: the requests that succeed): the twin-vs-real comparison uses these, the SLO the censored ones.
    ttft_completed_p50_s: float = math.nan
    ttft_completed_p99_s: float = math.nan

    def slo_failures(self, slo: Slo | None = None) -> list[str]:
        """Why this run fails the criterion (``slo`` or the run's own), one phrase per violated bound, each
        with the measured value, the bound and by how much it is exceeded; [] when it meets it."""
        slo = self.slo if slo is None else slo
        if self.oom:
            return ["memory error (the server cannot start)"]
        out = []
        served = self.served_fraction
        if math.isfinite(served) and served < slo.min_served_fraction:
            out.append(f"served fraction {served:.3f} < {slo.min_served_fraction:g}")
        for key, metric, bound in slo.limits():
            value = float(getattr(self, metric))
            if math.isfinite(value) and value > bound:
                what, pct = key.split("_")[:2]
                shown = (f"{value:.3g} s > {bound:g} s" if key.endswith("_s")
                         else f"{value * 1e3:.3g} ms > {bound * 1e3:g} ms")
                out.append(f"{what.upper()} {pct} {shown} (×{value / bound:.2f})")
        return out

    def meets(self, slo: Slo | None = None) -> bool:
        """The criterion met (see the module docstring); ``slo`` None = the one the run was judged by."""
        return not self.slo_failures(slo)

    @property
    def unfinished(self) -> int:
        """Arrived requests not completed inside the window (running, waiting or dropped)."""
        return self.arrived - self.completed

    def to_dict(self, *, per_adapter: bool = True) -> dict[str, Any]:
        """JSON-ready fields (NaN → None); per-adapter metrics as a list under ``adapters``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.startswith("adapter_") or f.name == "timeseries":
                continue
            out[f.name] = _none_if_nan(v) if isinstance(v, float) else v
        out["unfinished"] = self.unfinished
        out.pop("slo", None)
        out["slo"] = self.slo.to_dict()
        out["criterion"] = self.slo.describe()
        failures = self.slo_failures()
        out["meets_criterion"] = not failures
        out["criterion_failures"] = failures
        if per_adapter:
            def at(a: np.ndarray, i: int) -> float | None:
                return _none_if_nan(float(a[i])) if i < a.shape[0] else None

            out["adapters"] = [
                {"id": a, "arrived": int(self.adapter_arrived[i]),
                 "completed": int(self.adapter_completed[i]),
                 "served_fraction": _none_if_nan(float(self.adapter_served_fraction[i])),
                 "ttft_mean_s": _none_if_nan(float(self.adapter_ttft_mean_s[i])),
                 "ttft_p99_s": at(self.adapter_ttft_p99_s, i), "tpot_p99_s": at(self.adapter_tpot_p99_s, i)}
                for i, a in enumerate(self.adapter_ids)
            ]
        if self.timeseries is not None:
            out["timeseries"] = {k: v.tolist() for k, v in self.timeseries.items()}
        return out


def itl_percentile(hist: np.ndarray, q: float) -> float:
    """The q-quantile (0–1) of the weighted step-duration histogram (geometric bin centre), NaN if empty."""
    total = hist.sum()
    if total <= 0:
        return math.nan
    k = int(np.searchsorted(np.cumsum(hist), q * total, side="left"))
    width = (_core.ITL_HI - _core.ITL_LO) / _core.ITL_BINS
    return float(10 ** (_core.ITL_LO + (k + 0.5) * width))


@njit(cache=True)
def _sums(arrival_s, adapter, input_tokens, output_tokens, first_token_s, finish_s, T, n_adapters):
    """One pass over the requests: totals, the TTFTs of completed requests and per-adapter sums."""
    n = arrival_s.shape[0]
    tot = np.zeros(6)   # completed tokens, arrived tokens, completed output tokens, ITL time, ITL count, TTFT
    ad = np.zeros((5, n_adapters))  # arrived tokens, completed tokens, completed, TTFT sum, arrived
    ttft = np.empty(n)
    k = 0
    for i in range(n):
        if arrival_s[i] >= T:
            continue
        a = adapter[i]
        tokens = input_tokens[i] + output_tokens[i]
        tot[1] += tokens
        ad[0, a] += tokens
        ad[4, a] += 1
        if finish_s[i] <= T:
            x = first_token_s[i] - arrival_s[i]
            ttft[k] = x
            k += 1
            tot[0] += tokens
            tot[2] += output_tokens[i]
            tot[5] += x
            if output_tokens[i] > 1:
                tot[3] += finish_s[i] - first_token_s[i]
                tot[4] += output_tokens[i] - 1
            ad[1, a] += tokens
            ad[2, a] += 1
            ad[3, a] += x
    return tot, ad, ttft[:k]


def request_metrics(arrival_s: np.ndarray, adapter: np.ndarray, input_tokens: np.ndarray,
                    output_tokens: np.ndarray, first_token_s: np.ndarray, finish_s: np.ndarray,
                    duration_s: float, n_adapters: int, generated: np.ndarray | None = None
                    ) -> dict[str, Any]:
    """Window metrics from per-request outcomes (inf = never happened); formulas in the module docstring.

    ``generated``: output tokens generated per request by the end of the run (for the TPOT of unfinished
    requests; None: 1 token for a request with a first token, i.e. its time since the first token).
    """
    T = float(duration_s)
    tot, ad, ttft = _sums(arrival_s, adapter, input_tokens, output_tokens, first_token_s, finish_s, T,
                          int(n_adapters))
    thr = float(tot[0]) / T
    offered = float(tot[1]) / T
    completed = int(ttft.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        ad_frac = ad[1] / ad[0]
        ad_ttft_mean = ad[3] / ad[2]
    gen = generated if generated is not None else np.where(np.isfinite(first_token_s), 1, 0)
    lat = latency_metrics(arrival_s, adapter, output_tokens, first_token_s, finish_s, gen, T,
                          int(n_adapters))
    return {
        "throughput_tok_s": thr,
        "offered_tok_s": offered,
        "throughput_out_tok_s": float(tot[2]) / T,
        "served_fraction": thr / offered if offered > 0 else math.nan,
        "starved": is_starved(thr, offered),
        "completed": completed,
        "arrived": int(ad[4].sum()),
        "ttft_mean_s": float(tot[5]) / completed if completed else math.nan,
        "itl_mean_s": float(tot[3]) / float(tot[4]) if tot[4] > 0 else math.nan,
        "adapter_served_fraction": ad_frac,
        "adapter_ttft_mean_s": ad_ttft_mean,
        "adapter_completed": ad[2].astype(np.int64),
        "adapter_arrived": ad[4].astype(np.int64),
        **lat,
    }


def _percentiles(x: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    return [float(v) for v in np.percentile(x, qs)] if x.size else [math.nan] * len(qs)


def _per_group_p99(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """The 99th percentile of ``values`` within each group (NaN for an empty group), linear interpolation as
    :func:`numpy.percentile`."""
    out = np.full(n_groups, math.nan)
    if values.size == 0:
        return out
    order = np.lexsort((values, group))
    v, g = values[order], group[order]
    starts = np.searchsorted(g, np.arange(n_groups), side="left")
    ends = np.searchsorted(g, np.arange(n_groups), side="right")
    for a in np.flatnonzero(ends > starts):
        seg = v[starts[a]:ends[a]]
        out[a] = float(np.percentile(seg, 99)) if seg.size > 1 else float(seg[0])
    return out


def queue_trend(arrival_s: np.ndarray, finish_s: np.ndarray, duration_s: float) -> str:
    """"growing" or "stable": the backlog (arrived − completed) at T/2 against T (module docstring)."""
    T = float(duration_s)
    half = T / 2
    arr_half = int(np.searchsorted(arrival_s, half, side="right"))  # arrival_s is sorted
    arr_end = int(np.searchsorted(arrival_s, T, side="left"))
    b_half = arr_half - int((finish_s <= half).sum())
    b_end = arr_end - int((finish_s <= T).sum())
    slack = max(5.0, 3.0 * math.sqrt(max(b_half, 1)), 0.01 * (arr_end - arr_half))
    return "growing" if b_end - b_half > slack else "stable"


def latency_metrics(arrival_s: np.ndarray, adapter: np.ndarray, output_tokens: np.ndarray,
                    first_token_s: np.ndarray, finish_s: np.ndarray, generated: np.ndarray, duration_s: float,
                    n_adapters: int) -> dict[str, Any]:
    """Censored TTFT and TPOT percentiles, per GPU and per adapter, and the queue trend (module docstring).

    Arrays are per request (inf = never happened); ``generated`` = output tokens generated by the end of the
    run. Requests arriving at or after T are ignored.
    """
    T = float(duration_s)
    keep = arrival_s < T
    arr, adp = arrival_s[keep], adapter[keep]
    first, fin = first_token_s[keep], finish_s[keep]
    out_tok, gen = output_tokens[keep], generated[keep]
    ttft = np.minimum(first, T) - arr                      # censored at the window's end
    done = (fin <= T) & (out_tok > 1)
    started = (first <= T) & ~(fin <= T)                   # first token by T, not finished
    tpot = np.empty(arr.shape[0])
    tpot[done] = (fin[done] - first[done]) / (out_tok[done] - 1)
    tpot[started] = (T - first[started]) / np.maximum(gen[started] - 1, 1)
    has_tpot = done | started
    t50, t95, t99 = _percentiles(ttft, (50, 95, 99))
    c50, c99 = _percentiles(ttft[fin <= T], (50, 99))
    p50, p95, p99 = _percentiles(tpot[has_tpot], (50, 95, 99))
    return {
        "ttft_p50_s": t50, "ttft_p95_s": t95, "ttft_p99_s": t99,
        "ttft_completed_p50_s": c50, "ttft_completed_p99_s": c99,
        "tpot_p50_s": p50, "tpot_p95_s": p95, "tpot_p99_s": p99,
        "queue_trend": queue_trend(arrival_s, finish_s, T),
        "adapter_ttft_p99_s": _per_group_p99(ttft, adp, n_adapters),
        "adapter_tpot_p99_s": _per_group_p99(tpot[has_tpot], adp[has_tpot], n_adapters),
    }


def timeseries_dict(ts: np.ndarray, kv_blocks: int, block_size: int, dt: float,
                    duration_s: float | None = None) -> dict[str, np.ndarray]:
    """Sampled state every ``dt`` seconds: running, waiting, KV use (fraction), throughput of the last dt.

    The engine stops sampling when its last request is done (the lines would end before the window does):
    with ``duration_s`` the series is padded to the whole window, and any sample the engine did not record
    (NaN) is filled with what an idle server has (0 running, 0 waiting, KV use and completed tokens carried
    forward), so every series is complete and finite.
    """
    if duration_s is not None and dt > 0:
        full = int(np.ceil(duration_s / dt - 1e-9))
        if ts.shape[0] < full:
            ts = np.vstack([ts, np.full((full - ts.shape[0], ts.shape[1]), np.nan)])
    n = ts.shape[0]
    idle = np.isnan(ts[:, 1])
    last = np.maximum.accumulate(np.where(idle, -1, np.arange(n)))  # the last recorded sample (-1: none yet)

    def carried(col: int) -> np.ndarray:
        return np.where(last >= 0, ts[np.maximum(last, 0), col], 0.0)

    done = carried(4)
    thr = np.diff(np.concatenate(([0.0], done))) / dt
    used = carried(3)
    return {
        "t_s": np.arange(n, dtype=np.float64) * dt,
        "running": np.where(idle, 0, np.nan_to_num(ts[:, 1])).astype(np.int64),
        "waiting": np.where(idle, 0, np.nan_to_num(ts[:, 2])).astype(np.int64),
        "kv_usage": used / kv_blocks if kv_blocks > 0 else used * 0.0,
        "throughput_tok_s": thr,
    }
