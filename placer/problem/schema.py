"""The instance schema, checked strictly: a parsed JSON/YAML document (and an adapters CSV) to an Instance.

Every check raises :class:`~twin.errors.InputError` naming the field (``adapters[3].rank``,
``workload.lengths.output_std``, ``line 7: id`` of a CSV) and the bad value; :func:`instance_from_dict`
attaches the file. The public entry points are re-exported by :mod:`placer.problem.io`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from twin.errors import InputError
from twin.rates import RateProfile
from twin.spec import (
    ALLOWED_RANKS,
    CRITERIA,
    FORMAT_VERSION,
    SLO_KEYS,
    Adapter,
    Instance,
    Lengths,
    ServerSettings,
    Slo,
    Workload,
)
from twin.traces import is_trace_name, load_trace, public_traces, shipped_traces

CSV_COLUMNS = ("id", "rank", "rate_rps")
NORMAL_KEYS = ("input_mean", "input_std", "output_mean", "output_std")
_TOP = ("format_version", "name", "model", "gpu", "server", "workload", "slo", "adapters", "adapters_csv",
        "rate_profile")
_RATE_PROFILE = ("period_s", "periods", "adapters", "trace", "n_periods")
_SERVER = ("max_num_batched_tokens", "max_num_seqs", "max_model_len", "gpu_memory_utilization")
_WORKLOAD = ("duration_s", "arrival", "cv", "trace", "lengths")
_NORMAL = NORMAL_KEYS
_ADAPTER = CSV_COLUMNS


# --- small checkers (each raises an InputError that names the field) ------------------------------------
def _err(field: str, message: str, value: Any = None, *, show: bool = True) -> InputError:
    detail = f"{message} (got {value!r})" if show else message
    return InputError(detail, field=field, value=value)


def _mapping(value: Any, field: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _err(field, "must be a mapping", value)
    for key in value:
        if key not in allowed:
            name = key if isinstance(key, str) and key.isprintable() else repr(key)  # one line, always
            where = f"{field}.{name}" if field else name
            raise _err(where, f"unknown field (allowed: {', '.join(allowed)})", key)
    return value


def _str(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _err(field, "must be a non-empty string", value)
    return value


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _err(field, "must be an integer", value)
    if value <= 0:
        raise _err(field, "must be positive", value)
    return value


def _float(value: Any, field: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _err(field, "must be a number", value)
    x = float(value)
    if x != x or x in (float("inf"), float("-inf")):
        raise _err(field, "must be finite", value)
    if x < 0 or (x == 0 and not allow_zero):
        raise _err(field, "must be non-negative" if allow_zero else "must be positive", value)
    return x


def _trace_ref(value: Any, field: str, base: Path) -> str:
    name = _str(value, field)
    if is_trace_name(name):
        try:
            load_trace(name)  # a public trace must be found now, with a hint on where to get it
        except InputError as exc:
            raise _err(field, exc.detail, value, show=False) from None
        return name
    path = Path(name) if Path(name).is_absolute() else base / name
    if not path.is_file():
        known = ", ".join(shipped_traces() + public_traces())
        raise _err(field, f"is neither a known trace ({known}) nor a readable file", value)
    return str(path.resolve())


def _rate_profile(value: Any, ids: set[str]) -> RateProfile:
    d = _mapping(value, "rate_profile", _RATE_PROFILE)
    per = d.get("adapters", {})
    if not isinstance(per, Mapping):
        raise _err("rate_profile.adapters", "must be a mapping of adapter id to multipliers", per)
    for a in per:
        if a not in ids:
            raise _err(f"rate_profile.adapters.{a}", "is not an adapter of this instance", a)
    return RateProfile(period_s=d.get("period_s", 3600.0), periods=d.get("periods"),
                       adapters=tuple((str(a), m) for a, m in per.items()), trace=d.get("trace"),
                       n_periods=d.get("n_periods"))


# --- dict -> Instance -------------------------------------------------------------------------------------
def _server(value: Any) -> ServerSettings:
    d = _mapping(value, "server", _SERVER)
    kw: dict[str, Any] = {}
    for key in ("max_num_batched_tokens", "max_num_seqs"):
        if key in d:
            kw[key] = _int(d[key], f"server.{key}")
    if d.get("max_model_len") is not None:
        kw["max_model_len"] = _int(d["max_model_len"], "server.max_model_len")
    if "gpu_memory_utilization" in d:
        kw["gpu_memory_utilization"] = _float(d["gpu_memory_utilization"], "server.gpu_memory_utilization")
    return ServerSettings(**kw)


def _lengths(value: Any, base: Path) -> Lengths:
    if isinstance(value, str):
        if value != "sharegpt":
            raise _err("workload.lengths", "must be 'sharegpt', {trace: NAME} or "
                       "{input_mean, input_std, output_mean, output_std}", value)
        return Lengths()
    if isinstance(value, Mapping) and "trace" in value:
        d = _mapping(value, "workload.lengths", ("trace",))
        return Lengths(kind="trace", trace=_trace_ref(d["trace"], "workload.lengths.trace", base))
    d = _mapping(value, "workload.lengths", _NORMAL + ("trace",))
    kw: dict[str, Any] = {}
    for key in _NORMAL:
        if key not in d:
            raise _err(f"workload.lengths.{key}", "is missing", show=False)
        kw[key] = _float(d[key], f"workload.lengths.{key}", allow_zero=key.endswith("std"))
    return Lengths(kind="normal", **kw)


def _workload(value: Any, base: Path) -> Workload:
    d = _mapping(value, "workload", _WORKLOAD)
    kw: dict[str, Any] = {}
    if "duration_s" in d:
        kw["duration_s"] = _float(d["duration_s"], "workload.duration_s")
    if "arrival" in d:
        kw["arrival"] = _str(d["arrival"], "workload.arrival")
    if "cv" in d:
        kw["cv"] = _float(d["cv"], "workload.cv")
    if "trace" in d:
        kw["trace"] = _trace_ref(d["trace"], "workload.trace", base)
    if "lengths" in d:
        kw["lengths"] = _lengths(d["lengths"], base)
    return Workload(**kw)


def slo_from_dict(value: Any, base: Slo | None = None, *, prefix: str = "slo") -> Slo:
    """An ``slo`` section (every key optional) on top of ``base`` (default: the default :class:`Slo`).

    A key left out keeps the base value; a latency key set to null removes that bound. Field names in errors
    are ``<prefix>.<key>`` (``slo.ttft_p99_s``).
    """
    d = _mapping(value, prefix, SLO_KEYS)
    kw: dict[str, Any] = {}
    for key, v in d.items():
        where = f"{prefix}.{key}"
        if key == "criterion":
            if v not in CRITERIA:
                raise _err(where, f"must be one of {list(CRITERIA)}", v)
            kw[key] = v
        elif key == "min_served_fraction":
            x = _float(v, where, allow_zero=True)
            if x > 1:
                raise _err(where, "must be in [0, 1]", v)
            kw[key] = x
        elif v is not None:
            kw[key] = _float(v, where)
        else:
            kw[key] = None
    return (base or Slo()).replace(**kw)


#: Command-line spellings of the SLO keys (``--slo-ttft-p99 2`` overrides ``slo.ttft_p99_s``).
SLO_FLAGS: dict[str, str] = {
    "ttft_p50_s": "--slo-ttft-p50", "ttft_p95_s": "--slo-ttft-p95", "ttft_p99_s": "--slo-ttft-p99",
    "tpot_p50_ms": "--slo-tpot-p50", "tpot_p95_ms": "--slo-tpot-p95", "tpot_p99_ms": "--slo-tpot-p99",
    "min_served_fraction": "--slo-min-served", "criterion": "--criterion",
}


def slo_with_options(base: Slo, options: Mapping[str, Any]) -> Slo:
    """``base`` overridden by command-line values (keys of :data:`SLO_FLAGS`; None = not given).

    Latency values are numbers (seconds for TTFT, milliseconds for TPOT) or ``none`` to remove that bound;
    errors name the flag (``--slo-ttft-p99: must be positive (got -1.0)``).
    """
    kw: dict[str, Any] = {}
    for key, raw in options.items():
        if key not in SLO_FLAGS:
            raise KeyError(key)
        if raw is None:
            continue
        flag = SLO_FLAGS[key]
        if key == "criterion":
            if raw not in CRITERIA:
                raise _err(flag, f"must be one of {list(CRITERIA)}", raw)
            kw[key] = raw
            continue
        if isinstance(raw, str):
            text = raw.strip().lower()
            if text in ("none", "off") and key != "min_served_fraction":
                kw[key] = None
                continue
            try:
                raw = float(text)
            except ValueError:
                raise _err(flag, "must be a number" + ("" if key == "min_served_fraction" else " or 'none'"),
                           raw) from None
        x = _float(raw, flag, allow_zero=key == "min_served_fraction")
        if key == "min_served_fraction" and x > 1:
            raise _err(flag, "must be in [0, 1]", raw)
        kw[key] = x
    return base.replace(**kw) if kw else base


def _adapter(item: Any, field: str) -> Adapter:
    d = _mapping(item, field, _ADAPTER)
    for key in _ADAPTER:
        if key not in d:
            raise _err(f"{field}.{key}", "is missing", show=False)
    rank = d["rank"]
    if isinstance(rank, bool) or not isinstance(rank, int) or rank not in ALLOWED_RANKS:
        raise _err(f"{field}.rank", f"must be one of {list(ALLOWED_RANKS)}", rank)
    return Adapter(_str(d["id"], f"{field}.id"), rank, _float(d["rate_rps"], f"{field}.rate_rps"))


def _adapters_inline(value: Any) -> list[Adapter]:
    if not isinstance(value, list):
        raise _err("adapters", "must be a list of {id, rank, rate_rps}", value)
    out = [_adapter(item, f"adapters[{i}]") for i, item in enumerate(value)]
    _check_unique(out, "adapters[{}].id")
    return out


def _check_unique(adapters: list[Adapter], field: str) -> None:
    seen: set[str] = set()
    for i, a in enumerate(adapters):
        if a.id in seen:
            raise _err(field.format(i), "is a duplicate adapter id", a.id)
        seen.add(a.id)


def read_adapters_csv(path: str | Path) -> list[Adapter]:
    """Adapters from a CSV with the header ``id,rank,rate_rps`` (any order); errors name the line."""
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read adapters CSV ({why(exc)})", source=str(p)) from None
    rows = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(rows, [])]
    for col in header:
        if col not in CSV_COLUMNS:
            raise InputError(f"unknown column (allowed: {', '.join(CSV_COLUMNS)}) (got {col!r})",
                             source=str(p), field="line 1", value=col)
    for col in CSV_COLUMNS:
        if col not in header:
            raise InputError("is missing", source=str(p), field=f"line 1: column {col}")
    i_id, i_rank, i_rate = (header.index(c) for c in CSV_COLUMNS)
    out: list[Adapter] = []
    seen: set[str] = set()
    for lineno, row in enumerate(rows, start=2):
        if not row:
            continue
        where = f"line {lineno}"
        if len(row) != len(header):
            raise InputError(f"expected {len(header)} fields (got {len(row)})", source=str(p), field=where,
                             value=row)
        try:
            ident = _str(row[i_id], f"{where}: id")
            rank = _parse_csv_number(row[i_rank], f"{where}: rank", int)
            if rank not in ALLOWED_RANKS:
                raise _err(f"{where}: rank", f"must be one of {list(ALLOWED_RANKS)}", rank)
            rate = _float(_parse_csv_number(row[i_rate], f"{where}: rate_rps", float), f"{where}: rate_rps")
            if ident in seen:
                raise _err(f"{where}: id", "is a duplicate adapter id", ident)
            seen.add(ident)
            out.append(Adapter(ident, rank, rate))
        except InputError as exc:
            raise exc.with_source(str(p)) from None
    if not out:
        raise InputError("lists no adapters (need at least one row)", source=str(p))
    return out


def why(exc: Exception) -> str:
    """A short, one-line reason for an OS or decoding error."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"{exc.__class__.__name__}: {' '.join(str(reason).split())}"


