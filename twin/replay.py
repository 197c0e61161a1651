"""Re-simulate a measured run in the twin, optionally emulating the real client's connection limit.

:func:`rerun` is the ``rerun(run, profile, seed, window_s)`` callable of :mod:`twin.calibrate` and of the
fidelity benchmark: it builds the run's instance (exact rate and rank composition, slots, served adapters,
window) and asks the twin for the outcome.

**The client cap.** The calibration runs' client ran out of connections (ephemeral ports) under heavy
overload: the server never held more than ~27 k requests (running + waiting), and requests arriving while
the client was at its limit failed and were never served (they still count in the offered load). The twin's
own workload has no such limit, which matters when few slots serve many adapters (the scheduler then only
finds the requests of its ``max_loras`` adapters among what waits). With ``client_cap`` set, :func:`rerun`
emulates it by fixed-point iteration around the twin's lower-level engine: simulate, drop the arrivals that
would have found the client full given the completion times of the previous pass (a request is sent while
fewer than ``client_cap`` requests sent before it are unfinished), simulate the accepted ones again
(``passes`` times).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from twin.calibrate import Outcome
from twin.profile import Profile
from twin.runs import RunRecord

#: In-flight requests (running + waiting) the calibration client could hold (median plateau of dt_real runs).
DEFAULT_CLIENT_CAP = 27_000


def _accept(arrival: np.ndarray, completions: np.ndarray, cap: int) -> np.ndarray:
    """Mask of arrivals the client could send, given the completion times of a previous pass: an arrival is
    sent when fewer than ``cap`` of the requests sent before it are still in flight."""
    done_before = np.searchsorted(np.sort(completions), arrival, side="right")
    ok = np.zeros(arrival.size, dtype=bool)
    sent = 0
    for i in range(arrival.size):
        if sent - done_before[i] < cap:
            ok[i] = True
            sent += 1
    return ok


def rerun(run: RunRecord, profile: Profile, seed: int = 0, window_s: float | None = None, *,
          client_cap: int | None = None, passes: int = 2) -> Outcome:
    """The twin's prediction for ``run`` (same composition, configuration and window; seeded instance)."""
    from twin.simulate import simulate

    if client_cap is None:
        inst = run.instance(seed=seed, window_s=window_s)
        kw = dict(max_loras=run.max_loras, max_cpu_loras=run.max_cpu_loras, max_lora_rank=run.max_lora_rank)
        res = simulate(inst, seed=seed, profile=profile, **kw)  # type: ignore[arg-type]
        return Outcome(throughput=res.throughput_tok_s, offered=res.offered_tok_s, starved=res.starved,
                       oom=res.oom, itl_ms=res.itl_mean_s * 1000, ttft_ms=res.ttft_mean_s * 1000,
                       wall_s=res.wall_s)
    return _rerun_capped(run, profile, seed, window_s, client_cap, passes)


@dataclass
class _Prepared:
    arr: np.ndarray
    adp: np.ndarray
    pin: np.ndarray
    pout: np.ndarray
    ranks: np.ndarray
    window: float
    mask: np.ndarray | None = None


def _prepare(run: RunRecord, profile: Profile, seed: int, window_s: float | None) -> _Prepared | None:
    from twin.engine import is_oom, kv_capacity_tokens
    from twin.workload import generate_requests

    inst = run.instance(seed=seed, window_s=window_s)
    kv = kv_capacity_tokens(profile, run.max_loras, run.max_lora_rank, inst.server.gpu_memory_utilization)
    max_len = inst.server.max_model_len or profile.max_model_len
    if is_oom(kv, max_len):
        return None
    T = float(inst.workload.duration_s)
    reqs = generate_requests(inst, seed)
    keep = reqs.arrival_s < T
    pin = np.minimum(reqs.input_tokens[keep], max_len - 1)
    return _Prepared(reqs.arrival_s[keep], reqs.adapter[keep], pin, np.minimum(reqs.output_tokens[keep],
                     max_len - pin), np.asarray(inst.ranks, dtype=np.int64), T)


