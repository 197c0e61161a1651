"""``placer twin simulate``: all adapters of an instance on one GPU, through the Digital Twin."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from placer.cli.common import (
    CRITERION,
    JSON_HELP,
    METRICS_SCRAPE,
    PROFILE_HELP,
    SLO_MIN_SERVED,
    SLO_TPOT_P50,
    SLO_TPOT_P95,
    SLO_TPOT_P99,
    SLO_TTFT_P50,
    SLO_TTFT_P95,
    SLO_TTFT_P99,
    console,
    load_context,
    print_json,
    say_if_compiling,
    with_slo,
)
from placer.problem.io import read_instance
from placer.reporting import charts as plots
from twin.errors import InputError
from twin.replicas import replicas_to_dict, simulate_replicas
from twin.seeds import SeedsResult, simulate_seeds
from twin.spec import Instance


def _fmt(value: float | None, unit: str = "", digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}g}{unit}"


def version_text(version: str) -> str:
    """``v1.2`` for a numeric version, the words as they are otherwise (``derived-from-…``)."""
    return f"v{version}" if version[:1].isdigit() else f"({version})" if version else ""


def _table(name: str, runs: SeedsResult) -> Table:
    res = runs.first
    table = Table(title=f"twin: {name}" + (f" (seed {res.seed})" if len(runs.seeds) > 1 else ""),
                  show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    cfg = f"max_loras {res.max_loras}, max_cpu_loras {res.max_cpu_loras}, max_lora_rank {res.max_lora_rank}"
    table.add_row("configuration", cfg)
    flag = "" if res.profile_calibrated else "  [yellow](UNCALIBRATED: datasheet estimate)[/yellow]"
    table.add_row("profile", f"{res.profile} {version_text(res.profile_version)}{flag}")
    kv = "—" if res.kv_cache_tokens is None else f"{int(res.kv_cache_tokens):,}"  # whole tokens
    table.add_row("KV cache (tokens)", kv)
    if res.oom:
        table.add_row("result", "[red]OOM: the server cannot start[/red]")
        table.add_row("wall time", _fmt(res.wall_s, " s", 3))
        return table
    status = "[red]starved[/red]" if res.starved else "[green]not starved[/green]"
    table.add_row("result", status)
    failures = res.slo_failures()
    verdict = ("[green]meets it[/green]" if not failures
               else "[red]fails it[/red]: " + "; ".join(failures))
    table.add_row("criterion", f"{res.slo.describe()}: {verdict}")
    if len(runs.seeds) > 1:
        ok = sum(runs.passed)
        colour = "green" if ok == len(runs.seeds) else "red"
        table.add_row(f"seeds {runs.seeds[0]}–{runs.seeds[-1]} meeting the criterion",
                      f"[{colour}]{ok} of {len(runs.seeds)} ({runs.pass_fraction:.0%})[/{colour}]")
    table.add_row("throughput", _fmt(res.throughput_tok_s, " tok/s", 6))
    table.add_row("offered load (rate × mean tokens)", _fmt(res.expected_offered_tok_s, " tok/s", 6))
    table.add_row("load that arrived in this run", _fmt(res.offered_tok_s, " tok/s", 6))
    table.add_row("served fraction (of the arrived load)", _fmt(res.served_fraction, "", 4))
    table.add_row("requests arrived / completed", f"{res.arrived} / {res.completed}")
    table.add_row("running / waiting at the end", f"{res.running_end} / {res.waiting_end}")
    table.add_row("queue trend (second half of the window)", res.queue_trend)
    table.add_row("TTFT mean (completed) / p50 / p95 / p99 (censored)", " / ".join(
        _fmt(v, " s") for v in (res.ttft_mean_s, res.ttft_p50_s, res.ttft_p95_s, res.ttft_p99_s)))
    table.add_row("TPOT p50 / p95 / p99", " / ".join(
        _fmt(v * 1000, " ms") for v in (res.tpot_p50_s, res.tpot_p95_s, res.tpot_p99_s)))
    table.add_row("ITL mean / p50 / p99", " / ".join(
        _fmt(v * 1000, " ms") for v in (res.itl_mean_s, res.itl_p50_s, res.itl_p99_s)))
    table.add_row("preemptions", str(res.preemptions))
    table.add_row("adapter loads (GPU / disk)", f"{res.gpu_loads} / {res.disk_loads}")
    frac = res.adapter_served_fraction
    finite = frac[[math.isfinite(x) for x in frac]] if frac.size else frac
    if finite.size:
        table.add_row("adapters served < 90 %", f"{int((finite < 0.9).sum())} of {finite.size}")
    table.add_row("engine steps", str(res.steps))
    table.add_row("wall time", _fmt(res.wall_s, " s", 3))
    return table


def simulate_cmd(
    instance_path: Path = typer.Argument(..., metavar="INSTANCE", help="Instance file (.yaml or .json)."),
    max_loras: int = typer.Option(..., "--max-loras", help="GPU adapter slots (vLLM max_loras)."),
    max_cpu_loras: int | None = typer.Option(None, "--max-cpu-loras",
                                             help="Host-memory adapter cache (default: number of adapters)."),
    max_lora_rank: int | None = typer.Option(None, "--max-lora-rank",
                                             help="vLLM max_lora_rank (default: largest rank present)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the request stream."),
    seeds: int = typer.Option(1, "--seeds", help="Simulate seeds SEED … SEED+N−1 and report the fraction "
                              "that meet the criterion (never OOM); the table and the JSON's other keys are "
                              "the first seed's."),
    profile_path: Path | None = typer.Option(None, "--profile", help=PROFILE_HELP),
    metrics_scrape: float | None = METRICS_SCRAPE,
    plot: Path | None = typer.Option(None, "--plot", help="Draw running/waiting requests, KV use, throughput "
                                     "over time and each adapter's served fraction (.png or .svg)."),
    criterion: str | None = CRITERION,
    slo_ttft_p50: str | None = SLO_TTFT_P50,
    slo_ttft_p95: str | None = SLO_TTFT_P95,
    slo_ttft_p99: str | None = SLO_TTFT_P99,
    slo_tpot_p50: str | None = SLO_TPOT_P50,
    slo_tpot_p95: str | None = SLO_TPOT_P95,
    slo_tpot_p99: str | None = SLO_TPOT_P99,
    slo_min_served: float | None = SLO_MIN_SERVED,
    replicas: int = typer.Option(1, "--replicas", help="N vLLM servers sharing the GPU (each at "
                                 "gpu_memory_utilization / N, adapters dealt by rate; twin.replicas): "
                                 "per-replica and total results."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Simulate ALL adapters of INSTANCE on one GPU; an OOM configuration is a normal result."""
    plot = plots.check_path(plot) if plot is not None else None
    instance = with_slo(read_instance(instance_path), instance_path, criterion=criterion,
                        ttft_p50=slo_ttft_p50,
                   ttft_p95=slo_ttft_p95, ttft_p99=slo_ttft_p99, tpot_p50=slo_tpot_p50,
                   tpot_p95=slo_tpot_p95, tpot_p99=slo_tpot_p99, min_served=slo_min_served)
    if max_loras > instance.n_adapters:  # the rule every plan obeys (placer.evaluate.check_plan)
        raise InputError(f"must be at most the instance's {instance.n_adapters} adapters, as in a plan "
                         f"(got {max_loras})", source=str(instance_path), field="--max-loras",
                         value=max_loras)
    profile = load_context(profile_path, None, metrics_scrape_interval_s=metrics_scrape).profile_for(instance)
    say_if_compiling()
    if replicas != 1:
        _replicas(instance, instance_path, replicas, seeds, plot, max_loras=max_loras,
                  max_cpu_loras=max_cpu_loras, max_lora_rank=max_lora_rank, seed=seed, profile=profile,
                  json_out=json_out)
        return
    runs = simulate_seeds(instance, seeds=seeds, seed=seed, max_loras=max_loras, max_cpu_loras=max_cpu_loras,
                          max_lora_rank=max_lora_rank, profile=profile, timeseries=plot is not None)
    if plot is not None:
        plots.twin_chart(runs.first, plot,
                         title=f"{instance.name}: {instance.n_adapters} adapters on one GPU")
    if json_out:
        print_json(runs.to_dict())
    else:
        console.print(_table(instance.name, runs))
        if plot is not None:
            console.print(f"chart written to {plot}")


