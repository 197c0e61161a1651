"""Sweeps: run the twin on many samples and store the results as a chunked, resumable parquet dataset.

``sweep(n_samples, seed, out_dir)`` splits samples ``0..n_samples-1`` into chunks; a chunk's rows are written
atomically to ``chunk-NNNNN.parquet`` once all its runs are done, then recorded in ``manifest.json``. A
crashed or interrupted sweep re-run with the same arguments skips the recorded chunks and loses nothing but
the runs of unfinished chunks. Samples are drawn per index (:func:`surrogate.sampling.draw_sample`), so the
result does not depend on the backend, the number of workers or the interruptions.

Backends: ``local`` (a process pool, forkserver/spawn start) and ``ray`` (extra ``ray``); same rows.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from surrogate.bundle import profile_fingerprint
from surrogate.sampling import BATCHES, SAMPLER_VERSION, draw_sample, sample_instance
from twin.errors import InputError
from twin.files import atomic_write_bytes, atomic_write_text
from twin.metrics import is_starved
from twin.parallel import check_backend, map_unordered
from twin.profile import Profile

DEFAULT_PROFILES: tuple[str, ...] = ("llama-3.1-8b-instruct@h100-64gb", "qwen-2.5-7b-instruct@h100-64gb")
MANIFEST = "manifest.json"
USER_PROFILES = "profiles"  # the user profiles a sweep ran with, one JSON per model@gpu
DATASET_FORMAT = 1
Simulator = Callable[..., Any]


def _twin_simulate(*args: Any, **kwargs: Any) -> Any:
    from twin.simulate import simulate

    return simulate(*args, **kwargs)


def _sim_fields(result: Any) -> dict[str, Any]:
    """The scalar fields of a simulator's result (a ``SimResult``, or a mapping from a test simulator)."""
    if isinstance(result, Mapping):
        out = dict(result)
    else:
        try:
            out = result.to_dict(per_adapter=False)
        except TypeError:
            out = result.to_dict()
    return {k: v for k, v in out.items() if v is None or isinstance(v, (bool, int, float, str))}


def _check_label_seeds(label_seeds: int) -> None:
    if label_seeds < 1:
        raise InputError(f"must be ≥ 1 (got {label_seeds})", field="label_seeds", value=label_seeds)


def _mean_of_seeds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One label row from the runs of one sample with several twin seeds: numeric fields averaged (None if
    a seed lacks one), served fraction and the starved verdict recomputed from the mean throughput and mean
    offered load, other fields (text, OOM) from the first seed."""
    out = dict(runs[0])
    for k, v in runs[0].items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        vals = [r.get(k) for r in runs]
        ok = [float(x) for x in vals if isinstance(x, (int, float)) and not isinstance(x, bool)
              and math.isfinite(float(x))]
        out[k] = sum(ok) / len(ok) if len(ok) == len(runs) else None
    thr, off = out.get("throughput_tok_s"), out.get("offered_tok_s")
    if isinstance(thr, float) and isinstance(off, float):
        out["served_fraction"] = thr / off if off > 0 else None
        out["starved"] = is_starved(thr, off)
    return out


def run_sample(spec: dict[str, Any], simulate: Simulator | None = None,
               book: Mapping[str, Profile] | None = None, label_seeds: int = 1) -> dict[str, Any]:
    """Run one sample through the twin (or an injected simulator) and return its dataset row.

    Simulator fields are prefixed ``sim_``; a run that raises an ``Exception`` gives a row with ``error`` set
    (a ``BaseException`` such as KeyboardInterrupt propagates: the sweep stops and can be resumed).
    ``label_seeds`` k > 1 runs the sample with the twin seeds ``seed``, ``seed + 1`` … ``seed + k − 1`` and
    stores their mean (:func:`_mean_of_seeds`: the label noise of a mean of 2 is ~0.77× a single seed's,
    bench/results/label_noise_2026-12-04.md); ``seeds_throughput_tok_s`` keeps each seed's throughput.
    """
    _check_label_seeds(label_seeds)
    sim = simulate or _twin_simulate
    inst, kwargs = sample_instance(spec)
    if book and spec["profile"] in book:  # a user's profile (a shipped one is found by name)
        kwargs["profile"] = book[spec["profile"]]
    row = dict(spec)
    row["error"] = None
    t0 = time.perf_counter()
    runs = []
    try:
        for j in range(label_seeds):
            runs.append(_sim_fields(sim(inst, **{**kwargs, "seed": int(kwargs["seed"]) + j})))
    except Exception as exc:  # one bad run must not kill a long sweep: record it, training skips it
        row["error"] = f"{type(exc).__name__}: {exc}"[:500]
        row["run_s"] = time.perf_counter() - t0
        return row
    elapsed = time.perf_counter() - t0
    out = runs[0] if label_seeds == 1 else _mean_of_seeds(runs)
    for k, v in out.items():
        row[f"sim_{k}"] = v
    if label_seeds > 1:
        row["label_seeds"] = label_seeds
        row["seeds_throughput_tok_s"] = json.dumps([r.get("throughput_tok_s") for r in runs])
    row["run_s"] = elapsed
    return row


def _run_indexed(item: tuple[int, dict[str, Any]], simulate: Simulator | None,
                 book: Mapping[str, Profile] | None = None,
                 label_seeds: int = 1) -> tuple[int, dict[str, Any]]:
    i, spec = item
    return i, run_sample(spec, simulate, book, label_seeds)


def _failed(item: tuple[int, dict[str, Any]], exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The row of a sample whose worker process kept dying."""
    i, spec = item
    return i, {**spec, "error": f"worker died: {type(exc).__name__}: {exc}"[:500], "run_s": float("nan")}


