"""Does averaging the surrogate's twin labels over 2 seeds lower their noise? (issue 13)

Protocol (also in the summary this writes):

- Configurations: samples 0 … N−1 of the surrogate sweep with seed S (``surrogate.sampling.draw_sample``, the
  shipped profiles ``DEFAULT_PROFILES``, 3,600 s windows) — the same distribution the shipped surrogates are
  trained on.
- Each configuration is run by ``surrogate.dataset.run_sample`` with 6 seeds of the request stream: the
  sample's own seed s and s+1 … s+5 (mod 2³¹−1). Seeds s, s+1 give the labels; seeds s+2 … s+5 give an
  independent reference (their mean), so neither label shares a run with the reference.
- Labels compared: *single* = seed s; *mean-of-2* = the mean of seeds s and s+1 (throughput: mean of
  ``sim_throughput_tok_s``; starved: mean throughput < 0.9 × mean arrived load ``sim_offered_tok_s``).
  Reference: the same over seeds s+2 … s+5.
- Metrics (runs that start, i.e. not OOM): papers' SMAPE (100·mean|a−b|/(a+b)) of each label against the
  reference; the share of configurations whose starved verdict differs from the reference's; the same for
  seed s+1 alone (a second single-seed estimate) and single-seed vs single-seed (s vs s+1).

Usage: ``python bench/bench_label_noise.py [--samples 300] [--seed 11] [--out-dir bench/results]``. Writes
``label_noise_runs_<date>.csv`` (one row per configuration × seed) and ``label_noise_<date>.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from surrogate.dataset import DEFAULT_PROFILES, run_sample
from surrogate.sampling import draw_sample
from twin.metrics import smape_paper

ROOT = Path(__file__).resolve().parents[1]
N_SEEDS = 6  # 2 for the labels, 4 for the reference
MAX_SEED = 2**31 - 1


def run(samples: int, seed: int) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for i in range(samples):
        spec = draw_sample(seed, i, DEFAULT_PROFILES)
        for k in range(N_SEEDS):
            row = run_sample({**spec, "seed": (int(spec["seed"]) + k) % MAX_SEED})
            rows.append({"sample": i, "k": k, "profile": spec["profile"], "n_adapters": spec["n_adapters"],
                         "max_loras": spec["max_loras"], "target_load": spec["target_load"],
                         "error": row["error"], "oom": row.get("sim_oom"),
                         "throughput": row.get("sim_throughput_tok_s"),
                         "offered": row.get("sim_offered_tok_s"),
                         "starved": row.get("sim_starved"), "run_s": row["run_s"]})
        if (i + 1) % 25 == 0:
            print(f"  {i + 1}/{samples} configurations", flush=True)
    return pd.DataFrame(rows)


def _mean_label(g: pd.DataFrame, ks: list[int]) -> tuple[float, float]:
    """(mean throughput, mean arrived load) over the seeds ``ks`` of one configuration."""
    d = g[g.k.isin(ks)]
    return float(d.throughput.mean()), float(d.offered.mean())


LABELS = {"single s": [0], "single s+1": [1], "mean-of-2": [0, 1], "ref": [2, 3, 4, 5]}


def summarize(df: pd.DataFrame) -> dict[str, Any]:
    ok = df.groupby("sample").filter(lambda g: g.error.isna().all() and not g.oom.astype(bool).any())
    pairs = {k: np.array([_mean_label(g, ks) for _, g in ok.groupby("sample")]).reshape(-1, 2)
             for k, ks in LABELS.items()}
    thr = {k: v[:, 0] for k, v in pairs.items()}
    starved = {k: v[:, 0] < 0.9 * v[:, 1] for k, v in pairs.items()}
    served_ref = pairs["ref"][:, 0] / np.maximum(pairs["ref"][:, 1], 1e-9)
    near = np.abs(served_ref - 0.9) < 0.05
    out: dict[str, Any] = {"configurations": int(df["sample"].nunique()), "started (not OOM, no error)":
                           len(served_ref), "reference starved %": 100 * float(starved["ref"].mean())}
    for k in ("single s", "single s+1", "mean-of-2"):
        out[f"{k}: throughput SMAPE vs reference %"] = smape_paper(thr["ref"], thr[k])
        out[f"{k}: starved verdict differs from reference %"] = 100 * float(
            (starved[k] != starved["ref"]).mean())
    out["single s vs single s+1: throughput SMAPE %"] = smape_paper(thr["single s"], thr["single s+1"])
    out["single s vs single s+1: starved verdict differs %"] = 100 * float(
        (starved["single s"] != starved["single s+1"]).mean())
    rng = np.random.default_rng(0)  # paired bootstrap of the SMAPE gain over configurations
    e1 = np.abs(thr["single s"] - thr["ref"]) / (thr["single s"] + thr["ref"])
    e2 = np.abs(thr["mean-of-2"] - thr["ref"]) / (thr["mean-of-2"] + thr["ref"])
    boot = [100 * float((e1 - e2)[idx].mean()) for idx in rng.integers(0, len(e1), (2000, len(e1)))]
    out["SMAPE gain single s → mean-of-2, points (95 % bootstrap)"] = (
        f"{100 * float((e1 - e2).mean()):.2f} "
        f"[{np.percentile(boot, 2.5):.2f}, {np.percentile(boot, 97.5):.2f}]")
    out["near the line (|reference served − 0.9| < 0.05)"] = int(near.sum())
    for k in ("single s", "mean-of-2"):
        out[f"{k}: starved verdict differs near the line %"] = (
            100 * float((starved[k][near] != starved["ref"][near]).mean()) if near.any() else float("nan"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="Surrogate label noise: single seed vs mean of 2 (issue 13).")
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--seed", type=int, default=11, help="sweep seed of the configurations")
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--stamp", default=time.strftime("%Y-%m-%d"))
    args = ap.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    df = run(args.samples, args.seed)
    wall = time.perf_counter() - t0
    df.to_csv(out / f"label_noise_runs_{args.stamp}.csv", index=False)
    s = summarize(df)
    lines = [f"# Surrogate label noise: single seed vs mean of 2 — {args.stamp}", "",
             f"Command: `python bench/bench_label_noise.py {' '.join(sys.argv[1:])}` ({wall:.0f} s wall, "
             f"{df.run_s.sum():.0f} s in the twin). Protocol: the module docstring of "
             "bench/bench_label_noise.py.",
             "", "| metric | value |", "|---|---|",
             *(f"| {k} | {v:.2f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in s.items()), ""]
    (out / f"label_noise_{args.stamp}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
