"""``placer solve``, ``placer compare``, ``placer verify``, ``placer deploy``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from placer import deploy
from placer.check.compare import compare, rows_csv, write_csv
from placer.check.repair import repair
from placer.check.verify import DEFAULT_WORKERS, VerifyReport, verify
from placer.cli.common import (
    CRITERION,
    JSON_HELP,
    METRICS_SCRAPE,
    MODELS_HELP,
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
    err_console,
    load_context,
    print_json,
    say_if_compiling,
    with_slo,
)
from placer.cli.dynamic import day_cmd, deploy_diff
from placer.oracle import make_oracle
from placer.problem.io import read_instance
from placer.replicas import merge_replicas
from placer.reporting import charts as plots
from placer.reporting.progress import progress_bar, spinner
from placer.reporting.report import check_target, write_report
from placer.result import Result, plural
from placer.solve import DEFAULT_SOLVER, DEFAULT_TIME_LIMIT, solve, solver_names
from placer.tune import BatchPlacement, place_with_batch
from twin.errors import InputError
from twin.parallel import check_backend
from twin.replicas import check_replicas

MAX_ROWS = 40  # per-GPU rows shown in the rich table


def _oracle_options(margin: float | None, seed: int, oracle: str,
                    headroom: float | None = None) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if margin is not None:
        opts["margin"] = margin
    if headroom is not None:
        opts["headroom"] = headroom
    if oracle == "twin":
        opts["seed"] = seed
    return opts


def _fmt(x: float | None, spec: str = ".0f") -> str:
    return "-" if x is None else format(x, spec)


def _print_plan(result: Result, report: VerifyReport | None) -> None:
    head = Table(title=f"{result.instance}: {result.solver}", show_header=True)
    for col in ("status", "GPUs", "lower bound", "gap", "time (s)", "oracle"):
        head.add_column(col)
    gap = "-" if result.gap is None else f"{100 * result.gap:.1f}%"
    head.add_row(result.status_text, str(result.num_gpus), str(result.lower_bound), gap,
                 f"{result.runtime_s:.2f}", result.oracle)
    console.print(head)
    if result.reason and result.status != "infeasible":  # the infeasible reason goes to stderr, once
        console.print(f"[yellow]{result.reason}[/yellow]")
    if not result.gpus:
        return
    twin_rows = {row["gpu"]: row for row in report.gpus} if report else {}
    table = Table(show_header=True)
    cols = ("GPU", "adapters", "max_loras", "max_cpu_loras", "max_lora_rank", "pred. tok/s", "offered tok/s",
            "p_starved", *(("twin tok/s", "twin") if report else ()))
    for col in cols:
        table.add_column(col, justify="right")
    for j, g in enumerate(result.gpus[:MAX_ROWS]):
        extra: tuple[str, ...] = ()
        if report:
            row = twin_rows.get(j)
            extra = ("-", "not simulated") if row is None else (
                _fmt(row["throughput_tok_s"]),
                "OOM" if row["oom"] else ("[red]starved[/red]" if row["starved"] else "[green]ok[/green]"))
        table.add_row(str(j), str(len(g.adapters)), str(g.max_loras), str(g.max_cpu_loras),
                      str(g.max_lora_rank), _fmt(g.predicted_throughput_tok_s), _fmt(g.offered_tok_s),
                      _fmt(g.predicted_starved_probability, ".2f"), *extra)
    console.print(table)
    if len(result.gpus) > MAX_ROWS:
        console.print(f"... {plural(len(result.gpus) - MAX_ROWS, 'more GPU')} (see --out or --json)")
    if report:
        verdict = "[green]feasible[/green]" if report.feasible else "[red]NOT feasible[/red]"
        console.print(f"twin verification: {verdict}" + ("".join(f"\n  {f}" for f in report.failures)))


def _print_tuning(placement: BatchPlacement, seqs: int, util: float) -> None:
    tuned = placement.tuned
    table = Table(title=f"--tune-batch (instance: max_num_seqs {seqs}, gpu_memory_utilization {util:g})")
    for col in ("GPU", "max_num_seqs", "gpu_memory_utilization", "KV freed (GiB)", "tuned"):
        table.add_column(col, justify="right")
    for t in tuned[:MAX_ROWS]:
        table.add_row(str(t.gpu), str(t.max_num_seqs), f"{t.gpu_memory_utilization:g}", f"{t.freed_gib:.2f}",
                      "[green]yes[/green]" if t.tuned else f"[yellow]no[/yellow]: {t.note}")
    console.print(table)
    n, freed = sum(t.tuned for t in tuned), sum(t.freed_gib for t in tuned)
    console.print(f"{n} of {plural(len(tuned), 'GPU')} with their own settings, {freed:.2f} GiB of KV memory "
                  f"freed in all; {placement.note}")


def solve_cmd(
    instance: Path = typer.Argument(..., help="Instance file (YAML or JSON)."),
    solver: str = typer.Option(DEFAULT_SOLVER, "--solver", "-s",
                               help=f"One of: {', '.join(solver_names())}."),
    time_limit: float = typer.Option(DEFAULT_TIME_LIMIT, "--time-limit", help="Seconds for the solver."),
    seed: int = typer.Option(0, "--seed", help="Random seed: same seed, same plan."),
    oracle: str = typer.Option("surrogate", "--oracle", help="Feasibility oracle: surrogate | twin."),
    margin: float | None = typer.Option(None, "--margin",
                                        help="Safety margin: also require predicted throughput ≥ "
                                             "(0.9 + margin) × offered."),
    headroom: float | None = typer.Option(None, "--headroom",
                                          help="Judge each GPU at (1 + H) × its request rates "
                                               "(surrogate default 0.10, twin 0)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the plan (JSON) here."),
    do_verify: bool = typer.Option(False, "--verify", help="Re-simulate every GPU of the plan in the twin."),
    do_repair: bool = typer.Option(False, "--repair",
                                   help="Split GPUs that fail in the twin until every GPU passes."),
    tune_batch: bool = typer.Option(False, "--tune-batch",
                                    help="Make each GPU's max_num_seqs and gpu_memory_utilization "
                                         "decision variables: place again with the oracle searching smaller "
                                         "batch caps (kept only with fewer GPUs, twin-verified), then give "
                                         "every GPU the advisor's B_opt and the utilisation that holds its "
                                         "KV need (never above the instance's). Never more GPUs than "
                                         "without it."),
    replicas_per_gpu: int = typer.Option(1, "--replicas-per-gpu", help="Let a GPU host up to N vLLM "
                                         "servers, each with its own adapters and memory share: GPUs are "
                                         "merged as replicas only where the twin says every replica meets "
                                         "the criterion (placer.replicas)."),
    plot: Path | None = typer.Option(None, "--plot", help="Draw the plan chart here (.png or .svg): load "
                                     "by rank vs throughput, max_loras, per GPU."),
    report_dir: Path | None = typer.Option(None, "--report", help="Write a report folder here: plan, vLLM "
                                           "launch settings, twin verification, charts, README summary."),
    workers: int = typer.Option(DEFAULT_WORKERS, "--workers",
                                help="Processes simulating GPUs in parallel (--verify, --report)."),
    profile: Path | None = typer.Option(None, "--profile", help=PROFILE_HELP),
    metrics_scrape: float | None = METRICS_SCRAPE,
    models: Path | None = typer.Option(None, "--models", help=MODELS_HELP),
    periods: bool = typer.Option(False, "--periods", help="One plan per period of the instance's "
                                 "rate_profile, chained by replan; GPU-hours vs static peak provisioning "
                                 "(--out: the day as JSON, --plot: the day chart)."),
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
    """Place the adapters on as few GPUs as possible; print the plan (status, GPUs, bound, settings)."""
    plot = plots.check_path(plot) if plot is not None else None
    report_dir = check_target(report_dir) if report_dir is not None else None
    problem = with_slo(read_instance(instance), instance, criterion=criterion, ttft_p50=slo_ttft_p50,
                       ttft_p95=slo_ttft_p95, ttft_p99=slo_ttft_p99, tpot_p50=slo_tpot_p50,
                       tpot_p95=slo_tpot_p95, tpot_p99=slo_tpot_p99, min_served=slo_min_served)
    check_replicas(replicas_per_gpu, "--replicas-per-gpu")
    # the scraper reaches the twin runs (twin oracle, --verify, --repair, --tune-batch), not the surrogates
    context = load_context(profile, models, metrics_scrape_interval_s=metrics_scrape)
    the_oracle = make_oracle(problem, oracle, context=context,
                             **_oracle_options(margin, seed, oracle, headroom))
    if periods:
        with about_file(instance):
            day_cmd(problem, solver, time_limit, seed, the_oracle, out, plot, json_out)
        return
    if oracle == "twin" or do_verify or do_repair or report_dir is not None:
        say_if_compiling()
    with spinner(f"{solver}: placing {problem.n_adapters} adapters", enabled=not json_out), \
            about_file(instance):
        result = solve(problem, solver, time_limit=time_limit, seed=seed, oracle=the_oracle)
        if do_repair and result.gpus:
            result = repair(problem, result, the_oracle, seed=seed)
    placement: BatchPlacement | None = None
    if tune_batch and result.gpus:
        say_if_compiling()
        with progress_bar("batch: searching it, then the advisor per GPU", enabled=not json_out) as tick, \
                about_file(instance):
            placement = place_with_batch(problem, result, the_oracle, solver=solver, time_limit=time_limit,
                                         seed=seed, workers=workers, context=context, progress=tick)
        result = placement.plan
    if replicas_per_gpu > 1 and result.gpus:
        say_if_compiling()
        with progress_bar("twin: merging GPUs as replicas", enabled=not json_out) as tick, \
                about_file(instance):
            result = merge_replicas(problem, result, replicas_per_gpu, seed=seed, context=context,
                                    progress=tick)
    if out is not None:
        result.save(out)
    report = None
    if (do_verify or report_dir is not None) and result.gpus:
        with progress_bar("twin: simulating GPUs", enabled=not json_out) as tick:
            report = verify(problem, result, seed=seed, workers=workers, progress=tick, context=context)
    if plot is not None:
        plots.plan_chart(problem, result, plot, verification=report)
    if report_dir is not None:
        write_report(problem, result, report_dir, verification=report, seed=seed, workers=workers,
                     context=context)
    if json_out:
        doc = result.to_dict()
        if report is not None:
            doc["verification"] = report.to_dict()
        if tune_batch:
            doc["tune_batch"] = [t.to_dict() for t in (placement.tuned if placement else ())]
            if placement is not None:
                doc["batch_search"] = {k: v for k, v in placement.to_dict().items() if k != "gpus"}
        print_json(doc)
    else:
        _print_plan(result, report)
        if placement is not None:
            _print_tuning(placement, problem.server.max_num_seqs, problem.server.gpu_memory_utilization)
        if out is not None:
            console.print(f"plan written to {out}")
        if plot is not None:
            console.print(f"chart written to {plot}")
        if report_dir is not None:
            console.print(f"report written to {report_dir}/ (start with {report_dir}/README.md)")
    if result.status == "infeasible":  # no plan exists: the input's to fix (exit 2, like other bad input)
        err_console.print(f"[bold red]infeasible:[/bold red] {result.reason}", soft_wrap=True)
        raise typer.Exit(code=2)


def compare_cmd(
    instances: list[Path] = typer.Argument(..., help="Instance files."),
    solvers: str = typer.Option("greedy-paper,ffd-bisect,loraserve,dlora", "--solvers", "--solver", "-s",
                                help=f"Comma-separated, from: {', '.join(solver_names())} (--solver and -s "
                                     "are the same option, as on solve)."),
    time_limit: float = typer.Option(DEFAULT_TIME_LIMIT, "--time-limit", help="Seconds per solver run."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    oracle: str = typer.Option("surrogate", "--oracle", help="Feasibility oracle: surrogate | twin."),
    do_verify: bool = typer.Option(False, "--verify", help="Also re-simulate every plan in the twin."),
    workers: int = typer.Option(DEFAULT_WORKERS, "--workers",
                                help="Processes simulating GPUs in parallel (--verify)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the rows as CSV here."),
    plot: Path | None = typer.Option(None, "--plot", help="Draw GPUs and wall time per solver, with the "
                                     "lower bound (.png or .svg)."),
    profile: Path | None = typer.Option(None, "--profile", help=PROFILE_HELP),
    models: Path | None = typer.Option(None, "--models", help=MODELS_HELP),
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
    """Run several solvers on several instances: GPUs, gap to the lower bound, time, verified."""
    names = [s.strip() for s in solvers.split(",") if s.strip()]
    if not names:
        raise InputError("needs at least one solver name", field="--solvers", value=solvers)
    plot = plots.check_path(plot) if plot is not None else None
    if oracle == "twin" or do_verify:
        say_if_compiling()
    with progress_bar("solver runs", enabled=not json_out) as tick:
        rows = compare(instances, names, time_limit=time_limit, seed=seed, oracle=oracle,
                       verify_twin=do_verify, progress=tick, workers=workers,
                       context=load_context(profile, models),
                       slo_options={"criterion": criterion, "ttft_p50_s": slo_ttft_p50,
                                    "ttft_p95_s": slo_ttft_p95, "ttft_p99_s": slo_ttft_p99,
                                    "tpot_p50_ms": slo_tpot_p50, "tpot_p95_ms": slo_tpot_p95,
                                    "tpot_p99_ms": slo_tpot_p99, "min_served_fraction": slo_min_served})
    if plot is not None:
        plots.compare_chart(rows, plot)
    if out is not None:
        write_csv(rows, out)
    if json_out:
        print_json([r.to_dict() for r in rows])
        return
    table = Table(show_header=True)
    for col in ("file", "instance", "adapters", "solver", "status", "GPUs", "LB", "gap", "time (s)",
                "evaluator", *(("twin",) if do_verify else ())):
        table.add_column(col)
    for r in rows:
        ok = "[green]ok[/green]" if r.evaluator_feasible else f"[red]{r.evaluator_errors[:60]}[/red]"
        twin_col = () if not do_verify else ("-" if r.twin_feasible is None else
                                             ("[green]ok[/green]" if r.twin_feasible else "[red]fail[/red]"),)
        status = r.status if r.optimal_wrt is None else f"{r.status} (for the {r.optimal_wrt})"
        table.add_row(r.file or "-", r.instance, str(r.n_adapters), r.solver, status, str(r.num_gpus),
                      str(r.lower_bound),
                      "-" if r.gap is None else f"{100 * r.gap:.1f}%", f"{r.runtime_s:.2f}", ok, *twin_col)
    console.print(table)
    if out is not None:
        console.print(f"rows written to {out}")
    elif not rows:
        console.print(rows_csv(rows))


def verify_cmd(
    instance: Path = typer.Argument(..., help="Instance file."),
    plan: Path = typer.Argument(..., help="Plan file written by placer solve --out."),
    seed: int = typer.Option(0, "--seed", help="Seed of the twin runs."),
    seeds: int = typer.Option(1, "--seeds", help="Simulate every GPU with seeds SEED … SEED+N−1 and report "
                              "the fraction of seeds on which every checked GPU passes; exit 1 unless every "
                              "checked GPU passes on every seed."),
    workers: int = typer.Option(DEFAULT_WORKERS, "--workers", help="Processes simulating GPUs in parallel."),
    sample: int | None = typer.Option(None, "--sample", help="Simulate only this many GPUs (seeded)."),
    profile: Path | None = typer.Option(None, "--profile", help=PROFILE_HELP),
    metrics_scrape: float | None = METRICS_SCRAPE,
    backend: str = typer.Option("local", "--backend",
                                help="local (a process pool on this machine) or ray (the Ray cluster named "
                                     "by RAY_ADDRESS, else a local one; needs the ray extra)."),
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
    """Re-simulate every GPU of a plan in the twin; name each GPU that fails the criterion and by how much.

    Exit 0 when every checked GPU meets the criterion (the instance's slo section, overridden by the flags)
    on every seed (--seeds), 1 when one fails, 2 on bad input."""
    problem = with_slo(read_instance(instance), instance, criterion=criterion, ttft_p50=slo_ttft_p50,
                       ttft_p95=slo_ttft_p95, ttft_p99=slo_ttft_p99, tpot_p50=slo_tpot_p50,
                       tpot_p95=slo_tpot_p95, tpot_p99=slo_tpot_p99, min_served=slo_min_served)
    plan_ = Result.load(plan)
    check_backend(backend)  # an unknown backend, or ray without Ray, fails before any note or work
    say_if_compiling()
    with progress_bar("twin: simulating GPUs", enabled=not json_out) as tick, about_file(plan):
        report = verify(problem, plan_, seed=seed, workers=workers, sample=sample, progress=tick,
                        context=load_context(profile, None, metrics_scrape_interval_s=metrics_scrape),
                        backend=backend, seeds=seeds)
    if json_out:
        print_json(report.to_dict())
    else:
        _print_verification(report)
    if not report.feasible:  # a failed plan is exit 1 (CI can gate on it); bad input stays 2
        raise typer.Exit(code=1)


def _print_verification(report: VerifyReport) -> None:
    table = Table(show_header=True)
    many = len(report.seeds) > 1
    for col in ("GPU", "adapters", "max_loras", "max_lora_rank", "throughput tok/s", "offered tok/s",
                "arrived tok/s", "result", *(("seeds passing",) if many else ())):
        table.add_column(col, justify="right")
    for row in report.gpus[:MAX_ROWS]:
        res = "OOM" if row["oom"] else ("[red]starved[/red]" if row["starved"] else "[green]ok[/green]")
        extra = (f"{sum(row['seed_passed'])}/{len(row['seed_passed'])}",) if many else ()
        table.add_row(str(row["gpu"]), str(row["n_adapters"]), str(row["max_loras"]),
                      str(row["max_lora_rank"]), _fmt(row["throughput_tok_s"]),
                      _fmt(row.get("expected_offered_tok_s")), _fmt(row["offered_tok_s"]), res, *extra)
    console.print(table)
    console.print(report.summary(markup=True) + "".join(f"\n  {f}" for f in report.failures))


def deploy_cmd(
    instance: Path = typer.Argument(..., help="Instance file."),
    plan: Path | None = typer.Argument(None, help="Plan file written by placer solve --out (not with "
                                       "--diff)."),
    diff: tuple[Path, Path] | None = typer.Option(
        None, "--diff", help="OLD_PLAN NEW_PLAN: a bash script of the runtime loads/unloads, restarts, "
        "starts and stops that take the deployment of OLD_PLAN to NEW_PLAN (replan --out)."),
    format: str = typer.Option("shell", "--format", "-f",
                               help="shell (a supervising bash script), compose (Docker Compose) or k8s "
                                    "(a Deployment + Service per GPU)."),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="Write the launch file here, and routes.json (adapter id -> server "
                                         "URL) beside it."),
    adapter_dir: str = typer.Option("adapters", "--adapter-dir",
                                    help="Folder with one folder per adapter (compose mounts it at "
                                         "/adapters)."),
    base_port: int = typer.Option(8000, "--base-port", help="Port of GPU 0's server (GPU j: base + j)."),
    host: str = typer.Option("localhost", "--host", help="Host name in the routes of shell and compose."),
    image: str = typer.Option(deploy.DEFAULT_IMAGE, "--image", help="vLLM image of compose and k8s."),
    namespace: str = typer.Option("default", "--namespace", help="k8s: the namespace of the objects."),
    adapter_claim: str = typer.Option("lora-adapters", "--adapter-claim",
                                      help="k8s: the PersistentVolumeClaim holding the adapters."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Deploy a plan: per-GPU vLLM servers as a bash script, a Compose file or Kubernetes manifests."""
    if diff is not None or plan is None:
        deploy_diff(instance, plan, diff, out, adapter_dir, base_port, host, json_out)
        return
    with about_file(plan):  # a plan that does not fit the instance is the plan file's error
        dep = deploy.deployment(read_instance(instance), Result.load(plan), format=format,
                                adapter_dir=adapter_dir, base_port=base_port, host=host, image=image,
                                namespace=namespace, adapter_claim=adapter_claim)
    files = [] if out is None else deploy.write_deployment(dep, out)
    if json_out:
        print_json(dep.to_dict([str(f) for f in files]))
    elif out is None:
        console.print(dep.text, end="", markup=False, highlight=False, soft_wrap=True)
    else:
        console.print(f"{dep.format} launch file written to {files[0]}, routes to {files[1]}")


def register(app: typer.Typer) -> None:
    """Add solve, compare, verify and deploy to ``app``."""
    app.command("solve")(solve_cmd)
    app.command("compare")(compare_cmd)
    app.command("verify")(verify_cmd)
    app.command("deploy")(deploy_cmd)
