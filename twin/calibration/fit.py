"""Fit a twin :class:`~twin.profile.Profile` to measured runs (real vLLM, or ``placer twin collect`` records).

Two independent parts, both deterministic for a seed:

1. **Memory model** (:func:`fit_memory`). vLLM's KV-cache size at start-up, per (``max_loras`` = slots,
   ``max_lora_rank``), is fitted by least squares as ``kv = base − a·slots·rank − b·slots`` (a, b ≥ 0) on the
   measured entries, and the measured table itself (including "server failed to start" entries) is kept in the
   profile: measured points are reproduced exactly, unmeasured ones use the line. A configuration is a memory
   error when the KV cache is below ``max_model_len`` tokens or the table says the server did not start
   (:func:`memory_error`).

2. **Step-time model** (:func:`fit_step`), in two stages:

   a. *Analytic pre-fit* (:func:`prefit_step`, instantaneous). Every measured run gives a steady-state
      relation between its mean step time and its mean state. The step time is the run's *effective* one
      (:func:`effective_step_ms`: mean running requests / output tokens per ms — each running request
      decodes one token per step), which is what its throughput sees; the clients' mean ITL overstates it by
      up to 16 % at moderate loads on dt_real (it is used only where the token count is missing):
      step ≈ step_model(S = B̄, P̄ = prefill tokens per step = input-token rate × step, C̄ = B̄ · mean
      context, Ā = expected distinct adapters among B̄ running requests (capped at max_loras),
      R = max_lora_rank). ``scipy.optimize.least_squares`` fits the StepModel's forward parameters (base,
      per sequence, per prefill token, LoRA factor per distinct adapter, additive LoRA weight read per
      adapter × R) to log(step), saturated runs weighted 3×; the per-prompt-token cost is pinned from the
      TTFT of lightly loaded runs (:func:`prefill_cost_from_ttft`). The per-waiting-request scheduler
      term is left at zero: the real client capped the waiting queue at ~25 k requests (it ran out
      of connections) while the twin's queue is unbounded, so a per-waiting cost learnt from the real runs
      would be extrapolated far out of range.

   b. *Simulation refinement* (:func:`refine_step`). Multipliers on the pre-fitted parameters — an overall
      step-time scale and a scale of the LoRA terms (and, with ``refine_batch``, of the per-sequence term) —
      are searched by bounded 1-D minimisations in turn (scale, LoRA scale, [batch scale,] scale; fixed seed,
      common random numbers, ≤ 20 evaluations) to minimise, over a
      fixed subsample of 16 runs re-simulated in the twin,

          J = mean_runs |log(thr_twin / thr_real)|  +  w_itl · median_runs |log(itl_twin / itl_real)|
          + w_tail · median over SLO-regime runs and {p99 TTFT, p99 ITL} |log(twin / real)|

      (w_itl = 0.05; w_tail = 0 by default, W_TAIL = 0.05 for a latency-aware refit: the latency terms only
      break ties; throughput accuracy is the objective).
      Unstarved runs are insensitive to the step time (their throughput is the offered load), so the
      subsample is weighted towards starved and near-saturated runs.

The re-simulation of a run is a callable ``rerun(run, profile, seed, window_s) -> Outcome`` so that the fit
does not depend on how the twin is invoked; :func:`twin.calibration.runs.rerun` is the default.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from twin.calibration.memfit import (
    KVRow,
    fit_memory,
    kv_rows_from_runs,
    kv_tokens,
    load_kv_table,
    memory_error,
    oom_accuracy,
)
from twin.calibration.replay import DEFAULT_CLIENT_CAP, METRICS_POLL_PAUSE_S, Outcome, Rerun, capped
from twin.calibration.runs import RunRecord
from twin.errors import InputError
from twin.profile import SCRAPE_FIELDS, Profile, StepModel

__all__ = [
    "CalibrationResult", "FitLog", "KVRow", "Outcome", "Rerun", "calibrate", "effective_step_ms",
    "fit_memory", "fit_output_exponent", "fit_output_scale", "fit_profile", "kv_per_running_request",
    "kv_rows_from_runs", "kv_tokens", "load_kv_table", "memory_error", "objective", "oom_accuracy",
    "prefit_step", "refine_step", "scaled_step", "select_runs", "step_ms",
]

MEAN_CONTEXT_TOKENS = 420.0  # time-averaged context of a decoding ShareGPT request (prompt + half the output)
W_ITL = 0.05
#: Weight of the tail-latency term (p99 TTFT and p99 ITL of the sample's runs in the SLO regime, real p99
#: TTFT ≤ 10 s): like the ITL term it only moves the fit where throughput is indifferent.
W_TAIL = 0.05
SLO_P99_TTFT_MS = 10_000.0


# --------------------------------------------------------------------------------------------- step: stage a
def expected_distinct(rates: np.ndarray, n_running: float, max_loras: int) -> float:
    """Expected distinct adapters among ``n_running`` requests drawn by rate, capped at max_loras."""
    p = rates / rates.sum()
    return float(min(max_loras, np.sum(1.0 - np.exp(-n_running * p))))


def _rates(r: RunRecord) -> np.ndarray:
    return np.repeat([v for v, _ in r.rates], [c for _, c in r.rates])


def effective_step_ms(r: RunRecord) -> float:
    """The run's mean step time as its throughput sees it: mean running requests / output tokens per ms
    (each running request decodes one token per step). NaN without a token count."""
    if not (math.isfinite(r.tokens_out) and r.tokens_out > 0 and math.isfinite(r.duration_s)):
        return math.nan
    return r.mean_running * 1000.0 * r.duration_s / r.tokens_out


def _state(runs: Sequence[RunRecord], target: str = "step") -> dict[str, np.ndarray]:
    """The runs' mean state and the step time the pre-fit targets: ``target`` "step" =
    :func:`effective_step_ms` (the mean ITL where it is missing), "itl" = the runs' mean inter-token
    latency."""
    ok = [r for r in runs if not r.oom and math.isfinite(r.mean_itl_ms) and math.isfinite(r.mean_running)]
    B = np.array([r.mean_running for r in ok])
    step = np.array([r.mean_itl_ms for r in ok])
    if target == "step":
        eff = np.array([effective_step_ms(r) for r in ok])
        step = np.where(np.isfinite(eff) & (eff > 0), eff, step)
    tin = np.array([r.tokens_in / r.duration_s if math.isfinite(r.tokens_in) else
                    r.throughput_total * 0.53 for r in ok])
    A = np.array([expected_distinct(_rates(r), b, r.max_loras) for r, b in zip(ok, B, strict=True)])
    R = np.array([float(r.max_lora_rank) for r in ok])
    return {"B": B, "step": step, "P": tin * step / 1000.0, "A": A, "R": R, "C": B * MEAN_CONTEXT_TOKENS}


def step_ms(step: StepModel, B: Any, P: Any, C: Any, A: Any, R: Any, W: Any = 0.0) -> Any:
    """The StepModel's step time (ms) for batch aggregates, without adapter loads (see twin.profile)."""
    fwd = (step.base_ms + step.per_seq_ms * B + step.per_prefill_token_ms * P
           + step.per_ctx_ktoken_ms * C / 1000)
    lora = 1.0 + step.lora_per_adapter * A + step.lora_per_rank * R * (np.asarray(A) > 0)
    return (fwd * lora + step.lora_ms_per_adapter_rank * np.asarray(A) * R
            + step.lora_ms_per_adapter_sq * np.asarray(A) ** 2 + step.sched_base_ms
            + step.sched_per_running_ms * B + step.sched_per_waiting_ms * W)


