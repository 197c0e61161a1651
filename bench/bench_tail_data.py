"""What the real runs say about tail latency (issue 13): the data analysis behind the twin's
metrics-scraper stall and prefill-spread pin. Reads the calibration folder where ``twin.external`` finds
it; simulates nothing.

Protocol and findings: bench/twin_fidelity.md, section "Tail latency: what the data says". Usage (from the
repository root)::

    python bench/bench_tail_data.py [--out bench/results/tail_data_<date>.md]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from twin.calibration.fit import METRICS_POLL_PAUSE_S
from twin.external import data_file

ROOT = Path(__file__).resolve().parents[1]
LIGHT = "rates_0.1_0.05_0.025"  # the light workloads: ~0.06 req/s per adapter


def _md(df: pd.DataFrame, fmt: str = "{:.3g}") -> list[str]:
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(fmt.format(v) if isinstance(v, float) else str(v) for v in r) + " |")
    return lines


def dt_real() -> pd.DataFrame:
    d = pd.read_csv(data_file("calibration", "real_runs.csv"), low_memory=False)
    d = d[(d.source == "dt_real") & (d.status == "ok")].copy()
    d["scrape_ms"] = (d.npy_span_s / (d.npy_samples - 1) - METRICS_POLL_PAUSE_S) * 1000
    d["first_use_share_%"] = 100 * d.n_adapters / d.completed
    d["rank"] = d.max_lora_rank.astype(int)
    return d


def light_table(d: pd.DataFrame) -> pd.DataFrame:
    """Light workloads, unstarved, mean waiting < 1: TTFT p50/p99, ITL p99 and the poller's scrape time, by
    adapters served."""
    g = d[d.workload.str.contains(LIGHT) & (d.starved == 0) & (d.mean_waiting < 1)]
    rows = []
    for (n, same), x in g.groupby([g.n_adapters, g.max_loras == g.max_cpu_loras]):
        rows.append({"adapters": int(str(n)), "slots = adapters": bool(same), "runs": len(x),
                     "req/s": float(x.total_rate_rps.median()),
                     "first-use share %": float(x["first_use_share_%"].median()),
                     "TTFT p50 ms": float(x.median_ttft_ms.median()),
                     "TTFT p99 ms": float(x.p99_ttft_ms.median()), "ITL p99 ms": float(x.p99_itl_ms.median()),
                     "mean running": float(x.mean_running.median()),
                     "scrape ms": float(x.scrape_ms.median())})
    return pd.DataFrame(rows)


def correlations(d: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlation of log p99 TTFT with candidate drivers, SLO-regime runs (real p99 TTFT ≤ 10 s)."""
    s = d[d.p99_ttft_ms <= 10_000]
    y = np.log(s.p99_ttft_ms)
    cols = {"scrape ms": s.scrape_ms.clip(lower=1), "adapters served": s.n_adapters,
            "total req/s": s.total_rate_rps, "mean running": s.mean_running.clip(lower=0.1),
            "max_loras": s.max_loras, "rank": s["rank"]}
    return pd.DataFrame([{"driver (log)": k, "corr with log p99 TTFT": float(np.corrcoef(np.log(v), y)[0, 1]),
                          "runs": len(s)} for k, v in cols.items()])


def loads_table() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scheduler-overhead runs: ms per adapter load where every adapter is loaded once from disk (slots =
    served), by rank; scheduler ms per step by waiting-queue band."""
    so = pd.read_csv(data_file("calibration", "scheduler_overhead/metrics_data_aggregated_rate.csv"))
    once = so[so.gpu_loras == so.cpu_loras]
    per_load = once.max_lora_loading_time * 1000 / once.cpu_loras
    t1 = (pd.DataFrame({"rank": once["rank"], "ms": per_load}).groupby("rank").ms
          .agg(["count", "median", "min", "max"]).reset_index())
    t1.columns = ["rank", "runs", "ms per first load (median)", "min", "max"]
    so = so.assign(sched_ms=so.total_scheduling_time / so.steps * 1000,
                   band=pd.cut(so.avg_waiting_queue, [-1, 1, 100, 1000, 5000, 10**6],
                               labels=["<1", "1-100", "100-1k", "1k-5k", ">5k"]))
    t2 = so.groupby("band", observed=True).sched_ms.agg(["count", "median", "max"]).reset_index()
    t2.columns = ["mean waiting", "runs", "sched ms/step (median)", "max"]
    return t1, t2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    stamp = time.strftime("%Y-%m-%d")
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"tail_data_{stamp}.md"
    d = dt_real()
    t_load, t_sched = loads_table()
    text = [f"# Tail latency: what the real runs say — {stamp}", "",
            f"Command: `python bench/bench_tail_data.py` ({time.strftime('%H:%M UTC', time.gmtime())}; reads "
            "the calibration CSVs, simulates nothing). Protocol: bench/twin_fidelity.md.", "",
            "## Light workloads (0.1/0.05/0.025 req/s per adapter), unstarved dt_real runs with mean waiting "
            "< 1, medians", "",
            "`first-use share %`: the first request of each adapter among the completed ones (a cold first "
            "use can set the p99 only above 1 %); `scrape ms`: the client's metrics poller's sample interval "
            f"minus its {METRICS_POLL_PAUSE_S:.0f} s pause (the time one GET /metrics took).", "",
            *_md(light_table(d)), "",
            "## What p99 TTFT moves with (SLO regime)", "", *_md(correlations(d), "{:.2f}"), "",
            "## Adapter loads when every adapter is loaded once (scheduler-overhead runs, slots = served)",
            "",
            *_md(t_load, "{:.2f}"), "",
            "## Scheduler CPU time per step by waiting queue (scheduler-overhead runs)", "",
            *_md(t_sched, "{:.3g}"), ""]
    out.write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
