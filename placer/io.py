"""Instance files: read and write the one versioned schema (JSON or YAML), adapters inline or in a CSV.

The schema (``format_version: 1``; see README "Instance format")::

    format_version: 1                 # optional on read, always written
    name: example                     # required
    model: llama-3.1-8b-instruct      # required, a shipped profile
    gpu: h100-64gb                    # required, a shipped profile
    server: {max_num_batched_tokens, max_num_seqs, max_model_len, gpu_memory_utilization}   # optional
    workload:                         # optional
      duration_s: 3600.0
      arrival: poisson                # poisson | gamma (needs cv) | unpredictable | trace (needs trace)
      cv: 2.0                         # only with arrival: gamma
      trace: azure_conv_2023          # only with arrival: trace (shipped name or CSV path)
      lengths: sharegpt               # or {input_mean, input_std, output_mean, output_std} or {trace: NAME}
    adapters: [{id, rank, rate_rps}, ...]    # or adapters_csv: FILE (columns id,rank,rate_rps)

Reading is strict: unknown or missing fields, wrong types and out-of-range values raise
:class:`~twin.errors.InputError` naming the file, the field and the value. Paths inside the file
(``adapters_csv``, trace CSVs) are relative to the instance file. Writing is canonical: reading what was
written gives an equal :class:`~twin.spec.Instance`, and writing what was read gives the same bytes.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from twin._io import atomic_write_text
from twin.errors import InputError
from twin.spec import ALLOWED_RANKS, FORMAT_VERSION, Adapter, Instance, Lengths, ServerSettings, Workload
from twin.traces import shipped_traces

CSV_THRESHOLD = 200  # YAML files with more adapters get their adapters in a CSV beside them
CSV_COLUMNS = ("id", "rank", "rate_rps")

_TOP = ("format_version", "name", "model", "gpu", "server", "workload", "adapters", "adapters_csv")
_SERVER = ("max_num_batched_tokens", "max_num_seqs", "max_model_len", "gpu_memory_utilization")
_WORKLOAD = ("duration_s", "arrival", "cv", "trace", "lengths")
_NORMAL = ("input_mean", "input_std", "output_mean", "output_std")
_ADAPTER = CSV_COLUMNS

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BaseDumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


# --- small checkers (each raises an InputError that names the field) ------------------------------------
def _err(field: str, message: str, value: Any = None, *, show: bool = True) -> InputError:
    detail = f"{message} (got {value!r})" if show else message
    return InputError(detail, field=field, value=value)


def _mapping(value: Any, field: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _err(field, "must be a mapping", value)
    for key in value:
        if key not in allowed:
            where = f"{field}.{key}" if field else str(key)
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
    if name in shipped_traces():
        return name
    path = Path(name) if Path(name).is_absolute() else base / name
    if not path.is_file():
        raise _err(field, f"is neither a shipped trace ({', '.join(shipped_traces())}) nor a readable file",
                   value)
    return str(path.resolve())


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
        raise InputError(f"cannot read adapters CSV ({_why(exc)})", source=str(p)) from None
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


def _why(exc: Exception) -> str:
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
        if "adapters" in d:
            adapters = _adapters_inline(d["adapters"])
        else:
            adapters = read_adapters_csv(base / _str(d["adapters_csv"], "adapters_csv"))
        return Instance(adapters=tuple(adapters), **kw)
    except InputError as exc:
        if exc.source:
            raise
        raise exc.with_source(source) from None


def read_instance(path: str | Path) -> Instance:
    """Read and validate an instance file (``.json``; anything else is read as YAML)."""
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read instance file ({_why(exc)})", source=str(p)) from None
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
                             source=str(p)) from None
    else:
        try:
            data = yaml.load(text, Loader=_Loader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            problem = " ".join(str(problem).split())
            raise InputError(f"invalid YAML ({where}{problem})", source=str(p)) from None
    return instance_from_dict(data, str(p))


# --- Instance -> dict / file -------------------------------------------------------------------------------
def _trace_out(ref: str, base: Path | None) -> str:
    if ref in shipped_traces() or base is None or not Path(ref).is_absolute():
        return ref
    return os.path.relpath(ref, base.resolve())


def instance_to_dict(instance: Instance, *, adapters_csv: str | None = None,
                     base_dir: str | Path | None = None) -> dict[str, Any]:
    """The canonical document of ``instance`` (numbers as floats/ints, defaults written out).

    With ``adapters_csv`` the document names that file instead of listing the adapters; ``base_dir`` makes
    absolute trace paths relative to it.
    """
    base = Path(base_dir) if base_dir is not None else None
    s = instance.server
    server: dict[str, Any] = {"max_num_batched_tokens": int(s.max_num_batched_tokens),
                              "max_num_seqs": int(s.max_num_seqs)}
    if s.max_model_len is not None:
        server["max_model_len"] = int(s.max_model_len)
    server["gpu_memory_utilization"] = float(s.gpu_memory_utilization)
    w = instance.workload
    workload: dict[str, Any] = {"duration_s": float(w.duration_s), "arrival": w.arrival}
    if w.cv is not None:
        workload["cv"] = float(w.cv)
    if w.trace is not None:
        workload["trace"] = _trace_out(w.trace, base)
    ln = w.lengths
    if ln.kind == "sharegpt":
        workload["lengths"] = "sharegpt"
    elif ln.kind == "trace":
        workload["lengths"] = {"trace": _trace_out(str(ln.trace), base)}
    else:
        workload["lengths"] = {k: float(getattr(ln, k)) for k in _NORMAL}
    doc: dict[str, Any] = {"format_version": instance.format_version, "name": instance.name,
                           "model": instance.model, "gpu": instance.gpu, "server": server,
                           "workload": workload}
    if adapters_csv is not None:
        doc["adapters_csv"] = adapters_csv
    else:
        doc["adapters"] = [{"id": a.id, "rank": int(a.rank), "rate_rps": float(a.rate_rps)}
                           for a in instance.adapters]
    return doc


class _FlowMap(dict):  # type: ignore[type-arg]
    """A mapping that YAML writes on one line ({id: a0, rank: 16, rate_rps: 0.4})."""


class _Dumper(_BaseDumper):  # type: ignore[misc,valid-type]
    pass


_Dumper.add_representer(
    _FlowMap, lambda dumper, data: dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True)
)


def adapters_csv_text(adapters: tuple[Adapter, ...] | list[Adapter]) -> str:
    """The adapters as CSV text (header ``id,rank,rate_rps``; rates in shortest round-trip form)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows((a.id, int(a.rank), repr(float(a.rate_rps))) for a in adapters)
    return buf.getvalue()


