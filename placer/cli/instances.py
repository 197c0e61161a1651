"""``placer generate`` and ``placer show``: make instance files and summarise them."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from placer.cli.common import (
    CRITERION,
    JSON_HELP,
    SLO_MIN_SERVED,
    SLO_TPOT_P50,
    SLO_TPOT_P95,
    SLO_TPOT_P99,
    SLO_TTFT_P50,
    SLO_TTFT_P95,
    SLO_TTFT_P99,
    console,
    print_json,
    with_slo,
)
from placer.problem.generate import (
    DEFAULT_GPU,
    DEFAULT_MAX_RATE_RPS,
    DEFAULT_MODEL,
    FAMILIES,
    generate,
)
from placer.problem.io import read_instance, write_instance
from placer.problem.summary import instance_summary
from twin.errors import InputError


def _ints(text: str | None, option: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"must be comma-separated integers (got {text!r})", field=option,
                         value=text) from None


def _floats(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"must be comma-separated numbers (got {text!r})", field=option,
                         value=text) from None


def generate_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Instance file to write (.yaml or .json)."),
    family: str = typer.Option("paper", "--family", "-f", help=f"One of: {', '.join(FAMILIES)}."),
    adapters: int = typer.Option(16, "--adapters", "-n", help="Number of adapters."),
    seed: int = typer.Option(0, "--seed", help="Random seed: same seed, same file."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Model profile name."),
    gpu: str = typer.Option(DEFAULT_GPU, "--gpu", help="GPU profile name."),
    total_rate_rps: float | None = typer.Option(None, "--total-rate-rps",
                                                help="Total request rate (not paper)."),
    duration_s: float | None = typer.Option(None, "--duration-s", help="Window length (s)."),
    arrival: str | None = typer.Option(None, "--arrival", help="poisson | gamma | unpredictable | trace."),
    cv: float | None = typer.Option(None, "--cv", help="Coefficient of variation of gamma arrivals."),
    lengths: str | None = typer.Option(None, "--lengths", help="sharegpt | trace."),
    ranks: str | None = typer.Option(None, "--ranks", help="Rank set, e.g. 8,16,32."),
    rates: str | None = typer.Option(None, "--rates", help="paper: rate group, e.g. 1.6,0.8,0.4."),
    zipf_s: float = typer.Option(1.0, "--zipf-s", help="Zipf exponent (zipf; trace with zipf popularity)."),
    alpha: float = typer.Option(1.0, "--alpha", help="Dirichlet concentration (dirichlet popularity)."),
    popularity: str = typer.Option("zipf", "--popularity", help="trace(like): zipf | dirichlet | uniform."),
    trace: str | None = typer.Option(
        None, "--trace", help="Trace name or CSV path (default: azure_conv_2023 for family trace, a public "
        "trace read from the traces folder, PLACER_TRACES_DIR; else the shipped azure-like-conv)."),
    max_rate_rps: float = typer.Option(DEFAULT_MAX_RATE_RPS, "--max-rate-rps",
                                       help="Cap on one adapter's rate under a popularity law."),
    name: str | None = typer.Option(None, "--name", help="Instance name (default FAMILY-N-sSEED)."),
    adapters_csv: bool | None = typer.Option(None, "--adapters-csv/--inline",
                                             help="Adapters in a CSV beside the file (default: YAML > 200)."),
    criterion: str | None = CRITERION,
    slo_ttft_p50: str | None = SLO_TTFT_P50,
    slo_ttft_p95: str | None = SLO_TTFT_P95,
    slo_ttft_p99: str | None = SLO_TTFT_P99,
    slo_tpot_p50: str | None = SLO_TPOT_P50,
    slo_tpot_p95: str | None = SLO_TPOT_P95,
    slo_tpot_p99: str | None = SLO_TPOT_P99,
    slo_min_served: float | None = SLO_MIN_SERVED,
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Generate a seeded, reproducible instance file (with the slo section it is judged by)."""
    instance = generate(family, adapters, seed, model=model, gpu=gpu, total_rate_rps=total_rate_rps,
                        duration_s=duration_s, arrival=arrival, cv=cv, lengths=lengths,
                        ranks=_ints(ranks, "--ranks"), rates=_floats(rates, "--rates"), zipf_s=zipf_s,
                        alpha=alpha, popularity=popularity, trace=trace, max_rate_rps=max_rate_rps, name=name)
    instance = with_slo(instance, out, criterion=criterion, ttft_p50=slo_ttft_p50,
                   ttft_p95=slo_ttft_p95, ttft_p99=slo_ttft_p99, tpot_p50=slo_tpot_p50,
                   tpot_p95=slo_tpot_p95, tpot_p99=slo_tpot_p99, min_served=slo_min_served)
    files = write_instance(instance, out, adapters_csv=adapters_csv)
    if json_out:
        print_json({"files": [str(f) for f in files], **instance_summary(instance)})
    else:
        console.print(f"wrote {', '.join(str(f) for f in files)}: {instance.n_adapters} adapters, "
                      f"{instance.total_rate_rps:.4g} req/s; judged by {instance.slo.describe()}")


def show_cmd(
    instance_file: Path = typer.Argument(..., help="Instance file (.yaml or .json)."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Summarise an instance: adapters by rank, rate statistics, offered load."""
    s = instance_summary(read_instance(instance_file))
    if json_out:
        print_json(s)
        return
    console.print(f"[bold]{s['name']}[/bold]: {s['adapters']} adapters, model {s['model']}, GPU {s['gpu']}")
    console.print(f"workload: {s['arrival']} arrivals over {s['duration_s']:g} s, lengths {s['lengths']} "
                  f"(mean {s['mean_input_tokens']:.1f} in / {s['mean_output_tokens']:.1f} out tokens)")
    table = Table(title="adapters by rank")
    for col in ("rank", "adapters", "rate (req/s)"):
        table.add_column(col, justify="right")
    for rank, row in s["by_rank"].items():
        table.add_row(str(rank), str(row["adapters"]), f"{row['rate_rps']:.4g}")
    console.print(table)
    r = s["rate_rps"]
    console.print(f"rate per adapter (req/s): min {r['min']:.4g}, median {r['median']:.4g}, "
                  f"mean {r['mean']:.4g}, max {r['max']:.4g}; total {r['total']:.4g}")
    console.print(f"expected requests {s['expected_requests']:,.0f}; "
                  f"offered load {s['offered_tok_s']:,.0f} tok/s")
    console.print(f"criterion: {s['criterion']}")


def register(app: typer.Typer) -> None:
    """Add ``generate`` and ``show`` to ``app``."""
    app.command("generate")(generate_cmd)
    app.command("show")(show_cmd)
