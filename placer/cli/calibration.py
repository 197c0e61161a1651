"""``placer twin calibrate | collect | profiles``: fit profiles to runs, record real runs, list profiles."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.table import Table

from placer.cli.common import JSON_HELP, console, print_json
from twin.errors import InputError


def _lora_paths(items: list[str] | None) -> dict[int, str]:
    out: dict[int, str] = {}
    for item in items or []:
        rank, sep, path = item.partition("=")
        if not sep or not rank.strip().isdigit() or not path:
            raise InputError(f"must be RANK=PATH (got {item!r})", field="--lora-path", value=item)
        out[int(rank)] = path
    return out


def calibrate_cmd(
    runs_csv: Path = typer.Argument(..., help="Run records (real_runs.csv schema, or "
                                  "`placer twin collect` output)."),
    model: str = typer.Option(..., "--model", help="Model profile name to fit."),
    gpu: str = typer.Option(..., "--gpu", help="GPU profile name to fit."),
    out: Path = typer.Option(..., "--out", "-o", help="Profile JSON to write."),
    kv_cache: Path | None = typer.Option(None, "--kv-cache", help="KV-cache table (default: kv_cache.csv "
                                         "next to RUNS_CSV if present)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the re-simulations: same seed, same profile."),
    refine: bool = typer.Option(True, "--refine/--no-refine", help="Refine the step model by re-simulation."),
    client_cap: str = typer.Option("auto", "--client-cap", help="Client in-flight limit to emulate: auto | "
                                   "none | N (auto: 27000 for dt_real runs)."),
    max_evals: int = typer.Option(20, "--max-evals", help="Objective evaluations of the refinement."),
    fit_output_shape: bool = typer.Option(False, "--fit-output-shape", help="Also fit the generated "
                                          "output lengths' tail to the KV cache held per running request."),
    refine_batch: bool = typer.Option(False, "--refine-batch", help="Also refine the step model's "
                                      "per-sequence term by re-simulation (a third coordinate)."),
    in_batch_eviction: bool | None = typer.Option(None, "--in-batch-eviction/--no-in-batch-eviction",
                                                  help="Model vLLM 0.8.5's slot eviction of adapters of the "
                                                  "current batch (default: as the starting profile)."),
    w_tail: float = typer.Option(0.0, "--w-tail", help="Weight of the p99 TTFT/ITL term of the refinement's "
                                 "objective (0: throughput and mean ITL only, as profiles ≤ v1.2)."),
    adapter_sq: bool = typer.Option(False, "--adapter-sq", help="Also fit a step-time term in the squared "
                                    "number of distinct adapters of a batch (lora_ms_per_adapter_sq)."),
    fit_scrape: bool = typer.Option(False, "--fit-scrape", help="Also fit the metrics scraper's frontend "
                                    "stalls to the runs' metrics-poller intervals (npy_samples, npy_span_s)"),
    scrape_blocks_tokens: bool | None = typer.Option(None, "--scrape-blocks-tokens/--scrape-intake-only",
                                                     help="A scrape stall also holds back token delivery, "
                                                     "or request intake only (default: as the starting "
                                                     "profile)."),
    prefill_from_spread: bool = typer.Option(False, "--prefill-from-spread", help="Pin the per-prompt-token "
                                             "cost by the light runs' TTFT spread (p99 − median) instead of "
                                             "their mean TTFT."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Fit a profile (KV model and step-time model) to measured runs and write it as JSON."""
    from twin.calibration.fit import calibrate

    cap: int | str | None = None if client_cap == "none" else client_cap
    if isinstance(cap, str) and cap != "auto":
        if not cap.isdigit():
            raise InputError(f"must be auto, none or an integer (got {client_cap!r})", field="--client-cap",
                             value=client_cap)
        cap = int(cap)
    result = calibrate(runs_csv, model=model, gpu=gpu, kv_csv=kv_cache, seed=seed, refine=refine,
                       client_cap=cap, max_evals=max_evals, fit_output_shape=fit_output_shape,
                       refine_batch=refine_batch, in_batch_eviction=in_batch_eviction, w_tail=w_tail,
                       adapter_sq=adapter_sq, scrape=fit_scrape, scrape_blocks_tokens=scrape_blocks_tokens,
                       prefill_from_spread=prefill_from_spread)
    result.profile.save(out)
    summary = {**result.summary(), "out": str(out)}
    if as_json:
        print_json(summary)
        return
    table = Table(title=f"calibrated {result.profile.name} → {out}")
    table.add_column("field")
    table.add_column("value")
    for k, v in summary.items():
        if k != "step":
            table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    for k, v in result.profile.step.__dict__.items():
        table.add_row(f"step.{k}", f"{v:.6g}")
    console.print(table)


