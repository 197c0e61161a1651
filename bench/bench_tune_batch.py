"""``--tune-batch`` benchmark (issue 17 part 2): GPUs and memory headroom with and without the batch as a
decision variable, on the placement benchmark's instances, every plan twin-verified.

Protocol (bench/tune_batch.md): for each instance (``bench_placement.make_instance``: the placement
benchmark's families, sizes, rates and 3,600 s windows, llama-3.1-8b-instruct on h100-64gb, seed 0), solve
with ffd-bisect and the named oracle ("fixed": every GPU at the instance's max_num_seqs 2048 and
gpu_memory_utilization 0.9), then :func:`placer.tune.place_with_batch` (the batch search — the oracle
judges smaller caps where the default fails — kept only with fewer GPUs and twin-verified, then the advisor
per GPU). Both final plans are verified in the twin on every GPU (seed 0). Memory headroom = the KV memory
the GPUs' own ``gpu_memory_utilization`` gives back against 0.9 (GiB, the advisor's figure per GPU).

Run from the repository root: ``nice -n 10 python bench/bench_tune_batch.py --workers 1`` (default: the
twin oracle on the 16-adapter instances, the surrogate oracle on paper-256, dirichlet-500 and zipf-1000);
writes ``bench/results/tune_batch-DATE.{csv,md,png}``.
"""

# ruff: noqa: E501  (the summary writes Markdown table rows)
from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import shlex
import statistics
import time
from pathlib import Path
from typing import Any

from bench_placement import make_instance

from placer.check.verify import verify
from placer.oracle import make_oracle
from placer.solve import solve
from placer.tune import place_with_batch
from twin.files import atomic_write_bytes, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MODEL = "llama-3.1-8b-instruct"
TWIN_INSTANCES = ("paper-16", "zipf-16", "dirichlet-16")
SURROGATE_INSTANCES = ("paper-256", "dirichlet-500", "zipf-1000")
FIELDS = ("instance", "adapters", "oracle", "gpus_fixed", "gpus_searched", "searched_adopted", "gpus_tune_batch",
          "gpus_own_batch", "max_num_seqs_tuned", "util_tuned_min", "util_tuned_max", "freed_gib_total",
          "freed_gib_mean", "twin_fixed", "twin_tune_batch", "solve_s", "tune_batch_s", "note")


def run_one(name: str, oracle_kind: str, workers: int) -> dict[str, Any]:
    family, n = name.rsplit("-", 1)
    problem = make_instance(family, int(n), 0, MODEL)
    opts: dict[str, Any] = {"seed": 0} if oracle_kind == "twin" else {}
    oracle = make_oracle(problem, oracle_kind, **opts)
    start = time.perf_counter()
    plan = solve(problem, seed=0, oracle=oracle, time_limit=3600)
    solve_s = time.perf_counter() - start
    fixed = verify(problem, plan, seed=0, workers=workers)
    start = time.perf_counter()
    out = place_with_batch(problem, plan, oracle, seed=0, workers=workers, time_limit=3600)
    wall = time.perf_counter() - start
    checked = verify(problem, out.plan, seed=0, workers=workers)
    freed = [r.freed_gib for r in out.tuned] or [0.0]
    srv = problem.server
    seqs = sorted({g.server(srv).max_num_seqs for g in out.plan.gpus})
    utils = [g.server(srv).gpu_memory_utilization for g in out.plan.gpus] or [srv.gpu_memory_utilization]
    return {"instance": name, "adapters": int(n), "oracle": oracle_kind, "gpus_fixed": plan.num_gpus,
            "gpus_searched": "" if out.gpus_searched is None else out.gpus_searched,
            "searched_adopted": out.adopted, "gpus_tune_batch": out.plan.num_gpus,
            "gpus_own_batch": sum(t.tuned for t in out.tuned), "max_num_seqs_tuned": "/".join(map(str, seqs)),
            "util_tuned_min": min(utils), "util_tuned_max": max(utils),
            "freed_gib_total": round(sum(freed), 2), "freed_gib_mean": round(statistics.mean(freed), 2),
            "twin_fixed": fixed.feasible, "twin_tune_batch": checked.feasible, "solve_s": round(solve_s, 1),
            "tune_batch_s": round(wall, 1), "note": out.note}


