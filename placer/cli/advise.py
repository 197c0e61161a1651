"""``placer advise``: the Batching Configuration Advisor — B_opt of one GPU and the memory it frees."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.table import Table

from placer.advise import DEFAULT_KV_HEADROOM, DEFAULT_TOLERANCE, Advice, advise
from placer.cli.common import (
    CRITERION,
    JSON_HELP,
    PROFILE_HELP,
    SLO_MIN_SERVED,
    SLO_TPOT_P50,
    SLO_TPOT_P95,
    SLO_TPOT_P99,
    SLO_TTFT_P50,
    SLO_TTFT_P95,
    SLO_TTFT_P99,
    about_file,
    console,
    load_context,
    print_json,
    say_if_compiling,
    with_slo,
)
from placer.problem.io import read_instance
from placer.reporting import charts as plots
from twin.errors import InputError


def _f(v: float | None, digits: int = 4, scale: float = 1.0) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v * scale:.{digits}g}"


def _table(advice: Advice) -> Table:
    flag = "" if advice.profile_calibrated else " [yellow](UNCALIBRATED profile)[/yellow]"
    table = Table(title=f"advise: {advice.instance} — max_loras {advice.max_loras}, max_lora_rank "
                  f"{advice.max_lora_rank}, {advice.profile}{flag}\n{advice.criterion}")
    for col in ("max_num_seqs", "throughput tok/s", "TTFT p99 s", "TPOT p99 ms", "KV peak tokens",
                "KV needed tokens", "gpu_memory_utilization", "criterion"):
        table.add_column(col, justify="right")
    for p in advice.points:
        mark = " ← B_opt" if advice.b_opt is not None and p.max_num_seqs == advice.b_opt.max_num_seqs else ""
        verdict = "OOM" if p.oom else ("[green]meets[/green]" if p.meets_criterion else "[red]fails[/red]")
        table.add_row(f"{p.max_num_seqs}{mark}", _f(p.throughput_tok_s, 5), _f(p.ttft_p99_s),
                      _f(p.tpot_p99_s, 4, 1000.0), f"{p.kv_cache_tokens:,}", f"{p.kv_needed_tokens:,}",
                      f"{p.gpu_memory_utilization:g}", verdict)
    return table


def _summary(advice: Advice) -> list[str]:
    lines = [advice.note]
    if advice.b_opt is not None and advice.uses is not None:
        u = advice.uses
        lines.append(f"freed: {advice.freed_tokens:,} KV tokens = {advice.freed_gib:g} GiB "
                     f"(gpu_memory_utilization {advice.gpu_memory_utilization:g} → "
                     f"{advice.b_opt.gpu_memory_utilization:g}); it could hold, instead:")
        lines.append(f"  {u.extra_max_loras} more adapter slots at rank {advice.max_lora_rank}")
        lines.append(f"  max_lora_rank {u.max_lora_rank} for the {advice.max_loras} slots"
                     if u.max_lora_rank > advice.max_lora_rank else "  no higher max_lora_rank")
        if u.replica_fits is None:
            lines.append("  a replica: unknown (no architecture for this model)")
        else:
            lines.append(f"  a second server of the model (needs {u.replica_gib:g} GiB): "
                         f"{'fits' if u.replica_fits else 'does not fit'} in the freed memory")
    v = advice.replica
    if v is not None:
        got = "cannot start (memory error)" if v.oom else (
            f"{v.throughput_tok_s:.0f} tok/s in total against {v.single_tok_s:.0f} for one server, "
            f"{'meeting' if v.meets_criterion else 'failing'} the criterion; slowdown from the shared GPU "
            + " / ".join(f"{x:.2f}" for x in v.slowdowns))
        lines.append(f"replica: 2 servers at gpu_memory_utilization {advice.gpu_memory_utilization / 2:g} "
                     f"each, max_num_seqs {advice.b_opt.max_num_seqs if advice.b_opt else '—'}: {got} → "
                     f"{'a replica pays' if v.pays else 'a replica does not pay'}")
    return lines


def advise_cmd(
    instance_path: Path = typer.Argument(..., metavar="INSTANCE", help="Instance file (.yaml or .json)."),
    max_loras: int = typer.Option(..., "--max-loras", help="GPU adapter slots (vLLM max_loras)."),
    max_cpu_loras: int | None = typer.Option(None, "--max-cpu-loras",
                                             help="Host-memory adapter cache (default: number of adapters)."),
    max_lora_rank: int | None = typer.Option(None, "--max-lora-rank",
                                             help="vLLM max_lora_rank (default: largest rank present)."),
    grid: str | None = typer.Option(None, "--grid", help="max_num_seqs values to try, e.g. 1,2,4,8 "
                                    "(default: powers of two up to the instance's max_num_seqs)."),
    tolerance: float = typer.Option(DEFAULT_TOLERANCE, "--tolerance",
                                    help="B_opt is within this fraction of the best throughput."),
    kv_headroom: float = typer.Option(DEFAULT_KV_HEADROOM, "--kv-headroom",
                                      help="Margin on the peak KV in use when sizing the cache."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the request stream (the same at "
                             "every point)."),
    profile_path: Path | None = typer.Option(None, "--profile", help=PROFILE_HELP),
    plot: Path | None = typer.Option(None, "--plot", help="Draw throughput, p99 latency and KV memory "
                                     "against max_num_seqs, B_opt marked (.png or .svg)."),
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
    """Sweep max_num_seqs for ALL adapters of INSTANCE on one GPU; name B_opt and the memory it frees."""
    plot = plots.check_path(plot) if plot is not None else None
    problem = with_slo(read_instance(instance_path), instance_path, criterion=criterion,
                       ttft_p50=slo_ttft_p50, ttft_p95=slo_ttft_p95, ttft_p99=slo_ttft_p99,
                       tpot_p50=slo_tpot_p50, tpot_p95=slo_tpot_p95, tpot_p99=slo_tpot_p99,
                       min_served=slo_min_served)
    context = load_context(profile_path, None)
    say_if_compiling()
    try:
        with about_file(instance_path):
            advice = advise(problem, max_loras=max_loras, max_cpu_loras=max_cpu_loras,
                            max_lora_rank=max_lora_rank, grid=grid, seed=seed, context=context,
                            tolerance=tolerance, kv_headroom=kv_headroom)
    except InputError as exc:  # the slot count is judged against the file's adapters: name the file too
        if exc.field == "--max-loras" and not exc.source:
            raise exc.with_source(str(instance_path)) from None
        raise
    if plot is not None:
        from placer.reporting.advise_chart import advise_chart

        advise_chart(advice, plot, kv_bytes_per_token=context.profile_for(problem).memory.kv_bytes_per_token)
    if json_out:
        print_json(advice.to_dict())
        return
    console.print(_table(advice))
    for line in _summary(advice):
        console.print(line, soft_wrap=True)
    if plot is not None:
        console.print(f"chart written to {plot}")


def register(app: typer.Typer) -> None:
    """Add ``advise`` to ``app``."""
    app.command("advise")(advise_cmd)
