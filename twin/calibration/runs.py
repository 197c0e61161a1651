"""Run records: real (or harness-collected) vLLM runs, read from the calibration CSV schema.

A :class:`RunRecord` is one row of ``real_runs.csv`` (family ``dt_real``) or of a CSV written by
``placer twin collect``: the server configuration (``max_loras``, ``max_cpu_loras`` = adapters served,
``max_lora_rank``), the exact workload composition (``rates_composition`` such as ``0.025x42|0.05x43|0.1x43``:
rate in req/s × number of adapters; ``ranks_composition`` such as ``8x64|16x64``) and what was measured
(throughput, offered load, starvation, OOM, ITL, TTFT, mean running/waiting, ...).

:func:`load_runs` reads and validates such a CSV; :meth:`RunRecord.instance` builds the twin
:class:`~twin.spec.Instance` of a run, pairing ranks and rates at random (seeded) as the real client did.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from twin.errors import InputError
from twin.spec import Adapter, Instance, ServerSettings, Workload

#: Statuses that describe a completed measurement (ok) or a server that could not start (oom).
USABLE_STATUSES: tuple[str, ...] = ("ok", "oom")
REQUIRED_COLUMNS: tuple[str, ...] = (
    "model", "status", "rates_composition", "ranks_composition", "max_loras", "max_cpu_loras",
    "max_lora_rank",
)
#: The nominal measurement window of the calibration runs (the client's arrival window).
DEFAULT_WINDOW_S = 3600.0


def parse_composition(text: str, *, kind: type = float, field: str = "rates_composition",
                      source: str | None = None) -> tuple[tuple[Any, int], ...]:
    """Parse ``'0.025x42|0.05x43'`` into ``((0.025, 42), (0.05, 43))`` (value, count)."""
    out: list[tuple[Any, int]] = []
    try:
        for part in str(text).split("|"):
            value, count = part.strip().rsplit("x", 1)
            v = kind(float(value)) if kind is int else kind(value)
            c = int(count)
            if c <= 0 or (isinstance(v, float) and not v > 0):
                raise ValueError(part)
            out.append((v, c))
    except (ValueError, TypeError):
        raise InputError(f"not a composition like '0.1x4|0.05x4' (got {text!r})", source=source,
                         field=field, value=text) from None
    if not out:
        raise InputError(f"empty composition (got {text!r})", source=source, field=field, value=text)
    return tuple(out)


def format_composition(values: Sequence[float] | np.ndarray) -> str:
    """The composition string of a list of per-adapter values (``'8x2|16x1'``), sorted by value."""
    uniq, counts = np.unique(np.asarray(values), return_counts=True)
    return "|".join(f"{_fmt(v)}x{int(c)}" for v, c in zip(uniq, counts, strict=True))


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{float(v):g}"


def _expand(comp: tuple[tuple[Any, int], ...]) -> list[Any]:
    return [v for v, c in comp for _ in range(c)]


@dataclass(frozen=True)
class RunRecord:
    """One measured run. Measurements are NaN when not recorded (and for OOM runs)."""

    model: str
    gpu: str
    workload: str
    status: str
    rates_composition: str
    ranks_composition: str
    max_loras: int
    max_cpu_loras: int
    max_lora_rank: int
    run_name: str = ""
    source: str = ""
    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 2048
    window_s: float = DEFAULT_WINDOW_S
    duration_s: float = math.nan
    completed: float = math.nan
    tokens_in: float = math.nan
    tokens_out: float = math.nan
    throughput_total: float = math.nan
    ideal_throughput: float = math.nan
    starved_real: float = math.nan  # 1.0 / 0.0 / NaN
    dt_throughput: float = math.nan
    dt_arrivals: float = math.nan
    mean_itl_ms: float = math.nan
    mean_ttft_ms: float = math.nan
    median_itl_ms: float = math.nan
    median_ttft_ms: float = math.nan
    p99_itl_ms: float = math.nan
    p99_ttft_ms: float = math.nan
    mean_running: float = math.nan
    mean_waiting: float = math.nan
    mean_kv_usage: float = math.nan
    preemptions: float = math.nan
    kv_cache_tokens: float = math.nan
    mean_tokens_per_request: float = math.nan
    npy_samples: float = math.nan  # samples of the client's metrics poller (time series of the gauges)
    npy_span_s: float = math.nan   # the time they span

    # --- derived -------------------------------------------------------------------------------------
    @property
    def oom(self) -> bool:
        return self.status == "oom"

    @property
    def starved(self) -> bool:
        """Starved as measured (throughput < 0.9 × offered); False for OOM runs."""
        return bool(self.starved_real == 1.0)

    @property
    def polled(self) -> bool:
        """Whether the run recorded the client's metrics-poller samples (at least one interval)."""
        return bool(self.npy_samples > 1 and self.npy_span_s > 0)

    @property
    def rates(self) -> tuple[tuple[float, int], ...]:
        return parse_composition(self.rates_composition, field="rates_composition")

    @property
    def ranks(self) -> tuple[tuple[int, int], ...]:
        return parse_composition(self.ranks_composition, kind=int, field="ranks_composition")

    @property
    def n_adapters(self) -> int:
        return sum(c for _, c in self.rates)

    @property
    def total_rate_rps(self) -> float:
        return float(sum(r * c for r, c in self.rates))

    @property
    def key(self) -> str:
        """A short unique-ish label: model/workload/slots/served/rank."""
        return f"{self.model}/{self.workload}/{self.max_loras}/{self.max_cpu_loras}/{self.max_lora_rank}"

    def instance(self, *, seed: int = 0, window_s: float | None = None, gpu: str | None = None) -> Instance:
        """The twin instance of this run: one adapter per composition entry, rank and rate paired at random.

        The real client assigned rates round-robin over a shuffled adapter list and ranks round-robin,
        independently; a seeded random permutation of the rates reproduces that pairing in distribution.
        """
        rates = _expand(self.rates)
        ranks = _expand(self.ranks)
        if len(rates) != len(ranks):
            raise InputError(f"rates and ranks compositions count different adapters ({len(rates)} vs "
                             f"{len(ranks)})", field="ranks_composition", value=self.ranks_composition)
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(rates))
        width = len(str(len(rates) - 1))
        adapters = tuple(Adapter(id=f"a{i:0{width}d}", rank=int(ranks[i]), rate_rps=float(rates[j]))
                         for i, j in enumerate(perm))
        return Instance(
            name=self.run_name or self.key, model=self.model, gpu=gpu or self.gpu, adapters=adapters,
            server=ServerSettings(max_num_batched_tokens=int(self.max_num_batched_tokens),
                                  max_num_seqs=int(self.max_num_seqs)),
            workload=Workload(duration_s=float(window_s or self.window_s)),
        )


