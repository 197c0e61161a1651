"""The ``placer`` console script: a thin shell over the library.

Each command parses its arguments, makes one library call and prints. Bad input raises
:class:`twin.errors.InputError`; :func:`main` turns it into one red line on stderr and exit code 2.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import TextIO

import typer
from rich.text import Text

from placer.cli import advise, binpack, calibration, dynamic, frontier, instances, solve, surrogate, twin
from placer.cli.common import err_console
from twin.errors import InfeasibleError, InputError

app = typer.Typer(
    name="placer",
    help="How few GPUs does a multi-LoRA vLLM workload need, and how should each GPU be configured?",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Sub-command groups, and the modules that add commands: each module has ``register(typer_app)``; group None
# means top-level commands.
twin_app = typer.Typer(help="The Digital Twin: simulate one GPU, calibrate profiles, collect real runs.",
                       no_args_is_help=True)
surrogate_app = typer.Typer(help="CatBoost surrogates: predict, sweep the twin, train, evaluate.",
                            no_args_is_help=True)
app.add_typer(twin_app, name="twin")
app.add_typer(surrogate_app, name="surrogate")
_GROUPS: dict[str | None, typer.Typer] = {None: app, "twin": twin_app, "surrogate": surrogate_app}

_COMMANDS: tuple[tuple[Callable[[typer.Typer], None], str | None], ...] = (
    (instances.register, None),         # generate, show
    (solve.register, None),             # solve, compare, verify, deploy
    (binpack.register, None),           # binpack
    (dynamic.register, None),           # replan
    (frontier.register, None),          # frontier
    (advise.register, None),            # advise
    (twin.register, "twin"),            # twin simulate
    (calibration.register, "twin"),     # twin calibrate, twin collect, twin profiles
    (surrogate.register, "surrogate"),  # surrogate predict | sweep | train | eval
)
for _register, _group in _COMMANDS:
    _register(_GROUPS[_group])


DISTRIBUTION = "lora-placer"  # the name in pyproject.toml: the version comes from the installed metadata


def package_version() -> str:
    """The installed ``lora-placer`` version, or a plain statement that the distribution is not installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return f"unknown ({DISTRIBUTION} is not installed; run pip install . in the checkout)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"placer {package_version()}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: bool = typer.Option(False, "--version", "-V", callback=_print_version, is_eager=True,
                                      help="Print the installed version and exit."),
) -> None:
    """Options of ``placer`` itself (before the command)."""


def main() -> None:
    """Entry point of the console script."""
    with warnings.catch_warnings():  # restores the default display when done (tests call main() in-process)
        warnings.showwarning = _note
        try:
            app()
        except InputError as exc:
            _fail("error", exc)
        except InfeasibleError as exc:  # no plan exists for this input: also the user's to fix
            _fail("infeasible", exc)


_default_showwarning = warnings.showwarning


def _note(message: Warning | str, category: type[Warning], filename: str, lineno: int,
          file: TextIO | None = None, line: str | None = None) -> None:
    """The toolkit's own warnings (an uncalibrated profile, a stale surrogate) as one yellow ``note:`` line
    on stderr, without the Python source location; other warnings keep the default display."""
    if not category.__module__.startswith(("twin", "surrogate", "placer")):
        _default_showwarning(message, category, filename, lineno, file, line)
        return
    text = " ".join(str(message).split())
    err_console.print(Text.assemble(("note: ", "bold yellow"), text), soft_wrap=True)


def _fail(kind: str, exc: Exception) -> None:
    message = " ".join(str(exc).split())  # always one line
    err_console.print(Text.assemble((f"{kind}: ", "bold red"), message), soft_wrap=True)
    sys.exit(2)