def _replicas(instance: Instance, path: Path, replicas: int, seeds: int, plot: Path | None, *,
              json_out: bool, **settings: Any) -> None:
    """``--replicas N`` (N > 1): one call into :func:`twin.replicas.simulate_replicas`, printed."""
    if isinstance(replicas, bool) or replicas < 1 or replicas > instance.n_adapters:
        raise InputError(f"must be an integer in [1, {instance.n_adapters}] (each replica serves at least "
                         f"one adapter) (got {replicas})", source=str(path), field="--replicas",
                         value=replicas)
    if seeds != 1 or plot is not None:
        raise InputError("--seeds and --plot take one server; drop them with --replicas", source=str(path),
                         field="--replicas", value=replicas)
    res = simulate_replicas(instance, replicas, **settings)
    if json_out:
        print_json(replicas_to_dict(res, instance))
        return
    table = Table(title=f"twin: {instance.name}, {replicas} replicas on one GPU")
    for col in ("replica", "adapters", "max_loras", "KV (tokens)", "slowdown", "throughput (tok/s)",
                "TTFT p99", "TPOT p99", "criterion"):
        table.add_column(col, justify="right")
    for i, r in enumerate(res.results):
        kv = "—" if r.kv_cache_tokens is None else f"{int(r.kv_cache_tokens):,}"
        verdict = "[red]OOM[/red]" if r.oom else ("[green]meets[/green]" if r.meets() else "[red]fails[/red]")
        table.add_row(str(i), str(len(res.groups[i])), str(r.max_loras), kv, f"{res.slowdowns[i]:.3f}",
                      _fmt(r.throughput_tok_s, "", 6), _fmt(r.ttft_p99_s, " s"),
                      _fmt(r.tpot_p99_s * 1000, " ms"), verdict)
    total = replicas_to_dict(res, instance)
    table.add_row("total", str(instance.n_adapters), "", "", "", _fmt(total["throughput_tok_s"], "", 6), "",
                  "", "[green]all meet[/green]" if total["meets_criterion"] else "[red]not all meet[/red]")
    console.print(table)
    console.print(f"each replica at gpu_memory_utilization {total['replica_gpu_memory_utilization']:.4g}; "
                  "slowdown = forward passes stretched by sharing the GPU (twin.replicas)")


def register(app: typer.Typer) -> None:
    """Add ``simulate`` to the ``twin`` group."""
    app.command("simulate")(simulate_cmd)
