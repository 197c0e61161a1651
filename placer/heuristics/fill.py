"""The fill core shared by the heuristics: adapter orders, the largest feasible prefix, GPU plan entries."""

from __future__ import annotations

import numpy as np

from placer.oracle.base import GpuVerdict, Oracle, Point
from placer.result import GpuPlan
from twin.spec import Instance


def zigzag(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """``members`` ordered highest, lowest, next highest, next lowest, ... by ``values`` (stable on ties)."""
    ordered = members[np.argsort(-values[members], kind="stable")]
    out = np.empty_like(ordered)
    lo, hi = 0, len(ordered) - 1
    for k in range(len(ordered)):
        if k % 2 == 0:
            out[k] = ordered[lo]
            lo += 1
        else:
            out[k] = ordered[hi]
            hi -= 1
    return out


def paper_order(problem: Instance) -> np.ndarray:
    """The papers' order: rank groups largest first, rate zig-zag inside each group."""
    ranks, rates = problem.ranks, problem.rates
    parts = [zigzag(rates, np.flatnonzero(ranks == r)) for r in sorted(set(ranks.tolist()), reverse=True)]
    return np.concatenate(parts).astype(np.int64)


def plan_gpu(problem: Instance, idx: np.ndarray, point: Point) -> GpuPlan:
    """A plan entry for adapters ``idx`` at a judged configuration."""
    return GpuPlan(adapters=tuple(problem.ids[i] for i in idx), max_loras=point.max_loras,
                   max_cpu_loras=point.max_cpu_loras, max_lora_rank=point.max_lora_rank,
                   predicted_throughput_tok_s=round(point.throughput_tok_s, 3),
                   predicted_starved_probability=round(point.starved_probability, 4),
                   offered_tok_s=round(point.offered_tok_s, 3), max_num_seqs=point.max_num_seqs,
                   gpu_memory_utilization=point.gpu_memory_utilization)


def verdict_point(problem: Instance, idx: np.ndarray, oracle: Oracle, verdict: GpuVerdict) -> Point:
    """The judged configuration behind a verdict: its slot count and (batch search) its own batch."""
    return oracle.points(problem, [(idx, int(verdict.best_max_loras or 1), None, None, verdict.batch)])[0]


def largest_prefix(problem: Instance, rest: np.ndarray, oracle: Oracle, guess: int,
                   base: np.ndarray | None = None,
                   probes_per_round: int = 8) -> tuple[int, GpuVerdict | None]:
    """Largest k such that ``base`` + ``rest[:k]`` is one feasible GPU.

    Each round judges several prefix lengths in one batched oracle call: first around ``guess`` (the previous
    GPU's count is usually close), then galloping up or splitting the bracket evenly. Feasibility is assumed
    monotone in k only to steer the search: the bracket is (largest feasible probe below the smallest
    infeasible one, that infeasible one), and the returned verdict is the oracle's for exactly that prefix
    (k = 0, None when not even one adapter fits).
    """
    n = len(rest)
    head = np.empty(0, np.int64) if base is None else np.asarray(base, np.int64)
    lo, lo_v, hi = 0, None, n + 1
    g = max(1, min(int(guess), n))
    probes = {g - 2, g - 1, g, g + 1, g + 2, g + 4, g + max(8, g // 2), 2 * g}
    seen: dict[int, GpuVerdict] = {}
    while True:
        ks = sorted(k for k in probes if lo < k < hi and k not in seen)
        if not ks:
            break
        verdicts = oracle.evaluate_many(problem, [np.concatenate([head, rest[:k]]) for k in ks])
        seen.update(zip(ks, verdicts, strict=True))
        bad = [k for k in ks if not seen[k].feasible]
        if bad:
            hi = min(hi, bad[0])
        good = [k for k in ks if seen[k].feasible and k < hi]
        if good and good[-1] > lo:
            lo, lo_v = good[-1], seen[good[-1]]
        if lo >= n or hi - lo <= 1:
            break
        if hi > n:  # no infeasible prefix seen yet: gallop
            step = max(1, lo // 4)
            probes = {min(n, lo + step * 2**i) for i in range(probes_per_round)}
        else:
            width = hi - lo - 1
            m = min(width, probes_per_round)
            probes = {lo + 1 + (width * i) // m for i in range(m)} | {hi - 1}
    return lo, lo_v
