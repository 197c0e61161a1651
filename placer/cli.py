"""The ``placer`` console script: a thin shell over the library.

Each command parses its arguments, makes one library call and prints. Bad input raises
:class:`twin.errors.InputError`; :func:`main` turns it into one red line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.text import Text

from placer.commands._common import err_console
from twin.errors import InfeasibleError, InputError

app = typer.Typer(
    name="placer",
    help="How few GPUs does a multi-LoRA vLLM workload need, and how should each GPU be configured?",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Command modules register themselves on ``app`` (top-level commands) or provide a sub-app.
# (module, sub-app name or None for top-level commands)
_COMMAND_MODULES: tuple[tuple[str, str | None], ...] = (
    ("placer.commands.instances", None),
    ("placer.commands.solve", None),
    ("placer.commands.twin", "twin"),
    ("placer.commands.surrogate", "surrogate"),
)


def _register() -> None:
    for module_name, group in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # command group not built yet
            raise
        if group is None:
            module.register(app)
        else:
            app.add_typer(module.app, name=group, help=module.__doc__.splitlines()[0] if module.__doc__ else None)


_register()


def main() -> None:
    """Entry point of the console script."""
    try:
        app()
    except InputError as exc:
        _fail("error", exc)
    except InfeasibleError as exc:  # no plan exists for this input: also the user's to fix
        _fail("infeasible", exc)


def _fail(kind: str, exc: Exception) -> None:
    message = " ".join(str(exc).split())  # always one line
    err_console.print(Text.assemble((f"{kind}: ", "bold red"), message), soft_wrap=True)
    sys.exit(2)
