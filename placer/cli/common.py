"""What every command shares: the consoles, JSON output, the options of every result-producing command."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console

from placer.reporting.jsonable import to_json
from placer.reporting.progress import err_console

__all__ = ["JSON_HELP", "console", "err_console", "print_json", "to_json"]

console = Console(stderr=False, highlight=False)

JSON_HELP = "Print machine-readable JSON on stdout (and nothing else on stdout)."


def print_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout; nothing else may go to stdout under --json."""
    sys.stdout.write(to_json(obj) + "\n")
    sys.stdout.flush()
