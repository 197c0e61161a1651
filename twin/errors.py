"""The one error family of the toolkit.

Every error caused by bad input (a file, a field, a value) is an :class:`InputError`; its message names
the file (when there is one), the field and the bad value on a single line. The CLI turns it into one red
line and exit code 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any


class PlacerError(Exception):
    """Base class of the toolkit's own exceptions."""


class InputError(PlacerError, ValueError):
    """Bad input: an unreadable file, a schema violation, an unknown profile, an out-of-range value."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None,
                 value: Any = None) -> None:
        self.source = source
        self.field = field
        self.value = value
        self.detail = message
        super().__init__(self._format())

    def _format(self) -> str:
        parts = []
        if self.source:
            parts.append(str(self.source))
        if self.field:
            parts.append(self.field)
        parts.append(self.detail)
        return ": ".join(parts)

    def with_source(self, source: str) -> InputError:
        """The same error, attributed to ``source`` (a file name)."""
        return InputError(self.detail, source=source, field=self.field, value=self.value)


class InfeasibleError(PlacerError):
    """A problem that has no feasible solution (e.g. an adapter that fits on no GPU); the message says why."""
