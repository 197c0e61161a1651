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
      trace: azure-like-conv          # only with arrival: trace (trace name or CSV path)
      lengths: sharegpt               # or {input_mean, input_std, output_mean, output_std} or {trace: NAME}
    slo:                              # optional; the criterion a GPU is judged by (defaults shown)
      criterion: slo                  # slo | paper (the papers' served-fraction rule alone)
      ttft_p99_s: 2.0                 # also ttft_p50_s, ttft_p95_s; null = no bound
      tpot_p99_ms: 200.0              # also tpot_p50_ms, tpot_p95_ms; null = no bound
      min_served_fraction: 0.9
    rate_profile:                     # optional: per-period rate multipliers over a day (twin.rates)
      period_s: 3600.0
      periods: [0.6, 1.0, 1.4]        # or trace: azure-like-conv + n_periods: 24; adapters: {id: [...]}
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
import re
from pathlib import Path
from typing import Any

import yaml

from placer.problem.schema import CSV_COLUMNS, NORMAL_KEYS, instance_from_dict, read_adapters_csv, why
from twin.errors import InputError
from twin.files import atomic_write_text
from twin.spec import Adapter, Instance
from twin.traces import is_trace_name

__all__ = ["CSV_COLUMNS", "CSV_THRESHOLD", "adapters_csv_text", "instance_from_dict", "instance_to_dict",
           "read_adapters_csv", "read_instance", "write_instance"]

CSV_THRESHOLD = 200  # YAML files with more adapters get their adapters in a CSV beside them

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BaseDumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    """Safe YAML loader (libyaml when available) that rejects duplicate keys instead of keeping the last."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _DuplicateKey(Exception):
    pass


MAX_NESTING = 100  # instance files nest 3 levels; libyaml overflows its C stack (segfault) near 10^5


_DASHES = re.compile(r"(?:-[ \t]+){" + str(MAX_NESTING) + "}")  # "- - - ...": sequences in sequences


def _too_deep(text: str) -> bool:
    """Nested more than MAX_NESTING deep (a cheap scan that may over-count brackets in strings)."""
    if "- -" in text and _DASHES.search(text):
        return True
    if text.count("[") + text.count("{") <= MAX_NESTING:
        return False
    depth = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return True
        elif ch in "]}":
            depth = max(0, depth - 1)
    return False


def read_instance(path: str | Path) -> Instance:
    """Read and validate an instance file (``.json``; anything else is read as YAML)."""
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read instance file ({why(exc)})", source=str(p)) from None
    if _too_deep(text):
        raise InputError(f"nested more than {MAX_NESTING} levels deep", source=str(p))
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text, object_pairs_hook=_no_duplicates)
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
                             source=str(p)) from None
        except _DuplicateKey as exc:
            raise InputError(f"invalid JSON (duplicate key {exc.args[0]!r})", source=str(p)) from None
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
    if is_trace_name(ref) or base is None or not Path(ref).is_absolute():
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
        workload["lengths"] = {k: float(getattr(ln, k)) for k in NORMAL_KEYS}
    doc: dict[str, Any] = {"format_version": instance.format_version, "name": instance.name,
                           "model": instance.model, "gpu": instance.gpu, "server": server,
                           "workload": workload, "slo": instance.slo.to_dict(compact=True)}
    if instance.rate_profile is not None:
        doc["rate_profile"] = instance.rate_profile.to_dict()
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