@dataclass(frozen=True)
class SweepStats:
    """What one call of :func:`sweep` did."""

    out_dir: str
    n_samples: int
    runs: int
    skipped_chunks: int
    elapsed_s: float
    workers: int
    backend: str

    @property
    def runs_per_s(self) -> float:
        return self.runs / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def runs_per_s_per_core(self) -> float:
        return self.runs_per_s / max(self.workers, 1)

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": self.out_dir, "n_samples": self.n_samples, "runs": self.runs,
                "skipped_chunks": self.skipped_chunks, "elapsed_s": self.elapsed_s, "workers": self.workers,
                "backend": self.backend, "runs_per_s": self.runs_per_s,
                "runs_per_s_per_core": self.runs_per_s_per_core}


def _read_manifest(out: Path) -> dict[str, Any] | None:
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable sweep manifest ({exc})", source=str(path)) from None


def _write_chunk(out: Path, chunk: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    ordered: list[dict[str, Any]] = sorted(rows, key=lambda r: int(r["sample"]))
    frame = pd.DataFrame(ordered)
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    data = buf.getvalue()
    name = f"chunk-{chunk:05d}.parquet"
    atomic_write_bytes(out / name, data)
    return {"file": name, "rows": len(rows), "sha256": hashlib.sha256(data).hexdigest()}


def sweep(n_samples: int, seed: int, out_dir: str | Path, *, profiles: tuple[str, ...] = DEFAULT_PROFILES,
          duration_s: float = 3600.0, workers: int = 2, backend: str = "local", chunk_size: int = 16,
          quiet: bool = False, simulate: Simulator | None = None, focus: str = "throughput",
          user_profiles: Sequence[Profile] = (), label_seeds: int = 1, batch: str = "sampled") -> SweepStats:
    """Run samples ``0..n_samples-1`` of sweep ``seed`` through the twin into ``out_dir`` (resumable).

    ``simulate``: the simulator (default ``twin.simulate``); a picklable top-level function for pools.
    ``focus``: where the loads are drawn (:func:`surrogate.sampling.draw_sample`): ``throughput`` (the
    default) or ``latency`` (dense where latency SLOs bind).
    ``user_profiles``: profiles of the user's own (e.g. from ``placer twin calibrate``), used for their
    ``model@gpu`` instead of the shipped ones and sampled when ``profiles`` names them (default: only
    them). They are written into the dataset (``profiles/``), so training finds them there.
    ``label_seeds``: twin seeds averaged into each row's labels (:func:`run_sample`; k runs per sample).
    ``batch``: ``sampled`` (``max_num_seqs`` drawn per sample) or ``default`` (vLLM's, as sampler version 5).
    """
    book = {p.name: p for p in user_profiles}
    if book and profiles == DEFAULT_PROFILES:
        profiles = tuple(book)
    if n_samples < 1 or chunk_size < 1 or workers < 1:
        raise InputError("n_samples, chunk_size and workers must be ≥ 1", field="n_samples", value=n_samples)
    _check_label_seeds(label_seeds)
    if batch not in BATCHES:
        raise InputError(f"must be one of {', '.join(BATCHES)} (got {batch!r})", field="batch", value=batch)
    check_backend(backend)  # before the output folder is made
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params: dict[str, Any] = {"seed": int(seed), "chunk_size": int(chunk_size), "profiles": list(profiles),
                              "duration_s": float(duration_s), "sampler_version": SAMPLER_VERSION}
    if book:  # the dataset records which user profiles made it (content hashes)
        params["user_profiles"] = {n: profile_fingerprint(n, p)["profile_sha256"]
                                   for n, p in sorted(book.items())}
    if focus != "throughput":  # recorded only when not the default, so older sweeps still resume
        params["focus"] = focus
    if label_seeds != 1:  # likewise
        params["label_seeds"] = int(label_seeds)
    if batch != "sampled":  # likewise
        params["batch"] = batch
    return _run_chunks(out, params, n_samples,
                       lambda i: draw_sample(seed, i, profiles, duration_s, focus, book, batch),
                       workers=workers,
                       backend=backend, chunk_size=chunk_size, quiet=quiet, simulate=simulate, book=book,
                       label_seeds=label_seeds)


def sweep_specs(specs: Sequence[dict[str, Any]], out_dir: str | Path, *, workers: int = 2,
                backend: str = "local", chunk_size: int = 16, quiet: bool = False,
                simulate: Simulator | None = None, source: str = "", label_seeds: int = 1) -> SweepStats:
    """Run explicit samples (dicts in the form of :func:`surrogate.sampling.draw_sample`'s, e.g. GPUs of
    plans the placer made) through the twin into ``out_dir``: the same chunked, resumable format as
    :func:`sweep`, so training reads both alike. Sample ``i`` is ``specs[i]`` (its ``sample`` key is set to
    ``i``); the manifest records a content hash of the specs, so a resumed run must be given the same list.
    ``source``: a line saying where the specs came from (recorded in the manifest). ``label_seeds``: as in
    :func:`sweep`.
    """
    if not specs or chunk_size < 1 or workers < 1:
        raise InputError("needs at least one sample, and chunk_size and workers ≥ 1", field="specs",
                         value=len(specs))
    _check_label_seeds(label_seeds)
    check_backend(backend)
    rows = [{**spec, "sample": i} for i, spec in enumerate(specs)]
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()[:16]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params: dict[str, Any] = {"specs_sha256": digest, "chunk_size": int(chunk_size), "source": source,
                              "profiles": sorted({str(r["profile"]) for r in rows})}
    if label_seeds != 1:
        params["label_seeds"] = int(label_seeds)
    return _run_chunks(out, params, len(rows), rows.__getitem__, workers=workers, backend=backend,
                       chunk_size=chunk_size, quiet=quiet, simulate=simulate, book={},
                       label_seeds=label_seeds)


def _run_chunks(out: Path, params: dict[str, Any], n_samples: int,
                spec_of: Callable[[int], dict[str, Any]], *, workers: int, backend: str, chunk_size: int,
                quiet: bool, simulate: Simulator | None, book: Mapping[str, Profile],
                label_seeds: int = 1) -> SweepStats:
    """Run samples ``spec_of(0..n_samples-1)`` not yet recorded in ``out``'s manifest, chunk by chunk."""
    manifest = _read_manifest(out) or {"format": DATASET_FORMAT, "params": params, "chunks": {},
                                       "sessions": []}
    if manifest.get("params") != params:
        raise InputError(f"{out} holds a sweep with other parameters ({manifest.get('params')}); "
                         "use another directory", source=str(out / MANIFEST), field="params", value=params)
    n_chunks = (n_samples + chunk_size - 1) // chunk_size
    todo: dict[int, list[int]] = {}
    for c in range(n_chunks):
        idx = list(range(c * chunk_size, min((c + 1) * chunk_size, n_samples)))
        rec = manifest["chunks"].get(str(c))
        if rec and rec.get("rows") == len(idx) and (out / rec["file"]).exists():
            continue
        todo[c] = idx
    skipped = n_chunks - len(todo)
    n_runs = sum(len(v) for v in todo.values())
    if book:  # the user profiles the sweep runs with, kept beside its rows (training finds them there)
        (out / USER_PROFILES).mkdir(exist_ok=True)
    for name, prof in book.items():
        atomic_write_text(out / USER_PROFILES / f"{name}.json", json.dumps(prof.to_dict(), indent=1) + "\n")
    items = ((i, spec_of(i)) for c in sorted(todo) for i in todo[c])
    fn = partial(_run_indexed, simulate=simulate, book=book or None, label_seeds=label_seeds)
    pending: dict[int, list[dict[str, Any]]] = {c: [] for c in todo}
    t0 = time.perf_counter()
    session: dict[str, Any] = {}
    manifest["sessions"].append(session)  # kept up to date per chunk: an interrupted session still counts
    done = 0
    with _progress(quiet, n_runs) as advance:
        for i, row in map_unordered(fn, items, workers=workers, backend=backend,
                                        on_failure=_failed):
            c = i // chunk_size
            pending[c].append(row)
            advance()
            if len(pending[c]) == len(todo[c]):
                done += len(todo[c])
                manifest["chunks"][str(c)] = _write_chunk(out, c, pending.pop(c))
                part = SweepStats(str(out), n_samples, done, skipped, time.perf_counter() - t0, workers,
                                  backend)
                session.update({k: v for k, v in part.to_dict().items() if k != "out_dir"})
                atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    elapsed = time.perf_counter() - t0
    stats = SweepStats(str(out), n_samples, n_runs, skipped, elapsed, workers, backend)
    session.update({k: v for k, v in stats.to_dict().items() if k != "out_dir"})
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return stats


class _progress:
    """Rich progress bar with ETA on stderr, or nothing in quiet mode or when stderr is not a terminal (a
    redirected file or CI log gets no bar, and stdout never does); ``with _progress(q, n) as advance``."""

    def __init__(self, quiet: bool, total: int) -> None:
        self.quiet, self.total = quiet, total
        self.bar: Any = None

    def __enter__(self) -> Callable[[], None]:
        from rich.console import Console

        console = Console(stderr=True)
        if self.quiet or not console.is_terminal:
            return lambda: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), "ETA", TimeRemainingColumn(), transient=False,
                            console=console)
        self.bar.__enter__()
        task = self.bar.add_task("twin runs", total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def chunk_files(dataset_dir: str | Path) -> list[Path]:
    """The recorded chunk files of a sweep directory, in chunk order."""
    out = Path(dataset_dir)
    manifest = _read_manifest(out)
    if manifest is None:
        raise InputError("not a sweep directory (no manifest.json)", source=str(out))
    return [out / manifest["chunks"][c]["file"] for c in sorted(manifest["chunks"], key=int)]


def user_profiles(*dataset_dirs: str | Path) -> dict[str, Profile]:
    """The user profiles a sweep ran with (written by :func:`sweep` into ``profiles/``), by name."""
    book: dict[str, Profile] = {}
    for d in dataset_dirs:
        folder = Path(d) / USER_PROFILES
        for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            prof = Profile.load(f)
            if prof.name in book and book[prof.name] != prof:
                raise InputError(f"two sweeps ran {prof.name} with different profiles", source=str(f),
                                 field="profile", value=prof.name)
            book[prof.name] = prof
    return book


def load_dataset(*dataset_dirs: str | Path) -> pd.DataFrame:
    """All rows of one or more sweep directories, ordered by (directory, sample)."""
    frames = [pd.read_parquet(f) for d in dataset_dirs for f in chunk_files(d)]
    if not frames:
        raise InputError("the sweep holds no finished chunk", source=str(dataset_dirs[0]))
    return pd.concat(frames, ignore_index=True)


def dataset_hash(*dataset_dirs: str | Path) -> str:
    """A content hash of the chunks of one or more sweeps (recorded in model sidecars)."""
    h = hashlib.sha256()
    for d in dataset_dirs:
        for f in chunk_files(d):
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def iter_rows(frame: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """Rows of a dataset frame as sample dicts (for :func:`surrogate.sampling.sample_instance`)."""
    for raw in frame.to_dict("records"):
        rec = {str(k): v for k, v in raw.items()}
        rec["ranks"] = list(rec["ranks"])
        rec["rates"] = list(rec["rates"])
        yield rec

