"""Where many independent twin runs execute: in-process, a local process pool, or Ray (extra ``ray``).

Shared by the surrogate sweeps (``surrogate.dataset.sweep``) and plan verification
(``placer.check.verify``); this is the one module that imports Ray. All backends take a picklable function
and an iterable of items and yield results as they finish (unordered); callers reassemble them by index, so
what they compute does not depend on the backend.
A worker process that dies (segfault, out of memory) does not hang the run: the pool is restarted and the
unfinished items are retried; an item caught in three dead pools is handed to ``on_failure``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from twin.errors import InputError

BACKENDS: tuple[str, ...] = ("local", "ray")
MAX_ATTEMPTS = 3


def _reraise(item: Any, exc: BaseException) -> Any:
    raise exc


def check_backend(backend: str) -> str:
    """``backend`` when it can run here; else an :class:`InputError` naming ``--backend`` and the value (an
    unknown name, or ``ray`` without Ray installed). Call it before any work, so bad input fails at once."""
    if backend not in BACKENDS:
        raise InputError(f"must be one of {list(BACKENDS)} (got {backend!r})", field="--backend",
                         value=backend)
    if backend == "ray":
        _import_ray()
    return backend


def map_unordered(fn: Callable[[Any], Any], items: Iterable[Any], *, workers: int, backend: str = "local",
                  on_failure: Callable[[Any, BaseException], Any] = _reraise) -> Iterator[Any]:
    """``fn(item)`` for every item, yielded as each finishes (``workers`` at a time)."""
    if backend == "local":
        if workers <= 1:
            for item in items:
                yield fn(item)
            return
        yield from _local_pool(fn, items, workers, on_failure)
    elif backend == "ray":
        yield from _ray(fn, items, workers)
    else:
        check_backend(backend)


def _context() -> Any:
    methods = mp.get_all_start_methods()
    return mp.get_context("forkserver" if "forkserver" in methods else "spawn")


def _local_pool(fn: Callable[[Any], Any], items: Iterable[Any], workers: int,
                on_failure: Callable[[Any, BaseException], Any]) -> Iterator[Any]:
    it = iter(items)
    retry: list[Any] = []
    attempts: dict[int, int] = {}
    window = 2 * workers
    while True:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=_context())
        running: dict[Future[Any], Any] = {}
        broken = False
        try:
            while True:
                while len(running) < window:
                    item = retry.pop() if retry else next(it, _END)
                    if item is _END:
                        break
                    running[pool.submit(fn, item)] = item
                if not running:
                    return
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    item = running.pop(fut)
                    try:
                        result = fut.result()
                    except BrokenProcessPool as exc:
                        broken = True
                        n = attempts[id(item)] = attempts.get(id(item), 0) + 1
                        if n >= MAX_ATTEMPTS:
                            yield on_failure(item, exc)
                        else:
                            retry.append(item)
                        continue
                    yield result
                if broken:
                    retry.extend(running.values())  # innocent bystanders of the dead worker: run again
                    break
        finally:
            pool.shutdown(wait=not broken, cancel_futures=True)


_END = object()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError("'ray' needs Ray, which is not installed: pip install 'lora-placer[ray]'",
                         field="--backend", value="ray") from None
    return ray


def _call(fn: Callable[[Any], Any], item: Any) -> Any:
    return fn(item)


def _ray_init(ray: Any, workers: int) -> None:
    """Join the cluster named by RAY_ADDRESS; else start a local one with ``workers`` CPUs."""
    quiet = {"log_to_driver": False, "configure_logging": False}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**quiet)
        return
    # address="local": a fresh cluster, never a stale one recorded in /tmp/ray; its workers import what this
    # process imports (e.g. an injected simulator's module)
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}
    ray.init(address="local", num_cpus=workers, include_dashboard=False, runtime_env=env, **quiet)


def _ray(fn: Callable[[Any], Any], items: Iterable[Any], workers: int) -> Iterator[Any]:
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        _ray_init(ray, workers)
        started = True
    try:
        remote = ray.remote(num_cpus=1)(_call)  # a plain function: ray.remote refuses functools.partial
        fn_ref = ray.put(fn)
        pending: list[Any] = []
        window = 4 * workers  # bounded in-flight tasks: results stream back, memory stays flat
        for item in items:
            pending.append(remote.remote(fn_ref, item))
            if len(pending) >= window:
                done, pending = ray.wait(pending, num_returns=1)
                yield ray.get(done[0])
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        if started:
            ray.shutdown()