def collect_cmd(
    instance: Path = typer.Argument(..., help="Instance file: adapters (id, rank, rate), window, lengths."),
    max_loras: int = typer.Option(..., "--max-loras", help="GPU adapter slots (vLLM --max-loras)."),
    max_cpu_loras: int | None = typer.Option(None, "--max-cpu-loras", help="Host LoRA cache "
                                             "(default: adapters)."),
    max_lora_rank: int | None = typer.Option(None, "--max-lora-rank", help="Default: the largest rank."),
    url: str | None = typer.Option(None, "--url", help="Attach to a running server (http://host:port)."),
    model_path: str | None = typer.Option(None, "--model-path", help="Weights for "
                                            "`vllm serve` (HF id/path)."),
    lora_path: list[str] | None = typer.Option(None, "--lora-path", help="RANK=PATH of a LoRA adapter of "
                                               "that rank (repeat); each adapter of that rank serves a "
                                               "replica."),
    port: int = typer.Option(8000, "--port", help="Port of the launched server."),
    window: float | None = typer.Option(None, "--window", help="Window (s); default: the instance's."),
    seed: int = typer.Option(0, "--seed", help="Seed of the arrivals and lengths."),
    scrape: float = typer.Option(1.0, "--scrape-interval", help="Seconds between /metrics scrapes."),
    client_cap: int | None = typer.Option(None, "--client-cap", help="Most requests in flight (default: "
                                          "as many as file descriptors allow)."),
    ignore_eos: bool = typer.Option(True, "--ignore-eos/--honour-eos", help="Generate exactly max_tokens."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Runs CSV to append the record to."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Drive a real vLLM server (launched, or --url) with an instance's workload and record the run."""
    from placer.problem.io import read_instance
    from twin.calibration.harness import Collect, collect, write_records

    inst = read_instance(instance)
    if url is None and not lora_path:
        raise InputError("give --url of a running server, or --lora-path RANK=PATH to launch `vllm serve`",
                         field="--url", value=None)
    c = Collect(inst, max_loras=max_loras, max_cpu_loras=max_cpu_loras, max_lora_rank=max_lora_rank,
                seed=seed, window_s=window, scrape_s=scrape, ignore_eos=ignore_eos, client_cap=client_cap,
                workload_label=inst.name)
    row = collect(c, url=url, model_path=model_path, lora_paths=_lora_paths(lora_path), port=port)
    if out is not None:
        write_records(out, [row])
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
    if as_json:
        print_json(clean)
        return
    table = Table(title=f"collected run ({row['status']})" + (f" → {out}" if out else ""))
    table.add_column("column")
    table.add_column("value")
    for k, v in clean.items():
        table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    console.print(table)


def profiles_cmd(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List the profiles the twin can use: shipped (fitted) and derived from datasheets (UNCALIBRATED)."""
    from twin.catalogue import list_profiles

    rows = list_profiles()
    if as_json:
        print_json(rows)
        return
    table = Table(title="twin profiles")
    for col in ("model", "gpu", "calibrated", "version", "max_model_len", "KV tok (8×r16)", "base ms"):
        table.add_column(col)
    for r in rows:
        flag = "[green]yes[/]" if r["calibrated"] else "[bold red]NO (uncalibrated)[/]"
        table.add_row(str(r["model"]), str(r["gpu"]), flag, str(r["version"]), str(r["max_model_len"]),
                      str(r["kv_tokens_8x16"]), f"{float(r['base_ms']):.3g}")  # type: ignore[arg-type]
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``calibrate``, ``collect`` and ``profiles`` to the ``twin`` command group."""
    app.command("calibrate")(calibrate_cmd)
    app.command("collect")(collect_cmd)
    app.command("profiles")(profiles_cmd)
