"""Instance-level context of the feature schema: request lengths, arrival burstiness, memory and speed.

Everything here depends only on the (model, GPU) profile, the server settings and the workload description,
never on which adapters share a GPU, so it is computed once per instance and cached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from twin.lengths import SHAREGPT_PROMPT_MEAN as SHAREGPT_INPUT_MEAN
from twin.lengths import sharegpt_output_mean
from twin.profile import Profile
from twin.spec import Lengths, ServerSettings, Workload

# ShareGPT V3 first turn as filtered for the calibration runs: the twin's own means (calibration.md).
SHAREGPT_STD_OVER_MEAN = 1.0  # "the standard deviation is about equal to the mean"

ARRIVAL_CODES = {"poisson": 0, "gamma": 1, "unpredictable": 2, "trace": 3}
LENGTH_CODES = {"sharegpt": 0, "normal": 1, "trace": 2}
# Burstiness stand-in for the "unpredictable" process (rate and gap law switching every ~300 s).
UNPREDICTABLE_CV = 2.0
# Stable numeric id of each model (categorical feature; unknown models get a hash-derived code).
MODEL_CODES = {"llama-3.1-8b-instruct": 0, "qwen-2.5-7b-instruct": 1}


@dataclass(frozen=True)
class Context:
    """Per-instance constants used by every group's features."""

    model_code: float
    input_mean: float
    input_std: float
    output_mean: float
    output_std: float
    arrival_code: float
    arrival_cv: float
    lengths_code: float
    duration_s: float
    max_num_batched_tokens: float
    max_num_seqs: float
    max_model_len: float
    profile: Profile
    utilization: float


def _clipped_normal_mean_std(mu: float, sigma: float, lo: float = 1.0) -> tuple[float, float]:
    """Mean and std of max(lo, N(mu, sigma))."""
    if sigma <= 0:
        return max(lo, mu), 0.0
    a = (lo - mu) / sigma
    cdf = 0.5 * (1 + math.erf(a / math.sqrt(2)))
    pdf = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    mean = lo * cdf + mu * (1 - cdf) + sigma * pdf
    # E[X^2 ; X > lo] = (mu^2 + sigma^2)(1 - cdf) + (mu + lo) sigma pdf
    second = lo * lo * cdf + (mu * mu + sigma * sigma) * (1 - cdf) + (mu + lo) * sigma * pdf
    return mean, math.sqrt(max(second - mean * mean, 0.0))


@lru_cache(maxsize=64)
def _trace_stats(name: str) -> tuple[float, float, float, float, float]:
    from twin.traces import load_trace

    tr = load_trace(name)
    gaps = np.diff(tr.arrival_s)
    cv = float(gaps.std() / gaps.mean()) if gaps.mean() > 0 else 1.0
    return (float(tr.input_tokens.mean()), float(tr.input_tokens.std()),
            float(tr.output_tokens.mean()), float(tr.output_tokens.std()), cv)


def length_stats(lengths: Lengths, model: str, output_scale: float = 1.0
                 ) -> tuple[float, float, float, float]:
    """(input mean, input std, output mean, output std) in tokens of a request-length distribution
    (``output_scale``: the profile's EOS shortfall on the ShareGPT law's reference outputs)."""
    if lengths.kind == "sharegpt":
        out = sharegpt_output_mean(model, output_scale)
        return (SHAREGPT_INPUT_MEAN, SHAREGPT_INPUT_MEAN * SHAREGPT_STD_OVER_MEAN,
                out, out * SHAREGPT_STD_OVER_MEAN)
    if lengths.kind == "normal":
        assert lengths.input_mean is not None and lengths.output_mean is not None
        im, isd = _clipped_normal_mean_std(float(lengths.input_mean), float(lengths.input_std or 0.0))
        om, osd = _clipped_normal_mean_std(float(lengths.output_mean), float(lengths.output_std or 0.0))
        return im, isd, om, osd
    assert lengths.trace is not None
    im, isd, om, osd, _ = _trace_stats(lengths.trace)
    return im, isd, om, osd


def arrival_cv(workload: Workload) -> float:
    """Coefficient of variation of inter-arrival gaps (1 = Poisson)."""
    if workload.arrival == "poisson":
        return 1.0
    if workload.arrival == "gamma":
        return float(workload.cv or 1.0)
    if workload.arrival == "trace":
        assert workload.trace is not None
        return _trace_stats(workload.trace)[4]
    return UNPREDICTABLE_CV


def _model_code(model: str) -> float:
    if model in MODEL_CODES:
        return float(MODEL_CODES[model])
    return float(100 + sum(map(ord, model)) % 1000)


def context(profile: Profile, server: ServerSettings, workload: Workload) -> Context:
    """The per-instance feature context of a (model, GPU) ``profile`` under these server settings/workload."""
    model = profile.model
    im, isd, om, osd = length_stats(workload.lengths, model, profile.output_scale)
    return Context(
        model_code=_model_code(model), input_mean=im, input_std=isd, output_mean=om, output_std=osd,
        arrival_code=float(ARRIVAL_CODES[workload.arrival]), arrival_cv=arrival_cv(workload),
        lengths_code=float(LENGTH_CODES[workload.lengths.kind]), duration_s=float(workload.duration_s),
        max_num_batched_tokens=float(server.max_num_batched_tokens), max_num_seqs=float(server.max_num_seqs),
        max_model_len=float(server.max_model_len or profile.max_model_len), profile=profile,
        utilization=float(server.gpu_memory_utilization),
    )


def kv_cache_tokens(profile: Profile, max_loras: np.ndarray, max_lora_rank: np.ndarray,
                    utilization: float) -> np.ndarray:
    """KV-cache tokens left after the LoRA buffers (the profile's MemoryModel); NaN = measured OOM."""
    return profile.memory.kv_tokens_array(max_loras, max_lora_rank, utilization)


def oom(profile: Profile, max_loras: np.ndarray, max_lora_rank: np.ndarray, server: ServerSettings
        ) -> np.ndarray:
    """The exact OOM rule: the KV cache left is below ``max_model_len`` tokens (or measured to fail)."""
    kv = kv_cache_tokens(profile, max_loras, max_lora_rank, server.gpu_memory_utilization)
    limit = server.max_model_len or profile.max_model_len
    return np.asarray(~(kv >= limit))


def max_slots(profile: Profile, max_lora_rank: int, server: ServerSettings, upper: int = 4096) -> int:
    """The largest ``max_loras`` that does not OOM at this rank (0 if even one slot fails)."""
    slots = np.arange(1, upper + 1)
    ok = ~oom(profile, slots, np.full(slots.shape, max_lora_rank), server)
    return int(slots[ok].max()) if ok.any() else 0