def _json_text(doc: dict[str, Any]) -> str:
    """Indented JSON with one adapter per line."""
    if "adapters" not in doc:
        return json.dumps(doc, indent=2) + "\n"
    marker = "\u0000adapters\u0000"
    text = json.dumps({**doc, "adapters": marker}, indent=2)
    rows = ",\n    ".join(json.dumps(a) for a in doc["adapters"])
    return text.replace(json.dumps(marker), "[\n    " + rows + "\n  ]") + "\n"


def write_instance(instance: Instance, path: str | Path, *, adapters_csv: bool | None = None) -> list[Path]:
    """Write ``instance`` to ``path`` (JSON for ``.json``, else YAML), atomically; return the files written.

    ``adapters_csv``: put the adapters in ``<stem>.adapters.csv`` beside the file. Default: for YAML files
    with more than :data:`CSV_THRESHOLD` adapters (keeps large files fast to load), never for JSON.
    """
    p = Path(path)
    is_json = p.suffix.lower() == ".json"
    if adapters_csv is None:
        adapters_csv = not is_json and instance.n_adapters > CSV_THRESHOLD
    written: list[Path] = []
    csv_name = None
    if adapters_csv:
        csv_name = f"{p.stem}.adapters.csv"
        atomic_write_text(p.parent / csv_name, adapters_csv_text(instance.adapters))
        written.append(p.parent / csv_name)
    doc = instance_to_dict(instance, adapters_csv=csv_name, base_dir=p.parent)
    if is_json:
        text = _json_text(doc)
    else:
        if "adapters" in doc:
            doc["adapters"] = [_FlowMap(a) for a in doc["adapters"]]
        text = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                         width=120)
    atomic_write_text(p, text)
    written.insert(0, p)
    return written