#: The forward parameters the pre-fit estimates. The rank cost is the additive LoRA weight read
#: (``lora_ms_per_adapter_rank``·A·R); ``lora_per_rank`` (a rank factor on the whole forward) is set to 0:
#: fitted that way on dt_real it turned into a free scale between the low-load and the saturated regime, and
#: its value moved 4× between leave-one-workload-out folds (Qwen 0.0030–0.0121), where the additive term
#: moves 1.3× (0.0065–0.0087 ms; bench/results/twin_fidelity_summary_2026-11-23.md).
PREFIT_PARAMS = ("base_ms", "per_seq_ms", "per_prefill_token_ms", "lora_per_adapter",
                 "lora_ms_per_adapter_rank")
_PREFIT_SCALE = np.array([10.0, 0.05, 0.01, 0.01, 0.001])
#: The optional A² term (``adapter_sq``) and its scale in the pre-fit.
ADAPTER_SQ = "lora_ms_per_adapter_sq"
_ADAPTER_SQ_SCALE = 0.001


def _rounded(step: StepModel) -> dict[str, Any]:
    """The pre-fitted parameters rounded to 6 significant digits (what a profile file stores)."""
    return {k: float(f"{getattr(step, k):.6g}") for k in (*PREFIT_PARAMS, ADAPTER_SQ)}


