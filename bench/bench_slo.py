"""SLO benchmark (protocol: bench/slo.md): the twin's latency fidelity on the real runs, and SLO-aware plans
verified GPU by GPU in the twin.

    PYTHONPATH=. nice -n 10 python bench/bench_slo.py [--runs 40] [--workers 2] [--date 2026-12-04]

Writes bench/results/slo_fidelity_<date>.csv, slo_plans_<date>.csv, slo_summary_<date>.md and
slo_frontier_<date>.png.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from placer.check.verify import verify
from placer.frontier import frontier
from placer.oracle import make_oracle
from placer.problem.io import read_instance
from placer.reporting.charts import frontier_chart
from placer.solve import solve
from twin.calibration.replay import DEFAULT_CLIENT_CAP
from twin.calibration.runs import load_runs
from twin.catalogue import load_profile
from twin.external import data_file
from twin.files import atomic_write_text
from twin.metrics import smape_paper
from twin.simulate import simulate
from twin.spec import Slo

ROOT = Path(__file__).resolve().parents[1]
INSTANCES = ("tiny", "qwen", "medium")
TTFT_LEVELS = (1.0, 2.0, 5.0)
SOLVERS = ("ffd-bisect", "greedy-paper")


def fidelity(n_runs: int, seed: int) -> pd.DataFrame:
    """Twin vs real latency on a seeded sample of the non-starved, non-OOM dt_real runs (both models)."""
    runs = [r for r in load_runs(data_file("calibration", "real_runs.csv"))
            if not r.oom and not r.starved and math.isfinite(r.p99_ttft_ms)]
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(runs), size=min(n_runs, len(runs)), replace=False).tolist())
    rows = []
    for i in pick:
        run = runs[i]
        res = simulate(run.instance(seed=0), max_loras=run.max_loras, max_cpu_loras=run.max_cpu_loras,
                       max_lora_rank=run.max_lora_rank, seed=0, profile=load_profile(run.model, run.gpu),
                       max_inflight=DEFAULT_CLIENT_CAP, drop_over_limit=True)
        rows.append({"model": run.model, "max_loras": run.max_loras, "n_adapters": run.max_cpu_loras,
                     "ttft_p50_real_s": run.median_ttft_ms / 1e3, "ttft_p50_twin_s": res.ttft_p50_s,
                     "ttft_p99_real_s": run.p99_ttft_ms / 1e3, "ttft_p99_twin_s": res.ttft_p99_s,
                     "tpot_mean_real_s": run.mean_itl_ms / 1e3, "itl_mean_twin_s": res.itl_mean_s,
                     "tpot_p50_twin_s": res.tpot_p50_s, "served_twin": res.served_fraction})
    return pd.DataFrame(rows)


def plans(workers: int) -> pd.DataFrame:
    """Each instance × TTFT p99 level (TPOT p99 200 ms) × solver: GPUs, bound, and for ffd-bisect every GPU
    verified in the twin under the SLO it was solved for."""
    rows: list[dict[str, Any]] = []
    for name in INSTANCES:
        base = read_instance(ROOT / "instances" / "examples" / f"{name}.yaml")
        oracle = make_oracle(base, "surrogate")
        for ttft in TTFT_LEVELS:
            problem = base.replace(slo=Slo(ttft_p99_s=ttft, tpot_p99_ms=200.0))
            for solver in SOLVERS:
                t0 = time.perf_counter()
                res = solve(problem, solver, time_limit=30, seed=0, oracle=oracle)
                row = {"instance": name, "adapters": problem.n_adapters, "model": problem.model,
                       "ttft_p99_s": ttft, "tpot_p99_ms": 200.0, "solver": solver, "status": res.status,
                       "num_gpus": res.num_gpus, "lower_bound": res.lower_bound,
                       "solve_s": time.perf_counter() - t0, "verified_gpus": 0, "slo_failures": math.nan}
                if solver == "ffd-bisect" and res.gpus:
                    rep = verify(problem, res, seed=0, workers=workers)
                    row.update(verified_gpus=len(rep.simulated), slo_failures=len(rep.failures),
                               failures="; ".join(rep.failures)[:400])
                rows.append(row)
    return pd.DataFrame(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=40, help="real runs re-simulated for the fidelity part")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    args = ap.parse_args()
    out = ROOT / "bench" / "results"
    t0 = time.perf_counter()
    fid = fidelity(args.runs, args.seed)
    atomic_write_text(out / f"slo_fidelity_{args.date}.csv", fid.to_csv(index=False))
    t_fid = time.perf_counter() - t0
    pl = plans(args.workers)
    atomic_write_text(out / f"slo_plans_{args.date}.csv", pl.to_csv(index=False))
    medium = read_instance(ROOT / "instances" / "examples" / "medium.yaml")
    points = frontier(medium, [0.5, 1, 2, 5, 10], time_limit=30)
    frontier_chart(points, out / f"slo_frontier_{args.date}.png", title="medium: GPUs needed per SLO")
    wall = time.perf_counter() - t0
    atomic_write_text(out / f"slo_summary_{args.date}.md", summary(fid, pl, points, args, t_fid, wall))
    print((out / f"slo_summary_{args.date}.md").read_text())
    return 0


def _ratio(a: pd.Series, b: pd.Series) -> float:
    ok = np.isfinite(a) & np.isfinite(b) & (b > 0)
    return float(np.median(a[ok] / b[ok])) if ok.any() else math.nan


def summary(fid: pd.DataFrame, pl: pd.DataFrame, points: list[Any], args: Any, t_fid: float,
            wall: float) -> str:
    lines = [f"# SLO benchmark — {args.date}", "",
             "`PYTHONPATH=. nice -n 10 python bench/bench_slo.py "
             f"--runs {args.runs} --workers {args.workers}` (protocol: bench/slo.md); "
             f"{wall:.0f} s wall on the shared 2-core machine.", "",
             "## Twin latency fidelity on the real runs (dt_real, non-starved, non-OOM)", "",
             f"{len(fid)} runs re-simulated ({t_fid:.0f} s). Ratio = median over runs of twin / real; "
             "SMAPE in the papers' form.", "",
             "| metric | median twin/real | SMAPE (papers') |", "|---|--:|--:|"]
    for label, twin_col, real_col in (("TTFT p50", "ttft_p50_twin_s", "ttft_p50_real_s"),
                                      ("TTFT p99", "ttft_p99_twin_s", "ttft_p99_real_s"),
                                      ("ITL mean (real: mean ITL)", "itl_mean_twin_s",
                                       "tpot_mean_real_s")):
        ok = np.isfinite(fid[twin_col]) & np.isfinite(fid[real_col])
        lines.append(f"| {label} | {_ratio(fid[twin_col], fid[real_col]):.2f} | "
                     f"{smape_paper(fid[real_col][ok], fid[twin_col][ok]):.1f} % |")
    lines += ["", "## SLO-aware plans (surrogate oracle), ffd-bisect verified GPU by GPU in the twin", "",
              "| instance | adapters | TTFT p99 ≤ | solver | GPUs | lower bound | verified GPUs "
              "| SLO failures |",
              "|---|--:|--:|---|--:|--:|--:|--:|"]
    for r in pl.itertuples():
        fails = "–" if not r.verified_gpus else str(int(r.slo_failures))
        lines.append(f"| {r.instance} | {r.adapters} | {r.ttft_p99_s:g} s | {r.solver} | {r.num_gpus} | "
                     f"{r.lower_bound} | {r.verified_gpus or '–'} | {fails} |")
    ffd = pl[pl.solver == "ffd-bisect"].set_index(["instance", "ttft_p99_s"]).num_gpus
    gp = pl[pl.solver == "greedy-paper"].set_index(["instance", "ttft_p99_s"]).num_gpus
    worse = int((ffd > gp).sum())
    verified = pl[pl.verified_gpus > 0]
    lines += ["", f"ffd-bisect uses more GPUs than greedy-paper on {worse} of {len(ffd)} (instance, SLO) "
              f"pairs. SLO failures in the twin: {int(verified.slo_failures.sum())} of "
              f"{int(verified.verified_gpus.sum())} verified GPUs.", "",
              "## Frontier of instances/examples/medium.yaml (ffd-bisect, surrogate oracle)", "",
              "| criterion | GPUs | lower bound | status |", "|---|--:|--:|---|"]
    lines += [f"| {p.criterion} | {p.num_gpus} | {p.lower_bound} | {p.status} |" for p in points]
    lines += ["", f"![frontier](slo_frontier_{args.date}.png)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
