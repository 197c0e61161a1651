"""Adapter-load churn: the twin's GPU adapter loads per completed request against the scheduler-overhead runs.

The scheduler-overhead runs (calibration folder ``scheduler_overhead/metrics_data_aggregated_rate.csv``, read
where ``twin.external`` finds it; see docs/calibration.md in the shared folder) are 10-minute vLLM runs
with the fork's
counters: ``max_lora_loads_from_memory`` (adapter loads into GPU slots, the first fill included) per
``completed_requests``. Each is re-simulated with the Llama-3.1-8B profile (the files do not name the model;
the counts depend on the scheduling, not on the model's step time, to first order), its ``gpu_loras`` /
``cpu_loras`` / ``rank``, the aggregated ``rate`` split evenly over ``cpu_loras`` adapters, ShareGPT-like
lengths, seed 0, the 600 s window. Usage::

    python bench/bench_twin_loads.py [--max-rate 10] [--out bench/results/twin_loads_runs_<date>.csv]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from twin.catalogue import load_profile
from twin.external import data_file
from twin.metrics import smape_paper
from twin.profile import Profile
from twin.simulate import simulate
from twin.spec import Adapter, Instance, Workload

ROOT = Path(__file__).resolve().parents[1]
MODEL = "llama-3.1-8b-instruct"


def _instance(row: Any) -> Instance:
    n = int(row.cpu_loras)
    width = len(str(n - 1))
    adapters = tuple(Adapter(id=f"a{i:0{width}d}", rank=int(row.rank), rate_rps=float(row.rate) / n)
                     for i in range(n))
    return Instance(name=f"so-{row.gpu_loras}-{n}-{row.rank}-{row.rate}", model=MODEL, gpu="h100-64gb",
                    adapters=adapters, workload=Workload(duration_s=float(round(row.duration))))


def loads_rows(max_rate: float, profile: Profile | None = None) -> list[dict[str, Any]]:
    """One row per scheduler-overhead run with total rate ≤ ``max_rate``: real and twin loads per request
    (``profile``: the Llama profile to simulate with; default the shipped one)."""
    d = pd.read_csv(data_file("calibration", "scheduler_overhead/metrics_data_aggregated_rate.csv"))
    d = d[(d.rate <= max_rate) & (d.completed_requests > 0)]
    prof = profile if profile is not None else load_profile(MODEL, "h100-64gb")
    rows = []
    for row in d.itertuples():
        res = simulate(_instance(row), max_loras=int(row.gpu_loras), max_cpu_loras=int(row.cpu_loras),
                       max_lora_rank=int(row.rank), seed=0, profile=prof)
        rows.append({"gpu_loras": int(row.gpu_loras), "cpu_loras": int(row.cpu_loras), "rank": int(row.rank),
                     "rate_rps": float(row.rate), "profile": prof.version,
                     "loads_per_req_real": row.max_lora_loads_from_memory / row.completed_requests,
                     "loads_per_req_pred": res.gpu_loads / res.completed if res.completed else math.nan,
                     "completed_real": int(row.completed_requests), "completed_pred": res.completed})
    return rows


def loads_table(max_rate: float, out_csv: Path, profile: Profile | None = None) -> list[str]:
    """Run :func:`loads_rows`, write the CSV, return a markdown section (papers' SMAPE, median twin/real)."""
    t0 = time.perf_counter()
    df = pd.DataFrame(loads_rows(max_rate, profile))
    df.to_csv(out_csv, index=False)
    lines = ["## Adapter loads per completed request (scheduler-overhead runs)", "",
             f"{len(df)} runs with total rate ≤ {max_rate:g} req/s, Llama profile "
             f"v{df.profile.iloc[0] if len(df) else '?'}, {time.perf_counter() - t0:.0f} s; "
             f"rows in `{out_csv.name}`. Split by whether slots < served adapters (churn possible).", "",
             "| runs | n | real loads/req (median) | twin (median) | SMAPE % (papers') | median twin/real |",
             "|---|---|---|---|---|---|"]
    for label, g in (("gpu_loras < cpu_loras", df[df.gpu_loras < df.cpu_loras]),
                     ("gpu_loras = cpu_loras", df[df.gpu_loras == df.cpu_loras]), ("all", df)):
        g = g[np.isfinite(g.loads_per_req_pred) & (g.loads_per_req_real > 0)]
        if not len(g):
            continue
        lines.append(f"| {label} | {len(g)} | {g.loads_per_req_real.median():.3f} | "
                     f"{g.loads_per_req_pred.median():.3f} | "
                     f"{smape_paper(g.loads_per_req_real, g.loads_per_req_pred):.1f} | "
                     f"{float(np.median(g.loads_per_req_pred / g.loads_per_req_real)):.2f} |")
    return [*lines, ""]


def main() -> None:
    ap = argparse.ArgumentParser(description="Twin adapter loads vs the scheduler-overhead runs.")
    ap.add_argument("--max-rate", type=float, default=10.0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" /
                                         f"twin_loads_runs_{time.strftime('%Y-%m-%d')}.csv"))
    args = ap.parse_args()
    print("\n".join(loads_table(args.max_rate, Path(args.out))))


if __name__ == "__main__":
    main()
