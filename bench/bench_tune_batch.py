"""``--tune-batch`` benchmark (issue 17 part 2, minimal version): GPUs and per-GPU memory freed with and without
the per-GPU batch tuning, both plans twin-verified.

Protocol: for each placement-benchmark-like instance (generated as ``placer generate --family F --adapters N
--seed S`` does), solve with the default solver and oracle (ffd-bisect, surrogate), verify the plan in the twin
at the instance's settings ("fixed"), then run :func:`placer.tune.tune_batch` (the advisor per GPU, tuned GPUs
re-verified, failures reverted) and verify the tuned plan in full. ``freed_gib`` is the KV memory a GPU's
tuned ``gpu_memory_utilization`` gives back against the instance's (the advisor's figure; 0 for GPUs that kept
the instance's settings). The GPU count cannot change by construction; the table shows it.

Run: ``nice -n 10 python bench/bench_tune_batch.py`` (a few minutes on 2 cores); writes
``bench/results/tune_batch-DATE.{csv,md}``.
"""

# ruff: noqa: E501  (the summary writes Markdown table rows)
from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path
from typing import Any

from placer.check.verify import verify
from placer.problem.generate import generate
from placer.solve import solve
from placer.tune import tune_batch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
INSTANCES = (("paper", 256, 0), ("zipf", 1000, 0), ("dirichlet", 500, 0))
FIELDS = ("instance", "adapters", "gpus_fixed", "gpus_tuned", "gpus_tuned_changed", "max_num_seqs_fixed",
          "max_num_seqs_tuned", "util_fixed", "util_tuned_min", "util_tuned_max", "freed_gib_total",
          "freed_gib_mean", "freed_gib_min", "freed_gib_max", "twin_fixed", "twin_tuned", "tune_wall_s")


def run_one(family: str, n: int, seed: int, workers: int) -> dict[str, Any]:
    problem = generate(family, n, seed)
    plan = solve(problem, seed=seed)
    fixed = verify(problem, plan, seed=seed, workers=workers)
    start = time.perf_counter()
    tuned, rows = tune_batch(problem, plan, seed=seed, workers=workers)
    wall = time.perf_counter() - start
    checked = verify(problem, tuned, seed=seed, workers=workers)
    freed = [r.freed_gib for r in rows]
    seqs = sorted({g.max_num_seqs for g in tuned.gpus if g.max_num_seqs is not None})
    utils = [g.gpu_memory_utilization for g in tuned.gpus if g.gpu_memory_utilization is not None]
    return {"instance": f"{family}-{n}-s{seed}", "adapters": n, "gpus_fixed": plan.num_gpus,
            "gpus_tuned": tuned.num_gpus, "gpus_tuned_changed": sum(r.tuned for r in rows),
            "max_num_seqs_fixed": problem.server.max_num_seqs,
            "max_num_seqs_tuned": "/".join(map(str, seqs)),
            "util_fixed": problem.server.gpu_memory_utilization,
            "util_tuned_min": min(utils), "util_tuned_max": max(utils),
            "freed_gib_total": round(sum(freed), 2), "freed_gib_mean": round(statistics.mean(freed), 2),
            "freed_gib_min": round(min(freed), 2), "freed_gib_max": round(max(freed), 2),
            "twin_fixed": fixed.feasible, "twin_tuned": checked.feasible, "tune_wall_s": round(wall, 1)}


def markdown(rows: list[dict[str, Any]], date: str) -> str:
    lines = [f"# `placer solve --tune-batch` against the fixed settings ({date})", "",
             "Produced by `bench/bench_tune_batch.py` (protocol in its docstring): ffd-bisect + surrogate oracle, "
             "seed 0; the advisor per GPU (twin), tuned GPUs re-verified; both plans verified in the twin on "
             "seed 0. Freed = KV memory given back by the GPU's lower gpu_memory_utilization (GiB).", "",
             "| instance | GPUs fixed | GPUs tuned | GPUs with own settings | max_num_seqs (fixed → tuned) | "
             "gpu_memory_utilization (fixed → tuned) | freed GiB total | per GPU mean (min–max) | twin fixed | "
             "twin tuned | tuning wall (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['instance']} | {r['gpus_fixed']} | {r['gpus_tuned']} | {r['gpus_tuned_changed']} of "
                     f"{r['gpus_tuned']} | {r['max_num_seqs_fixed']} → {r['max_num_seqs_tuned']} | "
                     f"{r['util_fixed']:g} → {r['util_tuned_min']:g}–{r['util_tuned_max']:g} | "
                     f"{r['freed_gib_total']:.1f} | {r['freed_gib_mean']:.1f} ({r['freed_gib_min']:.1f}–"
                     f"{r['freed_gib_max']:.1f}) | {'feasible' if r['twin_fixed'] else 'NOT feasible'} | "
                     f"{'feasible' if r['twin_tuned'] else 'NOT feasible'} | {r['tune_wall_s']:.0f} |")
    lines += ["", "The GPU count and every GPU's adapters and LoRA settings are the same with and without "
              "`--tune-batch` by construction: the oracle and the surrogates' features do not treat "
              "max_num_seqs as a variable during the search (the limit of this version); the tuning is per GPU "
              "after the placement. Profile: the shipped llama-3.1-8b-instruct@h100-64gb twin profile.", "",
              "Where nothing is freed (paper-256: one GPU with 121 slots at rank 32) the KV cache at 0.9 holds "
              "131,367 tokens, just above the 131,072-token max_model_len that vLLM needs for one request: "
              "the floor is max_model_len, not the batch, so only max_num_seqs changes (2048 → B_opt)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    args = ap.parse_args()
    rows = []
    for family, n, seed in INSTANCES:
        rows.append(run_one(family, n, seed, args.workers))
        print(rows[-1], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (RESULTS / f"tune_batch-{args.date}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    (RESULTS / f"tune_batch-{args.date}.md").write_text(markdown(rows, args.date))


if __name__ == "__main__":
    main()
