"""Verification that scales out: re-simulate a ~1,000-GPU plan (100,000 adapters) on Ray, and the local pool
on a sample of the same plan, in one run. Protocol: bench/verify_scale.md.

Run: ``python bench/bench_verify_scale.py [--adapters 100000] [--total-rate-rps 25000] [--workers 2]
[--local-sample 100] [--date YYYY-MM-DD]`` (needs the ``ray`` extra). ``--local-sample 0`` verifies the whole
plan on the local pool too. The instance and plan files go to a temporary folder (or ``--work DIR``).
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
TIMING = ("wall_s",)  # per-GPU twin wall time: a measurement, left out when rows are compared


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _rows(gpus: Any) -> dict[int, dict[str, Any]]:
    return {int(g["gpu"]): {k: v for k, v in g.items() if k not in TIMING} for g in gpus}


def _sim_sum(gpus: Any) -> float:
    return round(sum(float(g.get("wall_s") or 0.0) for g in gpus), 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapters", type=int, default=100_000)
    ap.add_argument("--family", default="zipf")
    ap.add_argument("--total-rate-rps", type=float, default=25_000.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--local-sample", type=int, default=100,
                    help="GPUs the local pool verifies (seeded sample of the plan); 0 = all of them")
    ap.add_argument("--work", type=Path, default=None, help="instance and plan folder (default: temp)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--date", default=dt.date.today().isoformat(), help="date in the summary's file name")
    args = ap.parse_args(argv)

    import placer
    from placer.check.verify import verify
    from placer.result import Result
    from placer.solve import DEFAULT_SOLVER, DEFAULT_TIME_LIMIT, solve
    from twin.parallel import map_unordered

    os.environ.pop("RAY_ADDRESS", None)  # the protocol's Ray is a fresh local one with --workers CPUs
    work = args.work or Path(tempfile.mkdtemp(prefix="placer-verify-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    row: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"), "adapters": args.adapters,
        "family": args.family, "total_rate_rps": args.total_rate_rps, "seed": args.seed,
        "solver": DEFAULT_SOLVER, "time_limit_s": DEFAULT_TIME_LIMIT, "workers": args.workers,
        "cpus": os.cpu_count(), "python": platform.python_version(), "load_start": _load()}

    t = time.perf_counter()
    inst_path, plan_path = work / "instance.yaml", work / "plan.json"
    placer.write_instance(placer.generate(args.family, args.adapters, args.seed,
                                          total_rate_rps=args.total_rate_rps), inst_path)
    problem = placer.read_instance(inst_path)
    row["generate_s"] = round(time.perf_counter() - t, 2)
    print(f"generate: {problem.n_adapters} adapters, {problem.total_rate_rps:.0f} req/s "
          f"in {row['generate_s']} s", flush=True)

    t = time.perf_counter()
    plan = solve(problem, seed=args.seed)  # what `placer solve` does by default (solver, oracle, time limit)
    plan.save(plan_path)
    plan = Result.load(plan_path)  # verify reads the plan from disk, as `placer verify` does
    row["solve_s"] = round(time.perf_counter() - t, 2)
    row.update({"num_gpus": plan.num_gpus, "lower_bound": plan.lower_bound, "status": plan.status})
    print(f"solve: {plan.num_gpus} GPUs (lower bound {plan.lower_bound}, {plan.status}) "
          f"in {row['solve_s']} s", flush=True)

    t = time.perf_counter()
    assert list(map_unordered(abs, [-1], workers=args.workers, backend="ray")) == [1]
    row["ray_start_stop_s"] = round(time.perf_counter() - t, 2)  # Ray up, one trivial task, Ray down
    print(f"Ray start + one trivial task + stop: {row['ray_start_stop_s']} s", flush=True)

    row["load_before_ray"] = _load()
    t = time.perf_counter()
    on_ray = verify(problem, plan, seed=args.seed, workers=args.workers, backend="ray")
    row["ray_verify_s"] = round(time.perf_counter() - t, 2)
    row.update({"ray_gpus": len(on_ray.simulated), "ray_feasible": on_ray.feasible,
                "ray_failing_gpus": len(on_ray.failures), "ray_twin_sum_s": _sim_sum(on_ray.gpus)})
    print(f"verify on Ray: {len(on_ray.simulated)} GPUs, feasible={on_ray.feasible} in "
          f"{row['ray_verify_s']} s", flush=True)

    row["load_before_local"] = _load()
    sample = args.local_sample if 0 < args.local_sample < plan.num_gpus else None
    t = time.perf_counter()
    local = verify(problem, plan, seed=args.seed, workers=args.workers, backend="local", sample=sample)
    row["local_verify_s"] = round(time.perf_counter() - t, 2)
    row.update({"local_gpus": len(local.simulated), "local_twin_sum_s": _sim_sum(local.gpus)})
    print(f"verify on the local pool: {len(local.simulated)} GPUs in {row['local_verify_s']} s", flush=True)
    row["load_end"] = _load()

    ray_rows, local_rows = _rows(on_ray.gpus), _rows(local.gpus)
    row["rows_identical"] = all(ray_rows[j] == r for j, r in local_rows.items()) and bool(local_rows)
    ray_per_gpu = row["ray_verify_s"] / max(1, row["ray_gpus"])
    local_per_gpu = row["local_verify_s"] / max(1, row["local_gpus"])
    row["ray_s_per_gpu"] = round(ray_per_gpu, 4)
    row["local_s_per_gpu"] = round(local_per_gpu, 4)
    row["ray_over_local_per_gpu"] = round(ray_per_gpu / local_per_gpu, 3) if local_per_gpu else None
    row["maxrss_main_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    _write(args, row)
    return 0 if row["rows_identical"] else 1


def _write(args: argparse.Namespace, row: dict[str, Any]) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path = args.out / "verify_scale.csv"
    new = not csv_path.exists()
    with csv_path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
    local_what = ("the whole plan" if row["local_gpus"] == row["num_gpus"]
                  else f"a seeded sample of {row['local_gpus']} GPUs")
    lines = [
        f"# Verification at scale, run {row['date']} UTC", "",
        f"`python bench/bench_verify_scale.py --adapters {args.adapters} --total-rate-rps "
        f"{args.total_rate_rps:g} --seed {args.seed} --workers {args.workers} --local-sample "
        f"{args.local_sample}` on {row['cpus']} CPUs shared with other jobs (1-min load average "
        f"{row['load_start']} at the start, {row['load_end']} at the end), Python {row['python']}.", "",
        f"Instance: {args.family}, {args.adapters:,} adapters, {args.total_rate_rps:,.0f} req/s; plan by "
        f"`{row['solver']}` (default solver, surrogate oracle, {row['time_limit_s']:g} s limit).", "",
        "| stage | wall s | GPUs | sum of per-GPU twin wall s |", "|---|--:|--:|--:|",
        f"| generate (write + read back) | {row['generate_s']} | | |",
        f"| solve | {row['solve_s']} | {row['num_gpus']} (lower bound {row['lower_bound']}) | |",
        f"| verify, Ray, {args.workers} CPUs (Ray start and stop included) | {row['ray_verify_s']} | "
        f"{row['ray_gpus']} | {row['ray_twin_sum_s']} |",
        f"| verify, local pool, {args.workers} workers, {local_what} | {row['local_verify_s']} | "
        f"{row['local_gpus']} | {row['local_twin_sum_s']} |", "",
        f"Per GPU: Ray {row['ray_s_per_gpu']} s, local pool {row['local_s_per_gpu']} s; "
        f"ratio Ray / local = {row['ray_over_local_per_gpu']}. Starting Ray, running one trivial task and "
        f"stopping it took {row['ray_start_stop_s']} s on its own.",
        f"Twin verdict (Ray, all GPUs): feasible = {row['ray_feasible']}, {row['ray_failing_gpus']} failing.",
        f"Rows of the locally verified GPUs identical to Ray's (wall_s aside): {row['rows_identical']}.",
        f"Peak RSS of the driver process: {row['maxrss_main_mb']} MB.", ""]
    summary = args.out / f"verify_scale-{args.date}.md"
    with summary.open("a") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"rows in {csv_path}, summary in {summary}")


if __name__ == "__main__":
    sys.exit(main())