def markdown(rows: list[dict[str, Any]], stamp: str, command: str, load: str) -> str:
    lines = [f"# `placer solve --tune-batch` against the fixed settings ({stamp})", "",
             f"Command: `{command}` (protocol: bench/tune_batch.md). Machine: {platform.machine()}, "
             f"{os.cpu_count()} cores shared with other jobs; load average at the start / end: {load}.", "",
             "Instances: the placement benchmark's (`bench_placement.make_instance`, seed 0, llama-3.1-8b-instruct "
             "on h100-64gb, default SLO: TTFT p99 ≤ 2 s, TPOT p99 ≤ 200 ms, served ≥ 0.9). Fixed = ffd-bisect "
             "with every GPU at max_num_seqs 2048 and gpu_memory_utilization 0.9. Searched = ffd-bisect with the "
             "oracle's batch dimension on (kept only with fewer GPUs, twin-verified). Freed = KV memory given back "
             "against 0.9 (GiB). Twin = every GPU of the plan simulated (seed 0).", "",
             "| instance | oracle | GPUs fixed | GPUs searched | GPUs --tune-batch | GPUs with own settings | max_num_seqs | gpu_memory_utilization | freed GiB total | per GPU | twin fixed | twin --tune-batch | solve (s) | --tune-batch (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        searched = r["gpus_searched"] if r["gpus_searched"] != "" else "not searched"
        lines.append(f"| {r['instance']} | {r['oracle']} | {r['gpus_fixed']} | {searched} | {r['gpus_tune_batch']} | "
                     f"{r['gpus_own_batch']} of {r['gpus_tune_batch']} | {r['max_num_seqs_tuned']} | "
                     f"{r['util_tuned_min']:g}–{r['util_tuned_max']:g} | {r['freed_gib_total']:.1f} | "
                     f"{r['freed_gib_mean']:.1f} | {'feasible' if r['twin_fixed'] else 'NOT feasible'} | "
                     f"{'feasible' if r['twin_tune_batch'] else 'NOT feasible'} | {r['solve_s']:.0f} | "
                     f"{r['tune_batch_s']:.0f} |")
    lines += ["", "Notes per instance (what the batch search did):", ""]
    lines += [f"- {r['instance']} ({r['oracle']}): {r['note']}" for r in rows]
    return "\n".join(lines) + "\n"


def chart(rows: list[dict[str, Any]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    names = [f"{r['instance']}\n({r['oracle']})" for r in rows]
    x = range(len(rows))
    ax1.bar([i - 0.2 for i in x], [int(r["gpus_fixed"]) for r in rows], 0.4, label="fixed (2048, 0.9)")
    ax1.bar([i + 0.2 for i in x], [int(r["gpus_tune_batch"]) for r in rows], 0.4, label="--tune-batch")
    ax1.set_ylabel("GPUs")
    ax1.set_title("GPUs (twin-verified)")
    ax2.bar(list(x), [float(r["freed_gib_total"]) for r in rows], 0.5, color="tab:green")
    ax2.set_ylabel("GiB")
    ax2.set_title("KV memory freed by --tune-batch (all GPUs)")
    for ax in (ax1, ax2):
        ax.set_xticks(list(x), names, fontsize=7)
    ax1.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--twin", default=",".join(TWIN_INSTANCES), help="instances solved with the twin oracle")
    ap.add_argument("--surrogate", default=",".join(SURROGATE_INSTANCES),
                    help="instances solved with the surrogate oracle")
    ap.add_argument("--date", default=time.strftime("%Y-%m-%d", time.gmtime()))
    ap.add_argument("--chart-from", default="", help="CSV files of earlier runs (comma-separated): draw their "
                    "rows into one chart, bench/results/tune_batch-DATE.png, and run nothing")
    args = ap.parse_args()
    if args.chart_from:
        rows = [r for f in args.chart_from.split(",") for r in csv.DictReader(io.StringIO(Path(f).read_text()))]
        atomic_write_bytes(RESULTS / f"tune_batch-{args.date}.png", chart(rows))
        return
    load = f"{os.getloadavg()[0]:.1f}"
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    command = ("nice -n 10 python bench/bench_tune_batch.py --workers " + str(args.workers)
               + f" --twin {shlex.quote(args.twin)} --surrogate {shlex.quote(args.surrogate)}")
    rows: list[dict[str, Any]] = []
    for kind, names in (("twin", args.twin), ("surrogate", args.surrogate)):
        for name in filter(None, names.split(",")):
            rows.append(run_one(name, kind, args.workers))
            print(rows[-1], flush=True)
            write(rows, args.date, started, command, f"{load} / {os.getloadavg()[0]:.1f}")


def write(rows: list[dict[str, Any]], date: str, started: str, command: str, load: str) -> None:
    """The results so far (rewritten after every instance, atomically)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(RESULTS / f"tune_batch-{date}.csv", buf.getvalue())
    atomic_write_text(RESULTS / f"tune_batch-{date}.md", markdown(rows, f"started {started}", command, load))
    atomic_write_bytes(RESULTS / f"tune_batch-{date}.png", chart(rows))


if __name__ == "__main__":
    main()
