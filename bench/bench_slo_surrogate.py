"""Latency surrogates against a FRESH twin sweep (issue 14): before/after a retrain.

Protocol:

- Fresh data: a ``latency``-focus sweep (``surrogate.dataset.sweep(..., focus="latency")``) with a seed that
  no training sweep used (default 777, 400 runs, both shipped profiles, 3,600 s windows), kept in
  ``--dataset`` (resumable; made when absent).
- Each models directory (``--models``, repeatable, e.g. the shipped ``surrogate/models`` and a candidate) is
  loaded per profile (``Surrogate.load``) and scored on every usable row of the fresh sweep by
  ``surrogate.evaluate.score_frame``: SMAPE in the papers' form (``100 · mean(|a − b| / (|a| + |b|))``) of
  each latency percentile, TTFT p99 SMAPE on the rows whose twin TTFT p99 is ≤ 10 s, and the F1 of "meets
  the default SLO" (served ≥ 0.9 by the starvation verdict, TTFT p99 ≤ 2 s, TPOT p99 ≤ 200 ms) against the
  twin's verdict on the same row.
- ``--twin-noise``: the same fresh configurations re-run with the next request-stream seed (sample seed + 1,
  ``surrogate.dataset.run_sample``) and scored as if that second twin run were a surrogate — the twin's own
  noise floor for the same metrics (a surrogate trained on single twin runs cannot be expected to beat it
  by much).

Usage: ``PYTHONPATH=. python bench/bench_slo_surrogate.py --dataset build/slo-eval-777-latency
--models surrogate/models --models build/models-new [--samples 400 --seed 777] [--out FILE.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from surrogate.bundle import Surrogate
from surrogate.dataset import DEFAULT_PROFILES, load_dataset, run_sample, sweep
from surrogate.evaluate import score_predictions
from surrogate.model import LATENCY_TARGETS
from surrogate.sampling import draw_sample
from surrogate.train import usable
from twin.files import atomic_write_text
from twin.spec import ServerSettings, Slo

MAX_SEED = 2**31 - 1

KEYS = ("rows", "rows_ttft_p99_below_10s", "ttft_p99_s_smape_pct_below_10s", "ttft_p99_s_smape_pct",
        "ttft_p50_s_smape_pct", "tpot_p99_s_smape_pct", "default_slo_f1", "default_slo_share")


def evaluate(models: Path, frame: Any) -> dict[str, Any]:
    """Scores of the bundles in ``models`` (every shipped profile) on a sweep frame, overall, per profile
    and per ``max_num_seqs`` regime (the instance's default, or another value: sampler version ≥ 6)."""
    from surrogate.evaluate import latency_scores, predictions_frame

    rows = predictions_frame({name: Surrogate.load(models, name) for name in DEFAULT_PROFILES}, frame)
    out = score_predictions(rows)
    out["verdict_misses"] = verdict_misses(rows)
    bins = pd.cut(rows["target_load"], LOAD_BINS)
    out["by_load"] = {str(b): {"rows": float(len(r)), **latency_scores(r)}
                      for b, r in rows.groupby(bins, observed=True)}
    if "max_num_seqs" in rows:
        own = ServerSettings().max_num_seqs
        default = rows["max_num_seqs"].fillna(own) == own
        out["by_max_num_seqs"] = {k: {"rows": float(sel.sum()), **latency_scores(rows[sel])}
                                  for k, sel in (("default", default), ("other", ~default))}
    return out


LOAD_BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 2.0)  # offered load / capacity estimate (the sampled load)


def verdict_misses(rows: Any) -> dict[str, float]:
    """False positives / negatives of "meets the default SLO" and, for each, how many are wrong on each
    part of the verdict (served fraction, TTFT p99 bound, TPOT p99 bound)."""
    slo = {m: b for _, m, b in Slo().limits()}
    truth = {"served": ~rows["starved"].to_numpy(dtype=bool)}
    pred = {"served": ~rows["pred_starved"].to_numpy(dtype=bool)}
    for m, bound in slo.items():
        y, p = rows[m].to_numpy(dtype=float), rows[f"pred_{m}"].to_numpy(dtype=float)
        truth[m], pred[m] = ~(np.isfinite(y) & (y > bound)), ~(np.isfinite(p) & (p > bound))
    t, p = np.logical_and.reduce(list(truth.values())), np.logical_and.reduce(list(pred.values()))
    out = {"true_meets": float(t.sum()), "pred_meets": float(p.sum()), "false_pos": float((p & ~t).sum()),
           "false_neg": float((~p & t).sum())}
    for part in truth:
        wrong = truth[part] != pred[part]
        out[f"false_pos_wrong_on_{part}"] = float((p & ~t & wrong).sum())
        out[f"false_neg_wrong_on_{part}"] = float((~p & t & wrong).sum())
    return out


