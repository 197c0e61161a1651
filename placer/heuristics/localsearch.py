"""Local search for ``ffd-bisect``: close GPUs by emptying the least-loaded ones into the others.

A *victim* GPU (least total rate first) is emptied chunk by chunk: each chunk of its adapters (hottest
first) is offered, in one batched oracle call, to the ``width`` least-loaded other GPUs; among those that
stay feasible with the chunk the most loaded one takes it (best fit). A chunk that fits nowhere is halved;
a single adapter that fits nowhere makes the attempt fail, and the victim's moves are undone. Every accepted
GPU is one the oracle called feasible, so the plan stays feasible at every step.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from placer.oracle.base import Oracle
from twin.spec import Instance


def empty_least_loaded(problem: Instance, bins: list[np.ndarray], oracle: Oracle, stop: Callable[[], bool], *,
                       max_failures: int = 3, width: int = 12, chunks: int = 4) -> list[np.ndarray]:
    """Repeatedly close a GPU by moving its adapters into others; stop after ``max_failures`` failed victims
    in a row, or when ``stop()`` says so."""
    failed: set[bytes] = set()
    while len(bins) > 1 and len(failed) < max_failures and not stop():
        loads = np.array([problem.rates[b].sum() for b in bins])
        victims = [int(j) for j in np.argsort(loads, kind="stable") if bins[j].tobytes() not in failed]
        if not victims:
            break
        v = victims[0]
        moved = try_empty(problem, bins, v, oracle, stop, width=width, chunks=chunks)
        if moved is None:
            failed.add(bins[v].tobytes())
        else:
            bins = moved
            failed.clear()
    return bins


def try_empty(problem: Instance, bins: list[np.ndarray], v: int, oracle: Oracle, stop: Callable[[], bool], *,
              width: int = 12, chunks: int = 4) -> list[np.ndarray] | None:
    """The bins without bin ``v``, its adapters moved into the others; None if some adapter fits nowhere."""
    rates = problem.rates
    rest = bins[v][np.argsort(-rates[bins[v]], kind="stable")]  # hottest first
    others = [b for j, b in enumerate(bins) if j != v]
    load = np.array([rates[b].sum() for b in others])
    size = max(1, -(-len(rest) // chunks))
    queue = [rest[i:i + size] for i in range(0, len(rest), size)]
    while queue:
        if stop():
            return None
        chunk = queue.pop(0)
        targets = np.argsort(load, kind="stable")[:width]
        verdicts = oracle.evaluate_many(problem, [np.concatenate([others[t], chunk]) for t in targets])
        fits = [int(t) for t, vd in zip(targets, verdicts, strict=True) if vd.feasible]
        if fits:
            t = max(fits, key=lambda j: load[j])  # best fit among the feasible
            others[t] = np.sort(np.concatenate([others[t], chunk]))
            load[t] += rates[chunk].sum()
        elif len(chunk) > 1:
            half = len(chunk) // 2
            queue[:0] = [chunk[:half], chunk[half:]]
        else:
            return None
    return others
