"""The twin's entry points: :func:`simulate` (an instance, one GPU) and :func:`simulate_requests` (given
request arrays, e.g. to re-simulate a real run with its exact composition or with common random numbers).

No file I/O: everything comes in as arguments and goes out as a :class:`~twin.metrics.SimResult`.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from twin.catalogue import load_profile
from twin.engine import is_oom, kv_capacity_tokens, run_engine
from twin.errors import InputError
from twin.lengths import expected_tokens
from twin.metrics import SimResult, request_metrics, timeseries_dict
from twin.profile import Profile
from twin.spec import Instance, ServerSettings, Slo
from twin.workload import Requests, generate_requests

DEFAULT_TIMESERIES_DT = 10.0


def _check_int(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InputError(f"must be an integer ≥ {low} (got {value!r})", field=name, value=value)
    return int(value)


def simulate(instance: Instance, *, max_loras: int, max_cpu_loras: int | None = None,
             max_lora_rank: int | None = None, seed: int = 0, profile: Profile | None = None,
             timeseries: bool | float = False, max_inflight: int | None = None,
             drop_over_limit: bool = False, slo: Slo | None = None) -> SimResult:
    """Simulate all adapters of ``instance`` on one GPU for its window and return the metrics.

    ``max_cpu_loras`` defaults to the number of adapters, ``max_lora_rank`` to the largest rank present,
    ``profile`` to the shipped profile of (instance.model, instance.gpu). Requests come from
    :func:`twin.workload.generate_requests` with ``seed``. ``timeseries`` True (every 10 s) or a sampling
    period in seconds adds sampled running/waiting/KV use/throughput to the result. ``max_inflight`` caps the
    requests inside the server (running + waiting) like a client with that many connections (the calibration
    runs' client plateaued at ~23–28 k waiting requests); None = no cap. Requests over the cap wait
    client-side, or with ``drop_over_limit`` are refused (they count as arrived, never as completed).
    ``slo``: the criterion the result is judged by (``SimResult.meets``); default: the instance's ``slo``.
    """
    t0 = time.perf_counter()
    seed = _check_int("seed", seed, low=0)
    prof = profile if profile is not None else load_profile(instance.model, instance.gpu)
    max_lora_rank = int(instance.ranks.max()) if max_lora_rank is None else max_lora_rank
    cfg = _config(instance.n_adapters, instance.ranks, max_loras, max_cpu_loras, max_lora_rank)
    kv = kv_capacity_tokens(prof, cfg[0], cfg[2], instance.server.gpu_memory_utilization)
    max_len = instance.server.max_model_len or prof.max_model_len
    reqs = None if is_oom(kv, max_len) else generate_requests(
        instance, seed, output_scale=prof.output_scale, output_exponent=prof.output_exponent)
    return _run(reqs, instance.ids, instance.ranks, float(instance.total_rate_rps),
                duration_s=float(instance.workload.duration_s), server=instance.server, profile=prof,
                max_loras=cfg[0], max_cpu_loras=cfg[1], max_lora_rank=cfg[2], kv=kv, seed=seed,
                timeseries=timeseries, t0=t0, max_inflight=max_inflight, drop=drop_over_limit,
                slo=instance.slo if slo is None else slo,
                expected_tokens=expected_tokens(instance.workload.lengths, instance.model, prof.output_scale)
                if reqs is None
                else reqs.expected_tokens)


def simulate_requests(requests: Requests, ranks: Any, *, max_loras: int, duration_s: float,
                      profile: Profile, max_cpu_loras: int | None = None, max_lora_rank: int | None = None,
                      server: ServerSettings | None = None, adapter_ids: tuple[str, ...] | None = None,
                      total_rate_rps: float | None = None, timeseries: bool | float = False,
                      max_inflight: int | None = None, drop_over_limit: bool = False,
                      slo: Slo | None = None) -> SimResult:
    """Simulate given requests (``twin.workload.Requests``; adapter indices into ``ranks``) on one GPU.

    Requests arriving at or after ``duration_s`` are ignored. ``total_rate_rps`` (for the expected offered
    load) defaults to arrivals / duration_s. The result's ``seed`` is None; ``slo`` (default: the default
    :class:`~twin.spec.Slo`) is the criterion it is judged by.
    """
    t0 = time.perf_counter()
    ranks = np.asarray(ranks, dtype=np.int64)
    if ranks.ndim != 1 or ranks.size == 0:
        raise InputError("must be a non-empty list of adapter ranks", field="ranks", value=ranks)
    if len(requests) and (requests.adapter.min() < 0 or requests.adapter.max() >= ranks.size):
        raise InputError("adapter index out of range of ranks", field="adapter",
                         value=int(requests.adapter.max()))
    srv = server if server is not None else ServerSettings()
    max_lora_rank = int(ranks.max()) if max_lora_rank is None else max_lora_rank
    cfg = _config(ranks.size, ranks, max_loras, max_cpu_loras, max_lora_rank)
    kv = kv_capacity_tokens(profile, cfg[0], cfg[2], srv.gpu_memory_utilization)
    if duration_s <= 0 or not math.isfinite(duration_s):
        raise InputError(f"must be positive (got {duration_s!r})", field="duration_s", value=duration_s)
    ids = adapter_ids if adapter_ids is not None else tuple(str(i) for i in range(ranks.size))
    keep = requests.arrival_s < duration_s
    rate = float(total_rate_rps) if total_rate_rps is not None else float(keep.sum()) / duration_s
    return _run(requests, ids, ranks, rate, duration_s=float(duration_s), server=srv, profile=profile,
                max_loras=cfg[0], max_cpu_loras=cfg[1], max_lora_rank=cfg[2], kv=kv, seed=None,
                timeseries=timeseries, t0=t0, expected_tokens=requests.expected_tokens,
                max_inflight=max_inflight, drop=drop_over_limit, slo=slo if slo is not None else Slo())


def _config(n: int, ranks: np.ndarray, max_loras: Any, max_cpu_loras: Any, max_lora_rank: Any
            ) -> tuple[int, int, int]:
    k = _check_int("max_loras", max_loras)
    m = max(n, k) if max_cpu_loras is None else _check_int("max_cpu_loras", max_cpu_loras)
    if m < k:
        raise InputError(f"must be ≥ max_loras = {k}, as vLLM requires (got {m})", field="max_cpu_loras",
                         value=m)
    r = _check_int("max_lora_rank", max_lora_rank)
    if r < int(ranks.max()):
        raise InputError(f"must be ≥ the largest adapter rank {int(ranks.max())} (got {r})",
                         field="max_lora_rank", value=r)
    return k, m, r


def _run(reqs: Requests | None, ids: tuple[str, ...], ranks: np.ndarray, total_rate: float, *,
         duration_s: float, server: ServerSettings, profile: Profile, max_loras: int, max_cpu_loras: int,
         max_lora_rank: int, kv: float | None, seed: int | None, timeseries: bool | float, t0: float,
         expected_tokens: float | None, max_inflight: int | None = None, drop: bool = False,
         slo: Slo | None = None) -> SimResult:
    n_ad = len(ids)
    common: dict[str, Any] = dict(slo=slo if slo is not None else Slo(),
                  kv_cache_tokens=kv, max_loras=max_loras, max_cpu_loras=max_cpu_loras,
                  max_lora_rank=max_lora_rank, duration_s=duration_s, seed=seed, adapter_ids=tuple(ids),
                  profile=profile.name, profile_version=profile.version,
                  profile_calibrated=profile.calibrated)
    exp_off = total_rate * expected_tokens if expected_tokens is not None else math.nan
    if reqs is None:  # OOM: the server does not start; nothing is simulated
        nan = math.nan
        zeros = np.zeros(n_ad, np.int64)
        return SimResult(
            throughput_tok_s=0.0, offered_tok_s=nan, expected_offered_tok_s=exp_off, served_fraction=nan,
            starved=False, oom=True, completed=0, arrived=0, running_end=0, waiting_end=0,
            throughput_out_tok_s=0.0, ttft_mean_s=nan, ttft_p50_s=nan, ttft_p99_s=nan, itl_mean_s=nan,
            itl_p50_s=nan, itl_p99_s=nan, preemptions=0, gpu_loads=0, disk_loads=0, steps=0,
            busy_fraction=0.0, wall_s=time.perf_counter() - t0, adapter_served_fraction=np.full(n_ad, nan),
            adapter_ttft_mean_s=np.full(n_ad, nan), adapter_completed=zeros, adapter_arrived=zeros,
            adapter_ttft_p99_s=np.full(n_ad, nan), adapter_tpot_p99_s=np.full(n_ad, nan),
            **common,  # type: ignore[arg-type]
        )
    arr, adp, pin, pout = reqs.arrival_s, reqs.adapter, reqs.input_tokens, reqs.output_tokens
    if arr.size and arr[-1] >= duration_s:  # sorted: keep the arrivals inside the window
        k = int(np.searchsorted(arr, duration_s, side="left"))
        arr, adp, pin, pout = arr[:k], adp[:k], pin[:k], pout[:k]
    max_len = server.max_model_len or profile.max_model_len
    if pin.size and (pin.max() >= max_len or (pin + pout).max() > max_len):  # vLLM's length limit
        pin = np.minimum(pin, max_len - 1)
        pout = np.minimum(pout, max_len - pin)
    assert kv is not None
    block = profile.memory.block_size
    kv_blocks = int(kv // block)
    ts_dt = 0.0 if timeseries is False else (
        DEFAULT_TIMESERIES_DT if timeseries is True else float(timeseries))
    run = run_engine(arr, adp, pin, pout, ranks, max_loras=max_loras, max_cpu_loras=max_cpu_loras,
                     max_lora_rank=max_lora_rank, kv_blocks=kv_blocks, profile=profile,
                     max_num_batched_tokens=server.max_num_batched_tokens, max_num_seqs=server.max_num_seqs,
                     duration_s=duration_s, timeseries_dt=ts_dt,
                     max_inflight=None if max_inflight is None else _check_int("max_inflight", max_inflight),
                     drop=drop)
    m = request_metrics(arr, adp, pin, pout, run.first_token_s, run.finish_s, duration_s, n_ad,
                        generated=run.generated)
    from twin.metrics import itl_percentile

    running_end = int(((run.status == 1) | ((run.status == 3) & (run.finish_s > duration_s))).sum())
    return SimResult(
        expected_offered_tok_s=exp_off, oom=False, running_end=running_end,
        waiting_end=m["arrived"] - m["completed"] - running_end - run.dropped, dropped=run.dropped,
        itl_p50_s=itl_percentile(run.itl_hist, 0.5), itl_p99_s=itl_percentile(run.itl_hist, 0.99),
        preemptions=run.preemptions, gpu_loads=run.gpu_loads, disk_loads=run.disk_loads, steps=run.steps,
        scrapes=run.scrapes, scrape_stall_s=run.stall_s, scrape_series_mean=run.series_mean,
        scrape_names_mean=run.names_mean,
        busy_fraction=min(run.busy_s, duration_s) / duration_s, wall_s=time.perf_counter() - t0,
        forward_fraction=min(run.forward_s, duration_s) / duration_s,
        timeseries=(timeseries_dict(run.timeseries, kv_blocks, block, ts_dt, duration_s) if ts_dt > 0
                    else None),
        **m, **common,
    )