def speed(models: Path) -> dict[str, float]:
    """Batched prediction time per row (µs; features, throughput, starvation and the latency models of the
    default SLO, then of all six percentiles) on a placement-sized instance, the best of 5 timings."""
    from surrogate.evaluate import timing, timing_instance

    name = DEFAULT_PROFILES[0]
    bundle, inst = Surrogate.load(models, name), timing_instance(name)
    slo = ("ttft_p99_s", "tpot_p99_s")
    return {f"predict_us_per_row_{k}": min(timing(bundle, inst, repeats=1, latency=lat)["predict_us_per_row"]
                                           for _ in range(5))
            for k, lat in (("none", ()), ("default_slo", slo), ("all_latency", LATENCY_TARGETS))}


def paired_bootstrap(models: list[Path], frame: Any, n: int = 2000, seed: int = 0) -> dict[str, list[float]]:
    """95 % paired bootstrap intervals (rows resampled) of second − first models' metrics on the same rows."""
    from surrogate.evaluate import latency_scores, predictions_frame

    a, b = (predictions_frame({p: Surrogate.load(m, p) for p in DEFAULT_PROFILES}, frame) for m in models)
    rng = np.random.default_rng(seed)
    keys = ("ttft_p99_s_smape_pct_below_10s", "ttft_p99_s_smape_pct", "tpot_p99_s_smape_pct",
            "default_slo_f1")
    deltas: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(n):
        idx = rng.integers(0, len(a), len(a))
        sa, sb = latency_scores(a.iloc[idx]), latency_scores(b.iloc[idx])
        for k in keys:
            deltas[k].append(sb[k] - sa[k])
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in deltas.items()}


def _rerun(spec: dict[str, Any]) -> dict[str, Any]:
    return run_sample({**spec, "seed": (int(spec["seed"]) + 1) % MAX_SEED})


def twin_noise(frame: Any, seed: int, workers: int) -> dict[str, Any]:
    """Scores of a second twin run (next request seed) of each usable fresh row against the first."""
    from concurrent.futures import ProcessPoolExecutor

    frame = usable(frame).sort_values("sample").reset_index(drop=True)
    specs = [draw_sample(seed, int(i), DEFAULT_PROFILES, focus="latency") for i in frame["sample"]]
    with ProcessPoolExecutor(workers) as pool:
        again = pd.DataFrame(list(pool.map(_rerun, specs, chunksize=8)))
    rows = pd.DataFrame({"profile": frame["profile"],
                         "throughput_tok_s": frame["sim_throughput_tok_s"].to_numpy(dtype=float),
                         "pred_throughput_tok_s": again["sim_throughput_tok_s"].to_numpy(dtype=float),
                         "starved": frame["sim_starved"].to_numpy(dtype=bool),
                         "pred_starved": again["sim_starved"].fillna(True).to_numpy(dtype=bool)})
    for t in LATENCY_TARGETS:
        rows[t] = frame[f"sim_{t}"].to_numpy(dtype=float)
        rows[f"pred_{t}"] = again[f"sim_{t}"].to_numpy(dtype=float) if f"sim_{t}" in again else np.nan
    return score_predictions(rows)


def _row(label: str, s: dict[str, Any]) -> str:
    return "| " + " | ".join([label] + [f"{s.get(k, float('nan')):.4g}" for k in KEYS]) + " |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, required=True, help="fresh sweep directory (made when absent)")
    ap.add_argument("--models", type=Path, action="append", required=True, help="models directory")
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--twin-noise", action="store_true", help="also score a second twin run (seed + 1)")
    ap.add_argument("--out", type=Path, help="write the scores as JSON here")
    a = ap.parse_args(argv)
    sweep(a.samples, a.seed, a.dataset, workers=a.workers, focus="latency", quiet=True)
    frame = load_dataset(a.dataset)
    results: dict[str, Any] = {str(m): evaluate(m, frame) for m in a.models}
    for m in a.models:
        results[str(m)]["speed"] = speed(m)
        print(m, "speed:", json.dumps(results[str(m)]["speed"]))
    if len(a.models) == 2:
        ci = paired_bootstrap(a.models, frame)
        results["paired_bootstrap_95_second_minus_first"] = ci
        print("95 % paired bootstrap of second − first:", json.dumps(ci))
    if a.twin_noise:
        results["twin (seed + 1)"] = twin_noise(frame, a.seed, a.workers)
    print("| models | " + " | ".join(KEYS) + " |")
    print("|---|" + "--:|" * len(KEYS))
    for m, s in results.items():
        if "by_profile" not in s:
            continue
        print(_row(m, s))
        for prof, ps in s["by_profile"].items():
            print(_row(f"{m} · {prof}", ps))
        for regime, ps in s.get("by_max_num_seqs", {}).items():
            print(_row(f"{m} · max_num_seqs {regime}", ps))
    if a.out:
        atomic_write_text(a.out, json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
