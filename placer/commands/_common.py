"""What every command shares: the consoles, JSON output, the options of every result-producing command."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import numpy as np
from rich.console import Console

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)

JSON_HELP = "Print machine-readable JSON on stdout (and nothing else on stdout)."


def _default(o: Any) -> Any:
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
    return json.dumps(obj, default=_default, indent=2, allow_nan=False)


def print_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout; nothing else may go to stdout under --json."""
    sys.stdout.write(to_json(obj) + "\n")
    sys.stdout.flush()
