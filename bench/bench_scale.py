"""End-to-end scale run: generate a large instance, solve it with the best heuristic, verify every GPU in the
twin on 2 cores, write the report; wall time per stage and the memory high-water mark. Protocol:
bench/scale.md.

Run: ``python bench/bench_scale.py [--adapters 10000] [--seed 0] [--solver ffd-bisect] [--oracle surrogate]``
(or under ``/usr/bin/time -v`` to cross-check the memory figure).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def _rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapters", type=int, default=10_000)
    ap.add_argument("--family", default="zipf")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--solver", default="ffd-bisect")
    ap.add_argument("--oracle", default="surrogate")
    ap.add_argument("--time-limit", type=float, default=600.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-report", action="store_true", help="skip the report folder stage")
    ap.add_argument("--no-repair", action="store_true", help="skip the repair stage (placer solve --repair)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    import placer
    from placer.check.repair import repair
    from placer.check.verify import verify
    from placer.oracle import make_oracle
    from placer.reporting.charts import plan_chart
    from placer.reporting.report import write_report
    from placer.solve import solve

    stages: dict[str, float] = {"import_s": time.perf_counter() - t_start}
    work = Path(tempfile.mkdtemp(prefix="placer-scale-"))
    row: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"), "adapters": args.adapters,
        "family": args.family, "seed": args.seed, "solver": args.solver, "oracle": args.oracle,
        "workers": args.workers, "cpus": os.cpu_count(), "python": platform.python_version()}

    t = time.perf_counter()
    inst_path = work / "scale.yaml"
    placer.write_instance(placer.generate(args.family, args.adapters, args.seed), inst_path)
    problem = placer.read_instance(inst_path)
    stages["generate_s"] = time.perf_counter() - t
    print(f"generate: {problem.n_adapters} adapters, {problem.total_rate_rps:.0f} req/s "
          f"in {stages['generate_s']:.1f} s", flush=True)

    t = time.perf_counter()
    oracle = make_oracle(problem, args.oracle)
    result = solve(problem, args.solver, time_limit=args.time_limit, seed=args.seed, oracle=oracle)
    stages["solve_s"] = time.perf_counter() - t
    print(f"solve: {result.num_gpus} GPUs (lower bound {result.lower_bound}, {result.status}) "
          f"in {stages['solve_s']:.1f} s", flush=True)

    t = time.perf_counter()
    report = verify(problem, result, seed=args.seed, workers=args.workers) if result.gpus else None
    stages["verify_s"] = time.perf_counter() - t
    if report is not None:
        print(f"verify: {len(report.simulated)} GPUs simulated, feasible={report.feasible}, "
              f"{len(report.failures)} failing, in {stages['verify_s']:.1f} s", flush=True)

    first = (result.num_gpus, len(report.failures) if report else None)
    t = time.perf_counter()
    if not args.no_repair and report is not None and not report.feasible:
        result = repair(problem, result, oracle, seed=args.seed, workers=args.workers)
        print(f"repair: {result.num_gpus} GPUs in {time.perf_counter() - t:.1f} s",
              flush=True)
    stages["repair_s"] = time.perf_counter() - t

    args.out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    if not args.no_report:
        write_report(problem, result, work / "report", seed=args.seed, workers=args.workers,
                     verification=report if result.num_gpus == first[0] else None)
    stages["report_s"] = time.perf_counter() - t
    plan_chart(problem, result, args.out / f"scale-{args.adapters}-plan.png",
               verification=report if result.num_gpus == first[0] else None)
    stages["total_s"] = time.perf_counter() - t_start
    shutil.rmtree(work, ignore_errors=True)

    sims = [g for g in (report.gpus if report else ()) if not g.get("oom")]
    row.update({k: round(v, 2) for k, v in stages.items()})
    row.update({
        "total_rate_rps": round(problem.total_rate_rps, 1), "num_gpus": first[0],
        "twin_failing_gpus": first[1], "num_gpus_repaired": result.num_gpus,
        "lower_bound": result.lower_bound, "status": result.status,
        "gpus_simulated": len(report.simulated) if report else 0,
        "twin_feasible": report.feasible if report else None,
        "twin_sim_wall_s_sum": round(sum(float(g.get("wall_s") or 0.0) for g in sims), 2),
        "maxrss_main_mb": round(_rss_mb(resource.RUSAGE_SELF), 1),
        "maxrss_workers_mb": round(_rss_mb(resource.RUSAGE_CHILDREN), 1),
    })
    csv_path = args.out / "scale.csv"
    new = not csv_path.exists()
    with csv_path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
    summary = args.out / f"scale-{dt.date.today().isoformat()}.md"
    lines = [f"# Scale run {row['date']} UTC", "",
             f"`python bench/bench_scale.py --adapters {args.adapters} --seed {args.seed} "
             f"--solver {args.solver} --oracle {args.oracle} --workers {args.workers}` "
             f"on {os.cpu_count()} CPUs, Python "
             f"{row['python']}.", "", "| stage | wall s |", "|---|--:|"]
    lines += [f"| {k[:-2]} | {v:.1f} |" for k, v in stages.items()]
    lines += ["", "| figure | value |", "|---|--:|"]
    lines += [f"| {k} | {row[k]} |" for k in ("total_rate_rps", "num_gpus", "lower_bound", "status",
                                              "gpus_simulated", "twin_feasible", "twin_failing_gpus",
                                              "num_gpus_repaired", "twin_sim_wall_s_sum", "maxrss_main_mb",
                                              "maxrss_workers_mb")]
    lines += ["", f"Plan chart: `scale-{args.adapters}-plan.png`.", ""]
    with summary.open("a") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"total {stages['total_s']:.1f} s; max RSS main {row['maxrss_main_mb']} MB, "
          f"workers {row['maxrss_workers_mb']} MB; rows in {csv_path}, summary in {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