def prefill_cost_from_ttft(runs: Sequence[RunRecord], mean_prompt: float = 222.7) -> float | None:
    """Per-prompt-token cost (ms) from lightly loaded runs: TTFT ≈ ½ step wait + one step + prompt·cost.

    Uses runs with fewer than 8 running and no waiting requests on average (median over them); None when there
    are fewer than 3 such runs.
    """
    xs = [(r.mean_ttft_ms - 1.5 * r.mean_itl_ms) / mean_prompt for r in runs
          if not r.oom and r.mean_running < 8 and r.mean_waiting < 0.01
          and math.isfinite(r.mean_ttft_ms) and math.isfinite(r.mean_itl_ms)]
    return float(np.median(xs)) if len(xs) >= 3 else None


def prefill_cost_from_ttft_spread(runs: Sequence[RunRecord], model: str) -> float | None:
    """Per-prompt-token cost (ms) from the TTFT spread of lightly loaded runs with ≤ 16 adapters:
    (p99 − median TTFT) / (p99 − median prompt length of the ShareGPT law). At light load a request's TTFT
    is about one prefill step of its own prompt, so the spread isolates the per-token cost from everything
    a request's first token waits for whatever its length (the step's fixed cost, the client and frontend
    path), which the mean-based :func:`prefill_cost_from_ttft` charges to the prompt tokens. Runs with more
    adapters are left out: their p99 holds the metrics scraper's stalls. None with fewer than 3 such runs.
    """
    from twin.lengths import _sharegpt_tables

    cdf_in, _ = _sharegpt_tables(model)
    spread_tokens = float(np.searchsorted(cdf_in, 0.99) - np.searchsorted(cdf_in, 0.5))
    xs = [(r.p99_ttft_ms - r.median_ttft_ms) / spread_tokens for r in runs
          if not r.oom and r.n_adapters <= 16 and r.mean_running < 8 and r.mean_waiting < 0.01
          and math.isfinite(r.p99_ttft_ms) and math.isfinite(r.median_ttft_ms)]
    return float(np.median(xs)) if len(xs) >= 3 else None


def prefit_step(runs: Sequence[RunRecord], base: StepModel, adapter_sq: bool = False,
                prefill_from_spread: bool = False) -> tuple[StepModel, float]:
    """Stage a: least-squares fit of the forward parameters to the runs' step times -> (step, rms log error).

    The per-prefill-token cost is pinned by :func:`prefill_cost_from_ttft` when possible (the ITL relation
    alone cannot separate it from the per-sequence cost: both grow with the load); runs with more than 150
    running requests (the saturated regime that decides throughput) weigh 3×. ``adapter_sq`` also fits the
    A² term (``lora_ms_per_adapter_sq``); otherwise it is 0. ``prefill_from_spread`` pins the per-token
    cost by :func:`prefill_cost_from_ttft_spread` instead.
    """
    from scipy.optimize import least_squares

    s = _state(runs)
    names = PREFIT_PARAMS + ((ADAPTER_SQ,) if adapter_sq else ())
    scales = np.append(_PREFIT_SCALE, [_ADAPTER_SQ_SCALE] if adapter_sq else [])
    if len(s["B"]) < len(names) + 1:
        return base, math.nan
    pinned = (prefill_cost_from_ttft_spread(runs, runs[0].model) if prefill_from_spread and runs
              else prefill_cost_from_ttft(runs))
    free = np.array([not (k == "per_prefill_token_ms" and pinned is not None) for k in names])
    x_all = np.ones(len(names))  # a fixed start (10 ms, 0.05, 0.01, 0.01, 0.001[, 0.001]): reproducible
    if pinned is not None:
        x_all[2] = pinned / _PREFIT_SCALE[2]
    weight = np.where(s["B"] > 150, 3.0, 1.0)

    def model(x: np.ndarray) -> StepModel:
        full = x_all.copy()
        full[free] = x
        params: dict[str, Any] = {ADAPTER_SQ: 0.0}
        params.update({k: float(v) for k, v in zip(names, full * scales, strict=True)})
        return replace(base, sched_per_waiting_ms=0.0, lora_per_rank=0.0, **params)

    def resid(x: np.ndarray) -> np.ndarray:
        pred = step_ms(model(x), s["B"], s["P"], s["C"], s["A"], s["R"])
        return weight * np.log(np.maximum(pred, 1e-6) / s["step"])

    sol = least_squares(resid, np.clip(x_all[free], 0, 100), bounds=(0.0, 100.0))
    fitted = model(sol.x)
    rounded = replace(fitted, **_rounded(fitted))
    return rounded, float(np.sqrt(np.mean((sol.fun / weight) ** 2)))


