"""The ``placer`` console script: a thin shell over the library.

Each command parses its arguments, makes one library call and prints. Bad input raises
:class:`twin.errors.InputError`; :func:`main` turns it into one red line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import PackageNotFoundError, version

import typer
from rich.text import Text

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
# means top-level commands. A module that is not there yet is skipped.
twin_app = typer.Typer(help="The Digital Twin: simulate one GPU, calibrate profiles, collect real runs.",
                       no_args_is_help=True)
surrogate_app = typer.Typer(help="CatBoost surrogates: predict, sweep the twin, train, evaluate.",
                            no_args_is_help=True)
app.add_typer(twin_app, name="twin")
app.add_typer(surrogate_app, name="surrogate")
_GROUPS: dict[str | None, typer.Typer] = {None: app, "twin": twin_app, "surrogate": surrogate_app}

_COMMAND_MODULES: tuple[tuple[str, str | None], ...] = (
    ("placer.cli.instances", None),   # generate, show
    ("placer.cli.solve", None),       # solve, compare, verify, binpack, deploy
    ("placer.cli.twin", "twin"),      # twin simulate
    ("placer.cli.calibration", "twin"),  # twin calibrate, twin collect, twin profiles
    ("placer.cli.surrogate", "surrogate"),  # surrogate predict | sweep | train | eval
)


def _register() -> None:
    for module_name, group in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # command group not built yet
            raise
        module.register(_GROUPS[group])


_register()


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
