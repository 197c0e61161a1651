"""Latency-surrogate recipes compared on a held-out selection sweep (issue 14, ``bench/slo.md`` § 5).

Each recipe fits the two regressors the default SLO needs (TTFT p99 and TPOT p99, :class:`LatencyModel`)
on the training sweeps and scores them on every usable row of a selection sweep of another seed (never
the evaluation sweep of § 4): SMAPE in the papers' form of TTFT p99 (all rows and rows whose twin TTFT p99
is ≤ 10 s) and TPOT p99, and the F1 of "meets the default SLO" with the starvation verdict of the bundles
in ``--models`` (false positives / negatives too). Recipes: ``<size>[+stacked][+queue]`` with size
``base`` (600 trees, depth 6, learning rate 0.08: the 2026-12-05 recipe), ``big`` (2,000 trees, 0.05) or
``deep`` (1,500 trees, depth 8, 0.05); ``stacked`` adds the bundle's throughput and starvation predictions as
inputs, ``queue`` makes the TTFT regressor learn the log ratio to the queueing prior.

Usage: ``PYTHONPATH=. python bench/bench_latency_recipes.py --train build/train --select build/sel
--recipes base,base+stacked,base+queue [--models surrogate/models] [--out FILE.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from surrogate.bundle import Surrogate
from surrogate.dataset import load_dataset
from surrogate.metrics import f1_true
from surrogate.model import LatencyModel, stacked_columns
from surrogate.train import design_matrix, slo_verdict, usable
from twin.files import atomic_write_text
from twin.metrics import smape_paper

SIZES: dict[str, dict[str, Any]] = {"base": {"iterations": 600, "depth": 6, "learning_rate": 0.08},
                                    "big": {"iterations": 2000, "depth": 6, "learning_rate": 0.05},
                                    "deep": {"iterations": 1500, "depth": 8, "learning_rate": 0.05}}


def _prepared(dirs: list[Path], models: Path, rows: int | None = None
              ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """Usable rows (the first ``rows``), feature rows, stacked columns and the bundles' starvation verdict."""
    frame = usable(load_dataset(*dirs)).iloc[:rows].reset_index(drop=True)
    X = design_matrix(frame)
    stack = np.zeros((len(frame), 2))
    starved = np.zeros(len(frame), dtype=bool)
    for name in frame["profile"].unique():
        sel = (frame["profile"] == name).to_numpy()
        pred = Surrogate.load(models, str(name)).predict_features(X[sel])
        stack[sel] = stacked_columns(X[sel], pred.throughput_tok_s, pred.starved_probability)
        starved[sel] = pred.starved
    return frame, X, stack, starved


def run_recipe(recipe: str, train: tuple[Any, np.ndarray, np.ndarray, np.ndarray],
               select: tuple[Any, np.ndarray, np.ndarray, np.ndarray], threads: int = 1) -> dict[str, float]:
    """Fit the recipe's TTFT/TPOT p99 regressors on ``train`` and score them on ``select``."""
    size, *opts = recipe.split("+")
    inputs = "stacked" if "stacked" in opts else "features"
    t0 = time.perf_counter()
    pred = {}
    for t in ("ttft_p99_s", "tpot_p99_s"):
        base = "queue" if "queue" in opts and t.startswith("ttft") else "none"
        m = LatencyModel(target=t, inputs=inputs, base=base, thread_count=threads, **SIZES[size])
        m.fit(train[1], train[0][f"sim_{t}"].to_numpy(dtype=float), train[2] if m.stacked else None)
        pred[t] = m.predict(select[1], select[2] if m.stacked else None)
    frame = select[0]
    y = {t: frame[f"sim_{t}"].to_numpy(dtype=float) for t in pred}
    ok = np.isfinite(y["ttft_p99_s"])
    near = ok & (y["ttft_p99_s"] <= 10.0)
    okt = np.isfinite(y["tpot_p99_s"])
    truth = slo_verdict(~frame["sim_starved"].to_numpy(dtype=bool), y)
    verdict = slo_verdict(~select[3], pred)
    return {"ttft_p99_s_smape_pct_below_10s": smape_paper(y["ttft_p99_s"][near], pred["ttft_p99_s"][near]),
            "ttft_p99_s_smape_pct": smape_paper(y["ttft_p99_s"][ok], pred["ttft_p99_s"][ok]),
            "tpot_p99_s_smape_pct": smape_paper(y["tpot_p99_s"][okt], pred["tpot_p99_s"][okt]),
            "default_slo_f1": f1_true(truth, verdict), "false_pos": float((verdict & ~truth).sum()),
            "false_neg": float((~verdict & truth).sum()), "fit_s": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=Path, action="append", required=True, help="training sweep directory")
    ap.add_argument("--select", type=Path, required=True, help="held-out selection sweep directory")
    ap.add_argument("--recipes", default="base,base+stacked,base+queue,base+stacked+queue")
    ap.add_argument("--models", type=Path, default=Path("surrogate/models"), help="bundles to stack on")
    ap.add_argument("--train-rows", type=int, help="only the first N usable training rows (same for all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="write the scores as JSON here")
    a = ap.parse_args(argv)
    train, select = _prepared(a.train, a.models, a.train_rows), _prepared([a.select], a.models)
    out: dict[str, Any] = {"train_rows": len(train[0]), "select_rows": len(select[0]),
                           "select_rows_ttft_p99_below_10s": int((select[0]["sim_ttft_p99_s"] <= 10).sum()),
                           "recipes": {}}
    print(f"train rows {out['train_rows']}, selection rows {out['select_rows']}", flush=True)
    for recipe in a.recipes.split(","):
        s = out["recipes"][recipe] = run_recipe(recipe, train, select, a.threads)
        print(recipe, json.dumps({k: round(v, 3) for k, v in s.items()}), flush=True)
    if a.out:
        atomic_write_text(a.out, json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
