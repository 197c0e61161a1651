"""What every command shares: the consoles, JSON output, the options of every result-producing command."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from placer.context import Context
from placer.problem.schema import slo_with_options
from placer.reporting.jsonable import to_json
from placer.reporting.progress import err_console
from twin.errors import InputError
from twin.spec import Instance

__all__ = ["CRITERION", "JSON_HELP", "MODELS_HELP", "PROFILE_HELP", "SLO_MIN_SERVED", "SLO_TPOT_P50",
           "SLO_TPOT_P95", "SLO_TPOT_P99", "SLO_TTFT_P50", "SLO_TTFT_P95", "SLO_TTFT_P99", "about_file",
           "console", "err_console", "load_context", "print_json", "say_if_compiling", "to_json", "with_slo"]


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


def load_context(profile: Path | None, models: Path | None, *,
                 metrics_scrape_interval_s: float | None = None) -> Context:
    """The :class:`placer.Context` of ``--profile`` / ``--models`` (the shipped ones when not given) and
    ``--metrics-scrape-interval``."""
    return Context.load(profile=profile, models=models, metrics_scrape_interval_s=metrics_scrape_interval_s)


#: ``--metrics-scrape-interval`` of the commands that run the twin (twin simulate, verify, solve).
METRICS_SCRAPE = typer.Option(
    None, "--metrics-scrape-interval", min=0.0, metavar="SECONDS",
    help="Include a Prometheus scraper pausing SECONDS between GETs of vLLM's /metrics: each scrape stalls "
         "the frontend by the profile's fitted cost, which grows with the LoRA label sets vLLM 0.8.5 has "
         "kept (0: none; default: the profile's setting, none for the shipped profiles).")


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


# --- the SLO overrides of every command that judges feasibility ---------------------------------------------
def _slo_opt(flag: str, what: str) -> Any:
    return typer.Option(None, flag, rich_help_panel="Criterion (SLO)",
                        help=f"{what} (overrides the instance's slo section; 'none' removes it).")


SLO_TTFT_P50 = _slo_opt("--slo-ttft-p50", "Bound on the p50 TTFT, seconds")
SLO_TTFT_P95 = _slo_opt("--slo-ttft-p95", "Bound on the p95 TTFT, seconds")
SLO_TTFT_P99 = _slo_opt("--slo-ttft-p99", "Bound on the p99 TTFT, seconds (default 2)")
SLO_TPOT_P50 = _slo_opt("--slo-tpot-p50", "Bound on the p50 TPOT, milliseconds")
SLO_TPOT_P95 = _slo_opt("--slo-tpot-p95", "Bound on the p95 TPOT, milliseconds")
SLO_TPOT_P99 = _slo_opt("--slo-tpot-p99", "Bound on the p99 TPOT, milliseconds (default 200)")
SLO_MIN_SERVED = typer.Option(None, "--slo-min-served", help="Least served fraction of the offered load "
                              "(default 0.9, the papers' rule).", rich_help_panel="Criterion (SLO)")
CRITERION = typer.Option(None, "--criterion", help="slo (served fraction and latency bounds; the default) or "
                         "paper (the papers' rule alone: served ≥ 0.9, no latency bound).",
                         rich_help_panel="Criterion (SLO)")


def with_slo(problem: Instance, source: str | Path, *, criterion: str | None = None,
             ttft_p50: str | None = None, ttft_p95: str | None = None, ttft_p99: str | None = None,
             tpot_p50: str | None = None, tpot_p95: str | None = None, tpot_p99: str | None = None,
             min_served: str | float | None = None) -> Instance:
    """The problem judged by its file's SLO overridden by the command line (errors name the flag and file)."""
    options = {"criterion": criterion, "ttft_p50_s": ttft_p50, "ttft_p95_s": ttft_p95, "ttft_p99_s": ttft_p99,
               "tpot_p50_ms": tpot_p50, "tpot_p95_ms": tpot_p95, "tpot_p99_ms": tpot_p99,
               "min_served_fraction": min_served}
    try:  # the flag overrides the file's slo section: the error names both
        slo = slo_with_options(problem.slo, options)
    except InputError as exc:
        raise (exc if exc.source else exc.with_source(str(source))) from None
    return problem if slo == problem.slo else problem.replace(slo=slo)