def fit_output_scale(runs: Sequence[RunRecord], model: str) -> float:
    """The EOS shortfall (:attr:`twin.profile.Profile.output_scale`): median over unsaturated runs (mean
    waiting < 1, ≥ 100 completed requests) of generated output tokens per completed request divided by the
    ShareGPT law's reference output mean for ``model``; 1.0 when fewer than 3 runs qualify.

    The real "offered load" of the calibration runs counts these generated tokens (ideal throughput =
    arrivals × tokens per completed request), so the twin's offered load must count them too.
    """
    from twin.lengths import sharegpt_output_mean

    ref = sharegpt_output_mean(model)
    xs = [r.tokens_out / r.completed / ref for r in runs
          if not r.oom and r.completed >= 100 and r.mean_waiting < 1.0 and math.isfinite(r.tokens_out)]
    return round(float(np.median(xs)), 4) if len(xs) >= 3 else 1.0


def _kv_held(inp: np.ndarray, out: np.ndarray, block_size: int) -> float:
    p, o = inp.astype(np.float64), out.astype(np.float64)
    return float((p * o).sum() / o.sum() + (o * o).sum() / (2 * o.sum()) + block_size / 2)


def kv_per_running_request(profile: Profile, *, n: int = 200_000, seed: int = 0) -> float:
    """KV-cache tokens a decoding ShareGPT request holds on average over its decode steps, under the
    profile's generated lengths: E[p·o]/E[o] + E[o²]/(2·E[o]) + half a KV block (allocation granularity)."""
    from twin.lengths import sample_lengths
    from twin.spec import Lengths

    inp, out, _ = sample_lengths(np.random.default_rng(seed), n, Lengths(), profile.model,
                                 profile.output_scale, profile.output_exponent)
    return _kv_held(inp, out, profile.memory.block_size)


def fit_output_exponent(runs: Sequence[RunRecord], profile: Profile) -> float:
    """The EOS shortfall's shape (:attr:`twin.profile.Profile.output_exponent`): the exponent whose generated
    lengths hold, per running request, the KV cache measured on unsaturated runs (mean waiting < 1, more
    than 5 running; median of mean KV use × KV capacity / mean running). Bisection in [0.2, 1]; 1.0 when
    fewer than 3 runs qualify or the reference lengths already hold no more than measured.
    """
    from twin.engine import kv_capacity_tokens

    xs = []
    for r in runs:
        kv = None if r.oom else kv_capacity_tokens(profile, r.max_loras, r.max_lora_rank)
        if (kv is not None and r.mean_waiting < 1.0 and r.mean_running > 5 and math.isfinite(r.mean_kv_usage)
                and r.mean_kv_usage > 0):
            xs.append(r.mean_kv_usage * kv / r.mean_running)
    if len(xs) < 3:
        return 1.0
    target = float(np.median(xs))
    from twin.lengths import generated_outputs, sample_lengths
    from twin.spec import Lengths

    # one reference sample (the draws of kv_per_running_request), reshaped for every exponent tried
    inp, ref, _ = sample_lengths(np.random.default_rng(0), 200_000, Lengths(), profile.model)

    def held(g: float) -> float:
        out = generated_outputs(ref, profile.model, profile.output_scale, g)
        return _kv_held(inp, out, profile.memory.block_size)

    if held(1.0) <= target:
        return 1.0
    lo, hi = 0.2, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if held(mid) < target else (lo, mid)
    return round((lo + hi) / 2, 4)


def scaled_step(step: StepModel, scale: float, lora_scale: float, batch_scale: float = 1.0) -> StepModel:
    """The step model with every forward term × ``scale``, the LoRA terms × ``lora_scale`` and the
    per-sequence term × ``batch_scale`` too."""
    return replace(step, base_ms=step.base_ms * scale, per_seq_ms=step.per_seq_ms * scale * batch_scale,
                   per_prefill_token_ms=step.per_prefill_token_ms * scale,
                   per_ctx_ktoken_ms=step.per_ctx_ktoken_ms * scale,
                   lora_per_adapter=step.lora_per_adapter * lora_scale,
                   lora_per_rank=step.lora_per_rank * lora_scale,
                   lora_ms_per_adapter_rank=step.lora_ms_per_adapter_rank * lora_scale,
                   lora_ms_per_adapter_sq=step.lora_ms_per_adapter_sq * lora_scale)