def _parse_csv_number(text: str, field: str, kind: type) -> Any:
    try:
        return kind(text.strip())
    except ValueError:
        raise _err(field, f"must be {'an integer' if kind is int else 'a number'}", text) from None


def instance_from_dict(data: Any, source: str = "<instance>", *, base_dir: str | Path | None = None
                       ) -> Instance:
    """Validate a parsed instance document and build the :class:`Instance`.

    ``source`` names the document in error messages; ``base_dir`` resolves relative paths inside it
    (default: the directory of ``source``).
    """
    base = Path(base_dir) if base_dir is not None else Path(source).parent
    try:
        if data is None:
            raise _err("", "is empty (expected a mapping with name, model, gpu, adapters)", show=False)
        if not isinstance(data, Mapping):
            raise _err("", "must be a mapping with name, model, gpu, adapters", type(data).__name__)
        d = _mapping(data, "", _TOP)
        for key in ("name", "model", "gpu"):
            if key not in d:
                raise _err(key, "is missing", show=False)
        if "adapters" not in d and "adapters_csv" not in d:
            raise _err("adapters", "is missing (give adapters or adapters_csv)", show=False)
        if "adapters" in d and "adapters_csv" in d:
            raise _err("adapters_csv", "cannot be given together with adapters", d["adapters_csv"])
        version = d.get("format_version", FORMAT_VERSION)
        if isinstance(version, bool) or version != FORMAT_VERSION:
            raise _err("format_version", f"must be {FORMAT_VERSION}", version)
        kw: dict[str, Any] = {key: _str(d[key], key) for key in ("name", "model", "gpu")}
        if "server" in d:
            kw["server"] = _server(d["server"])
        if "workload" in d:
            kw["workload"] = _workload(d["workload"], base)
        if "slo" in d:
            kw["slo"] = slo_from_dict(d["slo"])
        if "adapters" in d:
            adapters = _adapters_inline(d["adapters"])
        else:
            adapters = read_adapters_csv(base / _str(d["adapters_csv"], "adapters_csv"))
        if "rate_profile" in d:
            kw["rate_profile"] = _rate_profile(d["rate_profile"], {a.id for a in adapters})
        return Instance(adapters=tuple(adapters), **kw)
    except InputError as exc:
        if exc.source:
            raise
        raise exc.with_source(source) from None