_FLOAT_FIELDS = {f.name for f in fields(RunRecord) if f.type == "float"}
_RENAMES = {"starved": "starved_real"}


def _gpu_name(raw: Any, default: str) -> str:
    text = str(raw).strip()
    low = text.lower()
    if "h100" in low and "64" in low and "(" in text:  # the calibration set's long description
        return "h100-64gb"
    return text if text and text.lower() != "nan" and " " not in text else default


def _as_float(v: Any) -> float:
    if v is None or (isinstance(v, str) and v.strip() == ""):
        return math.nan
    if isinstance(v, (bool, np.bool_)):
        return 1.0 if v else 0.0
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return 1.0 if v.strip().lower() == "true" else 0.0
    return float(v)


def record_from_row(row: Mapping[Any, Any], *, source: str = "<runs>",
                    default_gpu: str = "h100-64gb") -> RunRecord:
    """One :class:`RunRecord` from a CSV row (a mapping of column name to value)."""
    for col in REQUIRED_COLUMNS:
        if col not in row or row[col] is None or (isinstance(row[col], float) and math.isnan(row[col])):
            raise InputError("missing value", source=source, field=col, value=row.get(col))
    kw: dict[str, Any] = {}
    for name in ("max_loras", "max_cpu_loras", "max_lora_rank", "max_num_batched_tokens", "max_num_seqs"):
        value = row.get(name)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            try:
                kw[name] = int(float(row[name]))
            except (TypeError, ValueError):
                raise InputError("must be an integer", source=source, field=name, value=row[name]) from None
    for col, value in row.items():
        name = _RENAMES.get(col, col)
        if name in _FLOAT_FIELDS:
            try:
                kw[name] = _as_float(value)
            except (TypeError, ValueError):
                raise InputError("must be a number", source=source, field=col, value=value) from None
    for col in ("total_time_s", "duration_s"):  # the nominal window (dt_real), else the measured one
        value = row.get(col)
        if value is not None and not (isinstance(value, float) and math.isnan(value)) and float(value) > 0:
            kw["window_s"] = float(value)
            break
    rec = RunRecord(
        model=str(row["model"]), gpu=_gpu_name(row.get("gpu", ""), default_gpu),
        workload=str(row.get("workload") or ""), status=str(row["status"]),
        rates_composition=str(row["rates_composition"]), ranks_composition=str(row["ranks_composition"]),
        run_name=str(row.get("run_name") or ""), source=str(row.get("source") or ""), **kw,
    )
    try:
        n_rates, n_ranks = rec.n_adapters, sum(c for _, c in rec.ranks)
    except InputError as exc:
        raise exc.with_source(source) from None
    if n_rates != n_ranks:
        raise InputError(f"rates and ranks compositions count different adapters ({n_rates} vs {n_ranks})",
                         source=source, field="ranks_composition", value=rec.ranks_composition)
    return rec


def load_runs(path: str | Path, *, model: str | None = None, source: str | None = "dt_real",
              statuses: Sequence[str] = USABLE_STATUSES, default_gpu: str = "h100-64gb") -> list[RunRecord]:
    """Read run records from a calibration-schema CSV.

    Rows are kept when their ``source`` column (if any) equals ``source`` (None keeps all), their ``model``
    equals ``model`` (None keeps all) and their ``status`` is in ``statuses``.
    """
    import pandas as pd

    p = Path(path)
    try:
        df = pd.read_csv(p, low_memory=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read runs CSV ({exc})", source=str(p)) from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"missing columns {missing}", source=str(p), field=missing[0])
    if source is not None and "source" in df.columns:
        df = df[df["source"] == source]
    if model is not None:
        df = df[df["model"] == model]
    df = df[df["status"].isin(list(statuses))]
    df = df.astype(object).where(df.notna(), None)
    return [record_from_row(row, source=str(p), default_gpu=default_gpu) for row in df.to_dict("records")]


def runs_frame(runs: Sequence[RunRecord]) -> Any:
    """A pandas DataFrame with one row per run (all fields plus ``oom``, ``starved``, ``n_adapters``)."""
    import pandas as pd

    rows = []
    for r in runs:
        d = {f.name: getattr(r, f.name) for f in fields(r)}
        d.update(oom=r.oom, starved=r.starved, n_adapters=r.n_adapters, key=r.key)
        rows.append(d)
    return pd.DataFrame(rows)
