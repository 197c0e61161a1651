"""Re-simulate a measured run in the twin, optionally with the real client's connection limit.

:func:`rerun` is the ``rerun(run, profile, seed, window_s)`` callable of :mod:`twin.calibration.fit` and of
the
fidelity benchmark: it builds the run's instance (exact rate and rank composition, slots, served adapters,
window) and asks the twin (:func:`twin.simulate`) for the outcome.

**The client cap.** The calibration runs' client ran out of connections (ephemeral ports) under heavy
overload: the server never held more than ~27 k requests (running + waiting; the waiting queue plateaus at
23–28 k in 143 of the 294 ok dt_real runs), and requests arriving while the client was at its limit failed
and were never served (they still count in the offered load). Without that limit the twin's queue grows to
hundreds of thousands of requests, which changes what the scheduler can batch when few slots serve many
adapters. With ``client_cap`` set, :func:`rerun` passes it to the twin as ``max_inflight`` with
``drop_over_limit`` (refused requests count as arrived, never as completed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

from twin.calibration.runs import RunRecord
from twin.profile import Profile


@dataclass(frozen=True)
class Outcome:
    """What a twin re-simulation of one run predicts."""

    throughput: float
    offered: float
    starved: bool
    oom: bool
    itl_ms: float = math.nan
    ttft_ms: float = math.nan
    wall_s: float = 0.0
    ttft_p50_ms: float = math.nan  # over the requests completed in the window, as the client measured them
    ttft_p99_ms: float = math.nan
    itl_p50_ms: float = math.nan
    itl_p99_ms: float = math.nan
    mean_running: float = math.nan  # time averages of the 10 s samples over the window
    mean_waiting: float = math.nan
    gpu_loads: int = 0
    completed: int = 0
    scrapes: int = 0               # metrics scrapes (frontend stalls; profile's metrics_scrape_interval_s)
    scrape_ms: float = math.nan    # their mean duration
    scrape_series_mean: float = math.nan  # label sets held at a scrape, mean
    scrape_names_mean: float = math.nan   # adapter names they list, mean


Rerun = Callable[[RunRecord, Profile, int, float | None], Outcome]

#: In-flight requests (running + waiting) the calibration client could hold (median plateau of dt_real runs).
DEFAULT_CLIENT_CAP = 27_000

#: The calibration client's metrics poller sleeps 2 s after each scrape of the server's ``/metrics``
#: (``ConcurrentMetricsChecker.run``, benchmarks/lora/concurrent_metrics_checker.py of the published
#: repository): its sample interval minus 2 s is the time one scrape took.
METRICS_POLL_PAUSE_S = 2.0


def harness_profile(run: RunRecord, profile: Profile) -> Profile:
    """``profile`` as the calibration harness ran it for ``run``: a profile that carries fitted scrape costs
    but no scraper of its own (the shipped ones: planning assumes none) gets the client's poller, pausing
    :data:`METRICS_POLL_PAUSE_S` between scrapes, when the run recorded poller samples. Any other profile is
    returned as it is."""
    if profile.has_scrape_costs and not profile.step.metrics_scrape_interval_s and run.polled:
        return profile.with_scraper(METRICS_POLL_PAUSE_S)
    return profile


def rerun(run: RunRecord, profile: Profile, seed: int = 0, window_s: float | None = None, *,
          client_cap: int | None = None) -> Outcome:
    """The twin's prediction for ``run`` (same composition, configuration and window; seeded instance), with
    the calibration client's metrics poller where the profile carries scrape costs (:func:`harness_profile`).
    """
    from twin.simulate import simulate

    inst = run.instance(seed=seed, window_s=window_s)
    res = simulate(inst, max_loras=run.max_loras, max_cpu_loras=run.max_cpu_loras,
                   max_lora_rank=run.max_lora_rank, seed=seed, profile=harness_profile(run, profile),
                   max_inflight=client_cap,
                   drop_over_limit=client_cap is not None, timeseries=True)
    ts = res.timeseries
    run_mean, wait_mean = ((float(ts["running"].mean()), float(ts["waiting"].mean())) if ts is not None
                           and len(ts["running"]) else (math.nan, math.nan))
    return Outcome(throughput=res.throughput_tok_s, offered=res.offered_tok_s, starved=res.starved,
                   oom=res.oom, itl_ms=res.itl_mean_s * 1000, ttft_ms=res.ttft_mean_s * 1000,
                   wall_s=res.wall_s, ttft_p50_ms=res.ttft_completed_p50_s * 1000,
                   ttft_p99_ms=res.ttft_completed_p99_s * 1000,
                   itl_p50_ms=res.itl_p50_s * 1000, itl_p99_ms=res.itl_p99_s * 1000, mean_running=run_mean,
                   mean_waiting=wait_mean, gpu_loads=res.gpu_loads, completed=res.completed,
                   scrapes=res.scrapes,
                   scrape_ms=res.scrape_stall_s / res.scrapes * 1000 if res.scrapes else math.nan,
                   scrape_series_mean=res.scrape_series_mean if res.scrapes else math.nan,
                   scrape_names_mean=res.scrape_names_mean if res.scrapes else math.nan)


def capped(client_cap: int | None = DEFAULT_CLIENT_CAP) -> Rerun:
    """A ``rerun`` callable with the given client cap (None: no cap)."""
    return partial(rerun, client_cap=client_cap)


def with_window(run: RunRecord, window_s: float) -> RunRecord:
    """The same run with another nominal window (for shortened inner-loop re-simulations)."""
    return replace(run, window_s=window_s)