def select_runs(runs: Sequence[RunRecord], n: int, seed: int) -> list[RunRecord]:
    """A fixed subsample for the inner loop: starved and near-saturated runs first, then a few others."""
    ok = [r for r in runs if not r.oom and math.isfinite(r.throughput_total)]
    rng = np.random.default_rng(seed)
    hot = [r for r in ok if r.starved or r.throughput_total < 0.985 * r.ideal_throughput]
    cold = [r for r in ok if r not in hot]
    k_hot = min(len(hot), max(1, int(round(0.8 * n))))
    pick_hot = [hot[i] for i in sorted(rng.choice(len(hot), k_hot, replace=False))] if hot else []
    k_cold = min(len(cold), n - len(pick_hot))
    pick_cold = [cold[i] for i in sorted(rng.choice(len(cold), k_cold, replace=False))] if k_cold > 0 else []
    return pick_hot + pick_cold


def _log_ratio(pred: float, real: float) -> float | None:
    ok = math.isfinite(pred) and pred > 0 and math.isfinite(real) and real > 0
    return abs(math.log(pred / real)) if ok else None


def objective(outcomes: Sequence[Outcome], runs: Sequence[RunRecord], w_tail: float = 0.0) -> float:
    """J = mean |log(thr_twin/thr_real)| + W_ITL · median |log(itl_twin/itl_real)|
    + w_tail · median over the SLO-regime runs (real p99 TTFT ≤ 10 s) of |log| of the p99 TTFT and p99 ITL
    ratios (see the module doc; 0 reproduces the fits of profiles ≤ v1.2, :data:`W_TAIL` is the weight
    meant for a latency-aware refit)."""
    pairs = list(zip(outcomes, runs, strict=True))
    thr = [abs(math.log(max(o.throughput, 1e-9) / r.throughput_total)) for o, r in pairs]
    itl = [x for o, r in pairs if (x := _log_ratio(o.itl_ms, r.mean_itl_ms)) is not None]
    tail = [x for o, r in pairs if r.p99_ttft_ms <= SLO_P99_TTFT_MS
            for x in (_log_ratio(o.ttft_p99_ms, r.p99_ttft_ms), _log_ratio(o.itl_p99_ms, r.p99_itl_ms))
            if x is not None]
    return float(np.mean(thr) + (W_ITL * float(np.median(itl)) if itl else 0.0)
                 + (w_tail * float(np.median(tail)) if tail and w_tail else 0.0))


@dataclass
class FitLog:
    """What a fit did: evaluations, objective values, timing (for the report)."""

    evaluations: list[dict[str, float]] = field(default_factory=list)
    prefit_rms_log_itl: float = math.nan
    runs_used: int = 0
    wall_s: float = 0.0
    scrape_runs: int = 0  # runs of the scrape-cost fit (0: not fitted)


#: The refinement's coordinate passes: (coordinate: 0 step scale, 1 LoRA scale, 2 per-sequence scale; log
#: bounds; x tolerance).
REFINE_COORDINATES: tuple[tuple[int, float, float, float], ...] = (
    (0, -0.35, 0.35, 0.004), (1, -1.5, 1.0, 0.03), (0, -0.35, 0.35, 0.004))
#: The per-sequence pass ``refine_batch`` adds before the last step-scale pass.
BATCH_PASS: tuple[int, float, float, float] = (2, -1.0, 0.7, 0.03)


