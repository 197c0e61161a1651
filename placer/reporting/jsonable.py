"""JSON for results that hold numpy values: one encoder for the CLI's ``--json`` and the files the library
writes (plans, reports)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)``: numpy scalars and arrays as Python values (non-finite floats as null),
    objects with ``to_dict`` as their dict."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if not math.isfinite(float(o)) else float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def to_json(obj: Any) -> str:
    """``obj`` as indented JSON (numpy values converted, NaN refused)."""
    return json.dumps(obj, default=json_default, indent=2, allow_nan=False)
