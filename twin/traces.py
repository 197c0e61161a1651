"""Request traces: arrival times and request lengths.

A trace is named in one of three ways:

- a **public trace** name, ``azure_conv_2023`` or ``azure_code_2023``: Microsoft's Azure LLM inference trace
  2023 (conversation service, 19,366 requests; code service, 8,819 requests). It is not shipped: it is read
  from the traces folder that :mod:`twin.external` finds (``$PLACER_TRACES_DIR``, ``$PLACER_SHARED_DIR``, or
  the ``shared`` folder next to a source checkout), as Vidur's processed file (``azure_conv_2023.csv``) or
  as the original download from https://github.com/Azure/AzurePublicDataset
  (``AzureLLMInferenceTrace_conv.csv``); when absent, a one-line :class:`InputError` says so;
- a **trace-like** name, ``azure-like-conv`` or ``azure-like-code`` (shipped, see :mod:`twin.tracelike`):
  the seed-:data:`TRACELIKE_SEED` sample of a generator whose parameters were measured on the public trace;
- a **path** to a CSV with the columns ``arrived_at`` (seconds from the start), ``num_prefill_tokens``
  (prompt length) and ``num_decode_tokens`` (generated length), or the original Azure columns
  ``TIMESTAMP`` (date and time), ``ContextTokens`` and ``GeneratedTokens``; other columns are ignored.

:func:`load_trace` takes any of them and returns an immutable :class:`Trace`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from twin.errors import InputError
from twin.external import data_file
from twin.tracelike import generate_arrays, load_tracelike, tracelike_names

COLUMNS: tuple[str, str, str] = ("arrived_at", "num_prefill_tokens", "num_decode_tokens")
AZURE_COLUMNS: tuple[str, str, str] = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
PUBLIC_TRACES: dict[str, tuple[str, ...]] = {  # name -> file names looked for in the traces folder
    "azure_code_2023": ("azure_code_2023.csv", "AzureLLMInferenceTrace_code.csv"),
    "azure_conv_2023": ("azure_conv_2023.csv", "AzureLLMInferenceTrace_conv.csv"),
}
TRACELIKE_SEED = 0


@dataclass(frozen=True, eq=False)
class Trace:
    """An immutable request trace, sorted by arrival time.

    ``arrival_s`` (float64, seconds from the trace start), ``input_tokens`` and ``output_tokens`` (int64, ≥ 1)
    are read-only arrays of equal length. ``span_s`` = last arrival − first arrival (> 0).
    ``name`` is the trace name (public or trace-like), or the path the trace was read from.
    """

    name: str
    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray

    @property
    def n_requests(self) -> int:
        return int(self.arrival_s.shape[0])

    @property
    def span_s(self) -> float:
        return float(self.arrival_s[-1] - self.arrival_s[0])

    @property
    def rate_rps(self) -> float:
        """Mean request rate over the span: requests / span_s."""
        return self.n_requests / self.span_s

    def __len__(self) -> int:
        return self.n_requests


def shipped_traces() -> tuple[str, ...]:
    """Names of the traces that work anywhere: the shipped trace-like workloads (:mod:`twin.tracelike`)."""
    return tracelike_names()


def public_traces() -> tuple[str, ...]:
    """Names of the public traces read from the external traces folder (:mod:`twin.external`)."""
    return tuple(PUBLIC_TRACES)


def is_trace_name(ref: str) -> bool:
    """Whether ``ref`` is a trace name (shipped trace-like or public) rather than a path."""
    return ref in PUBLIC_TRACES or ref in tracelike_names()


def load_trace(name_or_path: str | Path) -> Trace:
    """The trace with a public or trace-like name (see the module docstring) or read from a CSV file.

    Raises :class:`InputError` for an unknown name, a public trace that is not found, an unreadable file,
    missing columns, non-numeric, negative or non-finite values, token counts below 1, or fewer than two
    distinct arrival times.
    """
    key = str(name_or_path)
    if key in tracelike_names():
        return _tracelike(key)
    if key in PUBLIC_TRACES:
        try:
            path = data_file("traces", *PUBLIC_TRACES[key])
        except InputError as exc:
            raise InputError(f"{key} is not shipped: {exc.detail}", field="trace", value=key) from None
        return _load_file(str(path), path.stat().st_mtime_ns, key)
    looks_like_path = isinstance(name_or_path, Path) or key.endswith(".csv") or "/" in key or "\\" in key
    if not looks_like_path:
        known = ", ".join(tracelike_names() + public_traces())
        raise InputError(f"unknown trace (got {key!r}; known: {known}, or a CSV path)",
                         field="trace", value=key)
    path = Path(name_or_path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read trace ({exc.__class__.__name__}: {exc})", source=key) from None
    return _parse(text, name=key, source=key)


@cache
def _tracelike(name: str) -> Trace:
    arrival, inp, out = generate_arrays(load_tracelike(name), TRACELIKE_SEED)
    for a in (arrival, inp, out):
        a.setflags(write=False)
    return Trace(name=name, arrival_s=arrival, input_tokens=inp, output_tokens=out)


@cache
def _load_file(path: str, mtime_ns: int, name: str) -> Trace:
    """A public trace file, read once per (path, modification time)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read trace ({exc.__class__.__name__}: {exc})", source=path) from None
    return _parse(text, name=name, source=path)