def refine_step(profile: Profile, runs: Sequence[RunRecord], rerun: Rerun, *, seed: int = 0,
                n_runs: int = 16, window_s: float | None = None, max_evals: int = 20,
                log: FitLog | None = None, refine_batch: bool = False, w_tail: float = 0.0) -> Profile:
    """Stage b: coordinate search (bounded 1-D minimisations: step scale, LoRA scale, [per-sequence scale,]
    step scale again) of :func:`objective` over a fixed subsample of runs; at most ``max_evals`` objective
    evaluations."""
    from scipy.optimize import minimize_scalar

    sample = select_runs(runs, n_runs, seed)
    if not sample:
        return profile
    log = log if log is not None else FitLog()
    log.runs_used = len(sample)
    cache: dict[tuple[float, float, float], float] = {}

    def f(x: tuple[float, float, float]) -> float:
        key = (round(float(x[0]), 4), round(float(x[1]), 4), round(float(x[2]), 4))
        if key not in cache:
            if len(cache) >= max_evals:
                return math.inf
            prof = profile.replace(step=scaled_step(profile.step, *(math.exp(v) for v in key)))
            outs = [rerun(r, prof, seed, window_s if window_s is not None else r.window_s) for r in sample]
            cache[key] = objective(outs, sample, w_tail)
            log.evaluations.append({"log_scale": key[0], "log_lora_scale": key[1], "log_batch_scale": key[2],
                                    "objective": cache[key]})
        return cache[key]

    coords = REFINE_COORDINATES[:-1] + (BATCH_PASS,) + REFINE_COORDINATES[-1:] if refine_batch \
        else REFINE_COORDINATES
    x = (0.0, 0.0, 0.0)
    budget = max(3, max_evals // len(coords))
    for i, lo, hi, xatol in coords:
        def along(v: float, i: int = i, x: tuple[float, float, float] = x) -> float:
            return f(tuple(v if j == i else x[j] for j in range(3)))  # type: ignore[arg-type]

        minimize_scalar(along, bounds=(lo, hi), method="bounded", options={"maxiter": budget, "xatol": xatol})
        x = min(cache, key=lambda k: cache[k])
    step = scaled_step(profile.step, *(math.exp(v) for v in x))
    return profile.replace(step=replace(step, **_rounded(step)))


# ----------------------------------------------------------------------------------------------- driver
@dataclass
class CalibrationResult:
    """A fitted profile and what the fit measured on its own data."""

    profile: Profile
    oom_correct: int
    oom_total: int
    oom_line_correct: int
    oom_line_total: int
    log: FitLog

    def summary(self) -> dict[str, Any]:
        return {"profile": self.profile.name, "version": self.profile.version,
                "oom_accuracy": f"{self.oom_correct}/{self.oom_total}",
                "oom_accuracy_line_only": f"{self.oom_line_correct}/{self.oom_line_total}",
                "prefit_rms_log_itl": self.log.prefit_rms_log_itl, "runs_in_inner_loop": self.log.runs_used,
                "evaluations": len(self.log.evaluations), "wall_s": round(self.log.wall_s, 1),
                "step": self.profile.step.__dict__}


def measured_scrape_ms(r: RunRecord, pause_s: float = METRICS_POLL_PAUSE_S) -> float:
    """Mean duration (ms) of one metrics scrape in a real run: the poller's sample interval minus its pause;
    NaN without poller samples."""
    if not r.polled:
        return math.nan
    return (r.npy_span_s / (r.npy_samples - 1) - pause_s) * 1000.0


@dataclass
class ScrapeFit:
    """The scrape-cost regression: per run, the twin's mean label sets (and the adapter names they list) at a
    scrape, and the measured ms per scrape."""

    step: StepModel
    series: list[float] = field(default_factory=list)
    names: list[float] = field(default_factory=list)
    measured_ms: list[float] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def predicted_ms(self) -> np.ndarray:
        s = self.step
        return (s.metrics_scrape_base_ms + s.metrics_scrape_us_per_series / 1000.0 * np.asarray(self.series)
                + s.metrics_scrape_us_per_name / 1000.0 * np.asarray(self.names))


def fit_scrape(profile: Profile, runs: Sequence[RunRecord], rerun: Rerun, *, seed: int = 0,
               pause_s: float = METRICS_POLL_PAUSE_S) -> ScrapeFit:
    """Fit the metrics-scrape stall (``StepModel.metrics_scrape_*``) to the runs' measured scrape times.

    Every unstarved ok run with poller samples is simulated once with a scraper of zero cost every
    ``pause_s`` (the label sets the gauge holds do not depend on the stalls' length, up to the few requests a
    stall delays); the stall per scrape, ``base + per_series·series + per_name·names``, is then a
    non-negative least-squares fit in relative error to the measured ms per scrape.
    """
    from scipy.optimize import nnls

    probe = profile.without_scrape_costs().with_scraper(pause_s)
    out = ScrapeFit(step=profile.step)
    for r in runs:
        y = measured_scrape_ms(r, pause_s)
        if r.status != "ok" or r.starved or not (y > 0):
            continue
        o = rerun(r, probe, seed, None)
        if o.scrapes and math.isfinite(o.scrape_series_mean):
            out.series.append(float(o.scrape_series_mean))
            out.names.append(float(o.scrape_names_mean))
            out.measured_ms.append(y)
            out.keys.append(r.key)
    if len(out.series) < 3:
        raise InputError(f"the scrape fit needs ≥ 3 unstarved runs with metrics-poller samples (got "
                         f"{len(out.series)})", field="npy_samples")
    ms = np.asarray(out.measured_ms)
    a = np.column_stack([1.0 / ms, np.asarray(out.series) / ms, np.asarray(out.names) / ms])
    (base_ms, per_series_ms, per_name_ms), _ = nnls(a, np.ones_like(ms))
    out.step = replace(profile.step, metrics_scrape_interval_s=pause_s,
                       metrics_scrape_base_ms=round(float(base_ms), 4),
                       metrics_scrape_us_per_series=round(float(per_series_ms) * 1000.0, 4),
                       metrics_scrape_us_per_name=round(float(per_name_ms) * 1000.0, 4))
    return out


def fit_profile(runs: Sequence[RunRecord], base: Profile, *, kv_rows: Sequence[KVRow] | None = None,
                rerun: Rerun | None = None, seed: int = 0, n_runs: int = 16, window_s: float | None = None,
                max_evals: int = 20, version: str | None = None, fit_output_shape: bool = False,
                refine_batch: bool = False, in_batch_eviction: bool | None = None,
                w_tail: float = 0.0, adapter_sq: bool = False, scrape: bool = False,
                scrape_blocks_tokens: bool | None = None, prefill_from_spread: bool = False
                ) -> CalibrationResult:
    """Fit memory and step models of ``base`` to ``runs`` (one model/GPU). ``rerun=None`` skips stage b.

    ``in_batch_eviction`` True fits the step model with vLLM 0.8.5's slot eviction, which may evict and
    reload adapters of the current batch (:class:`twin.profile.StepModel`; on the scheduler-overhead runs it
    brings the twin's GPU loads per completed request from ×0.45 to ×0.83 of the real ones where slots <
    served adapters, bench/twin_fidelity.md); None keeps the base profile's setting. ``w_tail`` weighs the
    tail-latency term of :func:`objective` (0: the throughput/ITL objective of profiles ≤ v1.2).
    ``adapter_sq`` adds the step model's A² term (``lora_ms_per_adapter_sq``) to the pre-fit; the refinement
    scales it with the other LoRA terms. ``scrape`` then fits the metrics scraper's frontend stalls
    (:func:`fit_scrape`; the pause between scrapes: the base profile's, else the calibration client's
    :data:`METRICS_POLL_PAUSE_S`); ``scrape_blocks_tokens`` sets whether a stall also holds back token
    delivery (None: as the base profile). ``prefill_from_spread`` pins the per-prompt-token cost by the
    light runs' TTFT spread (:func:`prefill_cost_from_ttft_spread`).

    The EOS shortfall's mean (``output_scale``) is always fitted; its shape (``output_exponent``, from the
    KV cache held per running request) only with ``fit_output_shape``: it makes the twin hold the measured
    ~360 KV tokens per running request instead of ~424, but the two-parameter step refinement then no
    longer matches the saturated runs as well (in-sample SMAPE 2.04 % / 1.69 % against 1.57 % / 1.21 %
    for Llama / Qwen on dt_real, 2026-11-22), so it stays off until the step model's batch-size term is
    refined too.
    """
    t0 = time.perf_counter()
    runs = [r for r in runs if r.model == base.model]
    if not runs:
        raise InputError(f"no run records for model {base.model!r}", field="model", value=base.model)
    rows = list(kv_rows) if kv_rows is not None else []
    for row in kv_rows_from_runs(runs):
        if all((row[0], row[1]) != (s, r) for s, r, _ in rows):
            rows.append(row)
    memory = fit_memory(rows, base.memory)
    log = FitLog()
    # The step model is fitted without metrics-scrape stalls (they hold the frontend, not the engine), so a
    # refit from a profile that carries scrape costs gives the same step model as from one that does not;
    # the costs are refitted (``scrape``) or carried over afterwards.
    carried = {k: getattr(base.step, k) for k in SCRAPE_FIELDS}
    base = base.without_scrape_costs()
    evict = base.step.in_batch_eviction if in_batch_eviction is None else in_batch_eviction
    if not (math.isfinite(w_tail) and w_tail >= 0):
        raise InputError(f"must be a finite number ≥ 0 (got {w_tail!r})", field="w_tail", value=w_tail)
    step, rms = prefit_step(runs, replace(base.step, in_batch_eviction=evict), adapter_sq=adapter_sq,
                            prefill_from_spread=prefill_from_spread)
    log.prefit_rms_log_itl = rms
    prof = base.replace(memory=memory, step=step, output_scale=fit_output_scale(runs, base.model))
    if fit_output_shape:
        prof = prof.replace(output_exponent=fit_output_exponent(runs, prof))
    if rerun is not None:
        prof = refine_step(prof, runs, rerun, seed=seed, n_runs=n_runs, window_s=window_s,
                           max_evals=max_evals, log=log, refine_batch=refine_batch, w_tail=w_tail)
    prof = prof.replace(step=replace(prof.step, **carried))
    if scrape_blocks_tokens is not None:
        prof = prof.replace(step=replace(prof.step, metrics_scrape_blocks_tokens=bool(scrape_blocks_tokens)))
    if scrape:
        sf = fit_scrape(prof, runs, rerun if rerun is not None else capped(None), seed=seed,
                        pause_s=prof.step.metrics_scrape_interval_s or METRICS_POLL_PAUSE_S)
        # The costs are kept; the scraper itself stays as in the base profile (shipped profiles: none, so
        # planning assumes no scraper; the replay of a calibration run adds the client's poller).
        prof = prof.replace(step=replace(sf.step,
                                         metrics_scrape_interval_s=prof.step.metrics_scrape_interval_s))
        log.scrape_runs = len(sf.series)
    log.wall_s = time.perf_counter() - t0
    checks = rows + [(r.max_loras, r.max_lora_rank, None if r.oom else 10**9) for r in runs]
    ok, total = oom_accuracy(prof, checks)
    line_ok, line_total = oom_accuracy(prof, rows, use_table=False)
    prof = prof.replace(calibrated=True, version=version or f"fit-{time.strftime('%Y%m%d')}-seed{seed}",
                        notes=f"Fitted by twin.calibration.fit on {len(runs)} runs "
                              f"({sum(r.oom for r in runs)} OOM) and {len(rows)} KV-cache rows; seed {seed}.")
    return CalibrationResult(prof, ok, total, line_ok, line_total, log)


def calibrate(runs_csv: str | Path, *, model: str, gpu: str, kv_csv: str | Path | None = None,
              source: str | None = "auto", seed: int = 0, refine: bool = True,
              client_cap: int | str | None = "auto", max_evals: int = 20, n_runs: int = 16,
              version: str | None = None, fit_output_shape: bool = False,
              refine_batch: bool = False, in_batch_eviction: bool | None = None,
              w_tail: float = 0.0, adapter_sq: bool = False, scrape: bool = False,
              scrape_blocks_tokens: bool | None = None, prefill_from_spread: bool = False
              ) -> CalibrationResult:
    """Fit the profile of (model, gpu) to a runs CSV: the library call behind ``placer twin calibrate``.

    Starts from the current profile (shipped, or derived from datasheets); ``kv_csv`` defaults to a
    ``kv_cache.csv`` next to the runs file when there is one. ``source="auto"`` keeps the ``dt_real`` rows
    when the file has some, else every row. ``client_cap`` emulates a client connection limit during the
    refinement: "auto" = the calibration client's ~27 k for ``dt_real`` runs, else none.
    """
    import pandas as pd

    from twin.calibration.runs import load_runs
    from twin.catalogue import load_profile

    path = Path(runs_csv)
    if source == "auto":
        try:
            cols = pd.read_csv(path, usecols=lambda c: c == "source")
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read runs CSV ({exc})", source=str(path)) from None
        source = "dt_real" if "source" in cols and (cols["source"] == "dt_real").any() else None
    runs = load_runs(path, model=model, source=source)
    if not runs:
        raise InputError(f"no usable run of model {model!r}", source=str(path), field="model", value=model)
    kv_path = Path(kv_csv) if kv_csv is not None else path.with_name("kv_cache.csv")
    rows = load_kv_table(kv_path, model) if (kv_csv is not None or kv_path.exists()) else None
    base = load_profile(model, gpu)
    rerun: Rerun | None = None
    if refine:
        if client_cap == "auto":
            client_cap = DEFAULT_CLIENT_CAP if source == "dt_real" else None
        rerun = capped(int(client_cap) if client_cap else None)
    return fit_profile(runs, base, kv_rows=rows, rerun=rerun, seed=seed, n_runs=n_runs, max_evals=max_evals,
                       version=version, fit_output_shape=fit_output_shape, refine_batch=refine_batch,
                       in_batch_eviction=in_batch_eviction, w_tail=w_tail, adapter_sq=adapter_sq,
                       scrape=scrape, scrape_blocks_tokens=scrape_blocks_tokens,
                       prefill_from_spread=prefill_from_spread)
