"""Real request traces: arrival times and request lengths.

Two one-hour production traces ship with the package (Microsoft's Azure LLM inference trace 2023, as
processed by the Vidur simulator): ``azure_conv_2023`` (conversation service, 19,366 requests) and
``azure_code_2023`` (code service, 8,819 requests). A trace file is a CSV with the columns ``arrived_at``
(seconds from the start), ``num_prefill_tokens`` (prompt length) and ``num_decode_tokens`` (generated
length); other columns are ignored.

:func:`load_trace` takes a shipped name or a path to such a CSV and returns an immutable :class:`Trace`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from twin.errors import InputError

TRACE_DIR = "data"
COLUMNS: tuple[str, str, str] = ("arrived_at", "num_prefill_tokens", "num_decode_tokens")
_SHIPPED: tuple[str, ...] = ("azure_code_2023", "azure_conv_2023")


@dataclass(frozen=True, eq=False)
class Trace:
    """An immutable request trace, sorted by arrival time.

    ``arrival_s`` (float64, seconds from the trace start), ``input_tokens`` and ``output_tokens`` (int64, ≥ 1)
    are read-only arrays of equal length. ``span_s`` = last arrival − first arrival (> 0).
    ``name`` is the shipped trace name, or the path the trace was read from.
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
    """Names of the traces shipped inside the package."""
    return _SHIPPED


def load_trace(name_or_path: str | Path) -> Trace:
    """The trace with a shipped name (see :func:`shipped_traces`) or read from a CSV file.

    Raises :class:`InputError` for an unknown name, an unreadable file, missing columns, non-numeric,
    negative or non-finite values, token counts below 1, or fewer than two distinct arrival times.
    """
    key = str(name_or_path)
    if key in _SHIPPED:
        return _load_shipped(key)
    looks_like_path = isinstance(name_or_path, Path) or key.endswith(".csv") or "/" in key or "\\" in key
    if not looks_like_path:
        raise InputError(f"unknown trace (got {key!r}; shipped: {', '.join(_SHIPPED)}, or a CSV path)",
                         field="trace", value=key)
    path = Path(name_or_path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read trace ({exc.__class__.__name__}: {exc})", source=key) from None
    return _parse(text, name=key, source=key)


@cache
def _load_shipped(name: str) -> Trace:
    text = resources.files("twin").joinpath(TRACE_DIR).joinpath(f"{name}.csv").read_text()
    return _parse(text, name=name, source=f"twin/{TRACE_DIR}/{name}.csv")


def _parse(text: str, *, name: str, source: str) -> Trace:
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise InputError("empty trace file (expected a header with columns " + ",".join(COLUMNS) + ")",
                         source=source)
    header = [h.strip() for h in lines[0].split(",")]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise InputError(f"missing column (got header {lines[0].strip()!r})", source=source,
                         field=missing[0], value=lines[0].strip())
    cols = [header.index(c) for c in COLUMNS]
    try:
        data = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, usecols=cols, dtype=np.float64,
                          ndmin=2)
    except ValueError as exc:
        raise InputError(f"not a numeric trace ({' '.join(str(exc).split())})", source=source) from None
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