def _azure_columns(text: str, header: list[str], source: str) -> np.ndarray:
    """The original Azure layout (date-time TIMESTAMP) as rows of (seconds from the first, prompt, output)."""
    cols = [header.index(c) for c in AZURE_COLUMNS]
    rows = list(csv.reader(io.StringIO(text)))[1:]
    rows = [r for r in rows if r]
    try:
        stamps = np.array([r[cols[0]].strip() for r in rows], dtype="datetime64[ns]")
        tokens = np.array([[float(r[cols[1]]), float(r[cols[2]])] for r in rows], dtype=np.float64)
    except (ValueError, IndexError) as exc:
        detail = " ".join(str(exc).split())
        raise InputError(f"not a readable Azure trace ({detail})", source=source) from None
    if not rows:
        return np.empty((0, 3))
    seconds = (stamps - stamps.min()).astype(np.int64) / 1e9
    return np.column_stack((seconds, tokens))


def _parse(text: str, *, name: str, source: str) -> Trace:
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise InputError("empty trace file (expected a header with columns " + ",".join(COLUMNS) + ")",
                         source=source)
    header = [h.strip() for h in lines[0].split(",")]
    missing = [c for c in COLUMNS if c not in header]
    if missing and all(c in header for c in AZURE_COLUMNS):
        return _checked(_azure_columns(text, header, source), name, source)
    if missing:
        raise InputError(f"missing column (got header {lines[0].strip()!r})", source=source,
                         field=missing[0], value=lines[0].strip())
    cols = [header.index(c) for c in COLUMNS]
    try:
        data = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, usecols=cols, dtype=np.float64,
                          ndmin=2)
    except ValueError as exc:
        raise InputError(f"not a numeric trace ({' '.join(str(exc).split())})", source=source) from None
    return _checked(data, name, source)


def _checked(data: np.ndarray, name: str, source: str) -> Trace:
    if data.shape[0] < 2:
        raise InputError(f"needs at least two requests (got {data.shape[0]})", source=source)
    for j, col in enumerate(COLUMNS):
        values = data[:, j]
        bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
        rule = "must be finite and non-negative"
        if not bad.size and j > 0:
            bad = np.flatnonzero((values < 1) | (values != np.round(values)))
            rule = "must be an integer ≥ 1"
        if bad.size:
            v = float(values[bad[0]])
            raise InputError(f"{rule} (got {v:g} on line {bad[0] + 2})", source=source, field=col, value=v)
    order = np.argsort(data[:, 0], kind="stable")
    data = data[order]
    arrival = np.ascontiguousarray(data[:, 0])
    if arrival[-1] <= arrival[0]:
        raise InputError("needs a positive span (all arrivals at the same time)", source=source,
                         field="arrived_at", value=float(arrival[0]))
    inp = data[:, 1].astype(np.int64)
    out = data[:, 2].astype(np.int64)
    for a in (arrival, inp, out):
        a.setflags(write=False)
    return Trace(name=name, arrival_s=arrival, input_tokens=inp, output_tokens=out)
