"""Progress bars with an ETA on stderr for the slow commands (verify, compare, reports), quiet for scripts.

Library functions take an optional ``progress`` callback ``(done, total) -> None`` and call it after each unit
of work; they never print. The CLI makes the callback with :func:`progress_bar`::

    with progress_bar("simulating GPUs", enabled=not json_out) as tick:
        report = verify(problem, plan, progress=tick)

The bar goes to stderr, only when stderr is a terminal, and disappears when done (``transient``), so
``--json`` output, pipes and CI logs stay clean. Disabled, the callback does nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console

ProgressFn = Callable[[int, int], None]

#: The one stderr console: progress, notes and errors (stdout stays for results and JSON).
err_console = Console(stderr=True, highlight=False)


def _nothing(done: int, total: int) -> None:
    return None


@contextmanager
def progress_bar(description: str, *, enabled: bool = True) -> Iterator[ProgressFn]:
    """A context giving a ``(done, total)`` callback driving a rich progress bar with elapsed time and ETA.

    Nothing is drawn when ``enabled`` is false or stderr is not a terminal.
    """
    if not enabled or not err_console.is_terminal:
        yield _nothing
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task(description, total=None)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield tick


@contextmanager
def spinner(description: str, *, enabled: bool = True) -> Iterator[None]:
    """A transient spinner with the elapsed time on stderr, for work that cannot count its progress (a
    solver run); nothing when ``enabled`` is false or stderr is not a terminal."""
    if not enabled or not err_console.is_terminal:
        yield
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console,
                  transient=True) as bar:
        bar.add_task(description, total=None)
        yield


def call(progress: ProgressFn | None, done: int, total: int) -> None:
    """Call ``progress(done, total)`` when a callback was given (the helper library code uses)."""
    if progress is not None:
        progress(done, total)
