"""Where the shipped step model misses the real runs' effective step time (issue 13: what still limits).

    python bench/bench_step_residuals.py [--runs real_runs.csv] [--out bench/results/step_residuals_<date>.md]

For every ok dt_real run of each shipped profile: the run's mean state as the calibration pre-fit sees it
(``twin.calibration.fit._state``: mean running requests B, prefill tokens per step P, expected distinct
adapters per batch A, the effective step time), the shipped step model's step time for that state
(``twin.calibration.fit.step_ms``, no adapter loads), and the log residual log(model / real). Reported: the
residual's RMS, its correlation with candidate terms, and its median by running requests. No simulation: a
term whose correlation with the residual is strong is a candidate the step model lacks.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import numpy as np

from twin.calibration.fit import _state, step_ms
from twin.calibration.runs import load_runs
from twin.catalogue import load_profile
from twin.external import data_file

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("llama-3.1-8b-instruct", "qwen-2.5-7b-instruct")
BINS = ((0, 50), (50, 200), (200, 400), (400, 600), (600, 10_000))


def residuals(runs_csv: Path, model: str) -> dict[str, np.ndarray]:
    runs = [r for r in load_runs(runs_csv, source="dt_real", model=model) if r.status == "ok"]
    s = _state(runs)
    pred = step_ms(load_profile(model, "h100-64gb").step, s["B"], s["P"], s["C"], s["A"], s["R"])
    return {**s, "res": np.log(pred / s["step"])}


def report(runs_csv: Path) -> str:
    lines = [f"# Step-model residuals on dt_real — {dt.datetime.now(dt.UTC):%Y-%m-%d}", "",
             "Command: `python " + " ".join(sys.argv) + "`. Protocol: the module docstring of "
             "bench/bench_step_residuals.py. Residual = log(shipped step model / real effective step time); "
             "negative = the model is too fast.", ""]
    for model in MODELS:
        r = residuals(runs_csv, model)
        res, b, a, p = r["res"], r["B"], r["A"], r["P"]
        terms = {"B (running)": b, "A (distinct adapters)": a, "P (prefill tokens / step)": p,
                 "B·A": b * a, "B²": b**2, "log B": np.log(b + 1), "P / B": p / (b + 1)}
        lines += [f"## {model} ({len(res)} runs, profile v{load_profile(model, 'h100-64gb').version})", "",
                  f"RMS of the log residual: {np.sqrt(np.mean(res**2)):.3f}", "",
                  "| term | correlation with the residual |", "|---|---|"]
        lines += [f"| {k} | {np.corrcoef(res, x)[0, 1]:+.2f} |" for k, x in terms.items()]
        lines += ["", "| running requests | runs | median residual | median A |", "|---|---|---|---|"]
        for lo, hi in BINS:
            sel = (b >= lo) & (b < hi)
            if sel.any():
                lines.append(f"| {lo}–{hi} | {int(sel.sum())} | {np.median(res[sel]):+.3f} "
                             f"| {np.median(a[sel]):.0f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=None, help="real_runs.csv (default: the calibration folder)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    runs = args.runs or data_file("calibration", "real_runs.csv")
    text = report(runs)
    out = args.out or ROOT / "bench" / "results" / f"step_residuals_{dt.datetime.now(dt.UTC):%Y-%m-%d}.md"
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
