"""The KV-cache (memory) half of the calibration: fit, lookup and the memory-error rule.

``kv = base − a·slots·rank − b·slots`` (a, b ≥ 0) by least squares on measured rows, plus the measured table
itself (measured points, including "failed to start", are reproduced exactly). Re-exported by
:mod:`twin.calibration.fit`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from twin.calibration.runs import RunRecord
from twin.errors import InputError
from twin.profile import MemoryModel, Profile

KVRow = tuple[int, int, int | None]  # (max_loras, max_lora_rank, kv tokens or None = failed to start)


def load_kv_table(path: str | Path, model: str) -> list[KVRow]:
    """The (slots, rank, kv tokens | None) rows of one model in a ``kv_cache.csv``-style file."""
    import pandas as pd

    p = Path(path)
    try:
        df = pd.read_csv(p)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read KV-cache CSV ({exc})", source=str(p)) from None
    for col in ("model", "max_loras", "max_lora_rank", "kv_cache_tokens"):
        if col not in df.columns:
            raise InputError("missing column", source=str(p), field=col)
    df = df[df["model"] == model]
    return [(int(s), int(r), None if pd.isna(k) else int(k))
            for s, r, k in zip(df["max_loras"], df["max_lora_rank"], df["kv_cache_tokens"], strict=True)]


def kv_rows_from_runs(runs: Sequence[RunRecord]) -> list[KVRow]:
    """KV rows seen in run records: measured ``kv_cache_tokens``; None for runs that failed with OOM."""
    rows: dict[tuple[int, int], int | None] = {}
    for r in runs:
        k = (r.max_loras, r.max_lora_rank)
        if r.oom:
            rows.setdefault(k, None)
        elif math.isfinite(r.kv_cache_tokens):
            rows[k] = int(r.kv_cache_tokens)
    return [(s, rk, v) for (s, rk), v in sorted(rows.items())]


def fit_memory(rows: Sequence[KVRow], base: MemoryModel) -> MemoryModel:
    """Least-squares line kv = base − a·slots·rank − b·slots (a, b ≥ 0) plus the measured table."""
    from scipy.optimize import lsq_linear

    meas = [(s, r, k) for s, r, k in rows if k is not None]
    table = tuple(sorted({(int(s), int(r)): (int(s), int(r), k) for s, r, k in rows}.values()))
    if len(meas) < 3:
        return replace(base, table=table)
    X = np.array([[1.0, -s * r, -s] for s, r, _ in meas])
    y = np.array([k for _, _, k in meas], dtype=float)
    sol = lsq_linear(X, y, bounds=([0.0, 0.0, 0.0], [np.inf, np.inf, np.inf]))
    c, a, b = (float(v) for v in sol.x)
    return replace(base, kv_base_tokens=round(c, 1), kv_per_slot_rank=round(a, 4), kv_per_slot=round(b, 4),
                   table=table)


def kv_tokens(mem: MemoryModel, slots: int, rank: int, utilization: float | None = None) -> float | None:
    """KV-cache tokens after weights and LoRA buffers (None: the table says the server fails to start)."""
    return mem.kv_tokens(slots, rank, utilization)


def memory_error(profile: Profile, slots: int, rank: int, *, max_model_len: int | None = None,
                 utilization: float | None = None) -> bool:
    """True when vLLM cannot start: LoRA buffers do not fit or the KV cache < max_model_len tokens."""
    return profile.memory.oom(slots, rank, max_model_len or profile.max_model_len, utilization)


def oom_accuracy(profile: Profile, rows: Sequence[KVRow], *, use_table: bool = True) -> tuple[int, int]:
    """(correct, total) OOM predictions on KV rows; ``use_table=False`` judges the fitted line alone."""
    prof = profile if use_table else profile.replace(memory=replace(profile.memory, table=()))
    ok = sum(memory_error(prof, s, r) == (k is None or k < profile.max_model_len) for s, r, k in rows)
    return ok, len(rows)
