"""What every command shares: the consoles, JSON output, the options of every result-producing command."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from placer.context import Context
from placer.reporting.jsonable import to_json
from placer.reporting.progress import err_console
from twin.errors import InputError

__all__ = ["JSON_HELP", "MODELS_HELP", "PROFILE_HELP", "load_context", "about_file", "console",
           "err_console", "print_json", "say_if_compiling", "to_json"]


class _Console(Console):
    """A console whose tables never truncate a cell: every column folds (no ``…``), and when the output is
    not a terminal (a pipe, a file, CI) the width grows to fit the widest table instead of 80 columns."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        tables = [o for o in objects if isinstance(o, Table)]
        for table in tables:
            for column in table.columns:
                column.overflow = "fold"
        if not tables or self.is_terminal:
            super().print(*objects, **kwargs)
            return
        wide = self.options.update_width(10_000)
        need = max(Measurement.get(self, wide, t).maximum for t in tables)
        saved = self._width
        try:
            self._width = max(self.width, need)
            super().print(*objects, **kwargs)
        finally:
            self._width = saved


console = _Console(stderr=False, highlight=False)

JSON_HELP = "Print machine-readable JSON on stdout (and nothing else on stdout)."
PROFILE_HELP = "A twin profile JSON (e.g. written by 'placer twin calibrate') instead of the shipped one."
MODELS_HELP = "A directory of trained surrogate models (placer surrogate train) instead of the shipped ones."


def load_context(profile: Path | None, models: Path | None) -> Context:
    """The :class:`placer.Context` of ``--profile`` / ``--models`` (the shipped ones when not given)."""
    return Context.load(profile=profile, models=models)


def print_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout; nothing else may go to stdout under --json."""
    sys.stdout.write(to_json(obj) + "\n")
    sys.stdout.flush()


def say_if_compiling() -> None:
    """Before a twin run: say once on stderr that the simulator is being compiled when numba's cache is cold
    (when that cannot be told, on a terminal only), so a first run does not sit silently for 16–30 s."""
    from twin.engine import simulator_compiled

    state = simulator_compiled()
    if state is False or (state is None and err_console.is_terminal):
        err_console.print("[bold yellow]note:[/bold yellow] compiling the simulator (first run only, "
                          "about 15–30 s)…", soft_wrap=True)


@contextlib.contextmanager
def about_file(path: str | Path) -> Iterator[None]:
    """Attribute to ``path`` any :class:`InputError` raised inside that names no file (an unshipped surrogate
    for the instance's GPU, a plan that does not fit the instance), so the one red line names the file.
    An error about a command-line option (its field is ``--name``) is the option's, not the file's."""
    try:
        yield
    except InputError as exc:
        if exc.source or (exc.field or "").startswith("--"):
            raise
        raise exc.with_source(str(path)) from None