def _engine(p: _Prepared, run: RunRecord, profile: Profile,
            mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from twin.engine import kv_capacity_tokens, run_engine

    kv = kv_capacity_tokens(profile, run.max_loras, run.max_lora_rank)
    assert kv is not None
    r = run_engine(p.arr[mask], p.adp[mask], p.pin[mask], p.pout[mask], p.ranks, max_loras=run.max_loras,
                   max_cpu_loras=run.max_cpu_loras, max_lora_rank=run.max_lora_rank,
                   kv_blocks=int(kv // profile.memory.block_size), profile=profile,
                   max_num_batched_tokens=run.max_num_batched_tokens, max_num_seqs=run.max_num_seqs,
                   duration_s=p.window)
    first = np.full(p.arr.size, np.inf)
    fin = np.full(p.arr.size, np.inf)
    first[mask] = r.first_token_s
    fin[mask] = r.finish_s
    return first, fin


def _outcome(p: _Prepared, first: np.ndarray, fin: np.ndarray, t0: float) -> Outcome:
    import time

    from twin.metrics import is_starved

    T = p.window
    tokens = (p.pin + p.pout).astype(np.float64)
    done = fin <= T
    thr = float(tokens[done].sum()) / T
    offered = float(tokens.sum()) / T
    multi = done & (p.pout > 1)
    den = float((p.pout[multi] - 1).sum())
    itl = float((fin[multi] - first[multi]).sum()) / den * 1000 if den > 0 else math.nan
    ttft = float((first[done] - p.arr[done]).mean()) * 1000 if done.any() else math.nan
    return Outcome(thr, offered, is_starved(thr, offered), False, itl_ms=itl, ttft_ms=ttft,
                   wall_s=time.perf_counter() - t0)


def _rerun_capped(run: RunRecord, profile: Profile, seed: int, window_s: float | None, cap: int,
                  passes: int, frozen: dict[tuple[str, int, float | None], _Prepared] | None = None
                  ) -> Outcome:
    import time

    t0 = time.perf_counter()
    key = (run.key, seed, window_s)
    p = frozen.get(key) if frozen is not None else None
    if p is None:
        p = _prepare(run, profile, seed, window_s)
        if p is None:
            return Outcome(0.0, math.nan, False, True, wall_s=time.perf_counter() - t0)
    if p.mask is not None:
        first, fin = _engine(p, run, profile, p.mask)
        return _outcome(p, first, fin, t0)
    mask = np.ones(p.arr.size, dtype=bool)
    first, fin = _engine(p, run, profile, mask)
    for _ in range(max(1, passes)):
        new_mask = _accept(p.arr, fin[np.isfinite(fin)], cap)
        if np.array_equal(new_mask, mask):
            break
        mask = new_mask
        first, fin = _engine(p, run, profile, mask)
    if frozen is not None:
        p.mask = mask
        frozen[key] = p
    return _outcome(p, first, fin, t0)


class FrozenCapRerun:
    """A ``rerun`` callable for fitting: the client-cap acceptance of each run is computed once (with the
    profile of the first call) and then frozen, so each later evaluation is a single engine pass."""

    def __init__(self, cap: int = DEFAULT_CLIENT_CAP, passes: int = 2) -> None:
        self.cap = cap
        self.passes = passes
        self._frozen: dict[tuple[str, int, float | None], _Prepared] = {}

    def __call__(self, run: RunRecord, profile: Profile, seed: int = 0,
                 window_s: float | None = None) -> Outcome:
        return _rerun_capped(run, profile, seed, window_s, self.cap, self.passes, self._frozen)


def with_window(run: RunRecord, window_s: float) -> RunRecord:
    """The same run with another nominal window (for shortened inner-loop re-simulations)."""
    return replace(run, window_s=window_s)
