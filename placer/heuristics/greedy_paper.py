"""``greedy-paper``: the published surrogate-driven greedy placement (Agulló et al., arXiv 2602.24044).

1. Group adapters by rank, largest rank first; inside a group order by rate zig-zag (highest, lowest, next
   highest, ...), so each GPU gets a mix of hot and cold adapters.
2. Fill one GPU at a time. At the fixed adapter-count test points {8, 16, 32, ..., 576}, compare the current
   slot count with the next larger test point (dropping any that breaks the memory limit or exceeds the
   adapter count), keep the one with the higher predicted throughput, then ask the starvation classifier.
3. Not starved: commit and continue. Starved or OOM: roll back to the last committed point, close the GPU and
   open the next.

Tail handling (as the published code would): when fewer adapters remain than the next test point, the
remainder is tested as its own point. When even the first test point fails on a fresh GPU (very hot or
high-rank adapters), fewer adapters are tried (7, 6, ..., 1) with the oracle's best slot count, so every
adapter that fits alone is placed.
"""

from __future__ import annotations

import time

import numpy as np

from placer.heuristics.fill import paper_order, plan_gpu, verdict_point
from placer.oracle.base import PAPER_TEST_POINTS, Oracle, Point
from placer.result import GpuPlan, Result
from twin.spec import Instance

NAME = "greedy-paper"


def _next_point(s: int, points: tuple[int, ...]) -> int | None:
    for p in points:
        if p > s:
            return p
    return None


def _fill_one(problem: Instance, rest: np.ndarray, oracle: Oracle) -> tuple[int, Point | None]:
    """Adapters committed on one fresh GPU from the front of ``rest``, and the committed configuration."""
    points = oracle.slot_points or PAPER_TEST_POINTS
    committed, best_point, slots = 0, None, None
    for tp in points:
        k = min(tp, len(rest))
        if k <= committed:
            break
        idx = rest[:k]
        if slots is None:
            options = [min(points[0], k)]
        else:
            nxt = _next_point(slots, points)
            options = [slots] + ([min(nxt, k)] if nxt is not None and min(nxt, k) > slots else [])
        judged = [p for p in oracle.points(problem, [(idx, s, None, None) for s in options]) if not p.oom]
        if not judged:
            break  # memory error: roll back
        choice = max(judged, key=lambda p: (p.throughput_tok_s, -p.max_loras))
        if choice.starved:
            break  # starved: roll back to the last committed point
        committed, best_point, slots = k, choice, choice.max_loras
        if k == len(rest):
            break
    if committed == 0:  # even the first point fails on an empty GPU: try fewer adapters, one less at a time
        k = min(points[0], len(rest))
        while k > 1 and committed == 0:
            k -= 1
            verdict = oracle.evaluate(problem, rest[:k])
            if verdict.feasible:
                committed = k
                best_point = verdict_point(problem, rest[:k], oracle, verdict)
    return committed, best_point


def pack_order(problem: Instance, order: np.ndarray, oracle: Oracle) -> list[GpuPlan] | None:
    """Greedy-paper filling of ``order``; None when some adapter cannot be placed even alone."""
    gpus: list[GpuPlan] = []
    pos = 0
    while pos < len(order):
        k, point = _fill_one(problem, order[pos:], oracle)
        if k == 0 or point is None:
            return None
        gpus.append(plan_gpu(problem, order[pos:pos + k], point))
        pos += k
    return gpus


def solve_greedy_paper(problem: Instance, *, time_limit: float, seed: int, oracle: Oracle) -> Result:
    """The published greedy; deterministic (``seed`` unused), far below any sensible time limit."""
    start = time.perf_counter()
    gpus = pack_order(problem, paper_order(problem), oracle)
    runtime = time.perf_counter() - start
    if gpus is None:
        return Result(solver=NAME, status="infeasible", num_gpus=0, lower_bound=0, runtime_s=runtime, gpus=(),
                      reason="an adapter fits on no GPU even alone")
    return Result(solver=NAME, status="feasible", num_gpus=len(gpus), lower_bound=1, runtime_s=runtime,
                  gpus=tuple(gpus))
