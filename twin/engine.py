"""The server model: KV capacity and the OOM rule, and one run of the compiled step loop.

:func:`kv_capacity_tokens` and :func:`is_oom` apply the profile's :class:`~twin.profile.MemoryModel` (the
mission's memory-error rule, defined there once). :func:`run_engine` feeds request arrays through
:func:`twin._numba.core.run_core` (the
vLLM V1 scheduler and the step-time model, documented there) and returns the raw per-request outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twin._numba import core as _core
from twin.profile import Profile, StepModel, is_oom

__all__ = ["EngineRun", "is_oom", "kv_capacity_tokens", "run_engine", "step_params"]

STEP_FIELDS: tuple[str, ...] = (
    "base_ms", "per_seq_ms", "per_prefill_token_ms", "per_ctx_ktoken_ms", "lora_per_adapter", "lora_per_rank",
    "sched_base_ms", "sched_per_running_ms", "sched_per_waiting_ms", "load_gpu_ms", "load_gpu_ms_per_rank",
    "load_disk_ms", "lora_ms_per_adapter_rank", "in_batch_eviction", "lora_ms_per_adapter_sq",
    "metrics_scrape_interval_s", "metrics_scrape_base_ms", "metrics_scrape_us_per_series",
    "metrics_scrape_us_per_name", "metrics_scrape_blocks_tokens",
)


def simulator_compiled() -> bool | None:
    """Whether the next run starts at once: True when the step loop is compiled in this process or numba's
    on-disk cache holds a current build of it; False when the next run compiles it first (16–30 s, the first
    run after an install or an upgrade); None when the cache cannot be inspected."""
    kernel = _core.run_core
    if kernel.overloads:
        return True
    try:  # numba's own cache index (private API: any change in it only means "unknown")
        return bool(getattr(kernel, "_cache")._cache_file._load_index())  # noqa: B009
    except Exception:  # noqa: BLE001
        return None


def kv_capacity_tokens(profile: Profile, max_loras: int, max_lora_rank: int,
                       gpu_memory_utilization: float = 0.9) -> float | None:
    """KV-cache tokens left after weights and LoRA buffers (:meth:`twin.profile.MemoryModel.kv_tokens`);
    None when a measured table entry says OOM."""
    return profile.memory.kv_tokens(max_loras, max_lora_rank, gpu_memory_utilization)


def step_params(step: StepModel) -> np.ndarray:
    """The step model as the float array the compiled loop reads (order: :data:`STEP_FIELDS`)."""
    return np.array([float(getattr(step, f)) for f in STEP_FIELDS], dtype=np.float64)


def adapter_hash_order(n_adapters: int, seed: int) -> np.ndarray:
    """One key per adapter: the order in which vLLM iterates a set of the batch's LoRA requests.

    vLLM hashes a ``LoRARequest`` by its name, and Python randomises string hashes per process, so the order
    is a fixed but arbitrary permutation for the life of one server. The twin draws it from ``seed``
    (a stream of its own, independent of the arrivals). Approximation: a real set iterates by hash modulo
    its table size (8 slots for up to 5 members, then growing) and by insertion order on collisions, so
    small sets do not always follow one global order; the twin uses the one global order."""
    rng = np.random.default_rng([int(seed), 0x4A5E])
    return rng.permutation(n_adapters).astype(np.int64)


def label_set_keys(n_adapters: int, seed: int) -> np.ndarray:
    """Random 64-bit keys that hash the gauge's label sets (``2·n_adapters``: running, then waiting; a set's
    hash is the XOR of its members' keys). Distinct pairs of sets collide with probability ~2^-64 per pair;
    the keys come from ``seed`` (a stream of their own)."""
    rng = np.random.default_rng([int(seed), 0x5C4A])
    return rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=2 * n_adapters, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class EngineRun:
    """Raw outcome of one run: per-request times (inf = never), counters, ITL histogram, time series."""

    first_token_s: np.ndarray
    finish_s: np.ndarray
    generated: np.ndarray
    status: np.ndarray
    steps: int
    preemptions: int
    gpu_loads: int
    disk_loads: int
    stalled: bool
    dropped: int
    busy_s: float
    #: seconds of forward passes (the GPU-bound part of busy_s: no scheduler time, no adapter loads)
    forward_s: float
    end_s: float
    itl_hist: np.ndarray
    timeseries: np.ndarray
    scrapes: int = 0              # metrics scrapes (frontend stalls) started in the run
    stall_s: float = 0.0          # their total duration
    series_mean: float = 0.0      # mean label sets held at a scrape
    names_mean: float = 0.0       # mean adapter names those label sets list


def run_engine(arrival_s: np.ndarray, adapter: np.ndarray, input_tokens: np.ndarray,
               output_tokens: np.ndarray, ranks: np.ndarray, *, max_loras: int, max_cpu_loras: int,
               max_lora_rank: int, kv_blocks: int, profile: Profile, max_num_batched_tokens: int,
               max_num_seqs: int, duration_s: float, timeseries_dt: float = 0.0,
               preload_cpu: int | None = None, fast_path: bool = True,
               max_inflight: int | None = None, drop: bool = False, seed: int | None = 0) -> EngineRun:
    """Simulate the window [0, duration_s) for requests already sorted by arrival (all arrivals < duration_s).

    ``preload_cpu`` adapters (by index; default ``max_cpu_loras``) start in the host-memory cache, as when
    vLLM is launched with the adapters registered; GPU slots start empty. ``fast_path`` False forces the
    request-by-request scheduling pass in every step (same results; for testing the fast path).
    ``max_inflight`` caps the requests inside the server (running + waiting), as a client with that many
    connections does: later arrivals wait client-side, in arrival order, and count their TTFT from arrival;
    with ``drop`` they are refused instead (never served, still counted as arrived). ``seed`` (None: 0)
    draws the adapters' activation order for a profile with ``in_batch_eviction``
    (:func:`adapter_hash_order`).
    """
    n_ad = int(ranks.shape[0])
    if n_ad >= 1 << 20:
        raise ValueError(f"at most {(1 << 20) - 1} adapters per GPU (got {n_ad})")
    first, fin, gen, status, stats, hist, ts = _core.run_core(
        np.ascontiguousarray(arrival_s, dtype=np.float64), np.ascontiguousarray(adapter, dtype=np.int64),
        np.ascontiguousarray(input_tokens, dtype=np.int64),
        np.ascontiguousarray(output_tokens, dtype=np.int64),
        np.ascontiguousarray(ranks, dtype=np.int64), int(ranks.shape[0]), int(max_loras), int(max_cpu_loras),
        int(max_lora_rank), int(max_num_batched_tokens), int(max_num_seqs), int(kv_blocks),
        int(profile.memory.block_size), step_params(profile.step), float(duration_s), float(timeseries_dt),
        int(max_cpu_loras if preload_cpu is None else preload_cpu), bool(fast_path),
        np.int64(1 << 62 if max_inflight is None else max_inflight), bool(drop),
        adapter_hash_order(n_ad, 0 if seed is None else seed),
        label_set_keys(n_ad, 0 if seed is None else seed) if profile.step.metrics_scrape_interval_s > 0
        else np.empty(0, np.int64),
    )
    n_sc = int(stats[_core.ST_SCRAPES])
    return EngineRun(
        first_token_s=first, finish_s=fin, generated=gen, status=status,
        steps=int(stats[_core.ST_STEPS]), preemptions=int(stats[_core.ST_PREEMPTIONS]),
        gpu_loads=int(stats[_core.ST_GPU_LOADS]), disk_loads=int(stats[_core.ST_DISK_LOADS]),
        stalled=bool(stats[_core.ST_STALLED]), dropped=int(stats[_core.ST_DROPPED]),
        busy_s=float(stats[_core.ST_BUSY_S]), forward_s=float(stats[_core.ST_FORWARD_S]),
        end_s=float(stats[_core.ST_END_T]), itl_hist=hist, timeseries=ts, scrapes=n_sc,
        stall_s=float(stats[_core.ST_STALL_S]),
        series_mean=float(stats[_core.ST_SERIES_SUM]) / n_sc if n_sc else 0.0,
        names_mean=float(stats[_core.ST_NAMES_SUM]) / n_sc if n_sc else 0.0,
    )
