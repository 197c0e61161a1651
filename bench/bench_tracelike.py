"""Measure the trace-like workloads' figures on the public traces, and check the generator against them.

Protocol: bench/tracelike.md. Reads ``azure_conv_2023`` and ``azure_code_2023`` where :mod:`twin.external`
finds them (``--traces-dir`` sets ``$PLACER_TRACES_DIR``), writes
``twin/workloads/azure-like-{conv,code}.json`` (``--check`` only compares) and a dated summary
``bench/results/tracelike-<date>.md`` with the real figures next to those of seeded samples.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from twin.tracelike import TraceLike, arrival_figures, generate_arrays, measure  # noqa: E402
from twin.traces import load_trace  # noqa: E402

# trace-like name: (public trace, description)
SOURCES: dict[str, tuple[str, str]] = {
    "azure-like-conv": ("azure_conv_2023", "Trace-like workload with figures measured on the Azure LLM "
                        "inference trace 2023, conversation service (not the trace itself)"),
    "azure-like-code": ("azure_code_2023", "Trace-like workload with figures measured on the Azure LLM "
                        "inference trace 2023, code service (not the trace itself)"),
}
SEEDS = range(10)
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)


def _figures(arrival: np.ndarray, inp: np.ndarray, out: np.ndarray, span: float) -> dict[str, float]:
    f = arrival_figures(arrival, span)
    row = {"requests": float(arrival.size), "gap_cv": f["gap_cv"], "idc_10s": f["idc_10s"],
           "idc_60s": f["idc_60s"], "input_mean": float(inp.mean()), "output_mean": float(out.mean())}
    for q in QUANTILES:
        row[f"input_p{q * 100:g}"] = float(np.quantile(inp, q))
        row[f"output_p{q * 100:g}"] = float(np.quantile(out, q))
    return row


def _table(real: dict[str, float], gen: list[dict[str, float]]) -> list[str]:
    lines = ["| figure | real trace | generator, mean of seeds | min – max over seeds |", "|---|---|---|---|"]
    for key, value in real.items():
        vals = [g[key] for g in gen]
        lines.append(f"| {key} | {value:,.3f} | {np.mean(vals):,.3f} | {min(vals):,.3f} – {max(vals):,.3f} |")
    return lines


def _shape_error(like: TraceLike) -> tuple[float, float]:
    """Max and mean |generated − real| of the 5-minute relative volume, averaged over SEEDS."""
    real = np.asarray(like.checks["volume_5min"])
    gen = np.mean([arrival_figures(generate_arrays(like, s)[0], like.span_s)["volume_5min"] for s in SEEDS],
                  axis=0)
    return float(np.max(np.abs(gen - real))), float(np.mean(np.abs(gen - real)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--traces-dir", type=Path, default=None,
                    help="folder with the public traces (default: PLACER_TRACES_DIR, ... see twin.external)")
    ap.add_argument("--check", action="store_true", help="compare with the shipped figures, write nothing")
    args = ap.parse_args()
    if args.traces_dir is not None:
        os.environ["PLACER_TRACES_DIR"] = str(args.traces_dir)
    out_dir = ROOT / "twin" / "workloads"
    title = f"# Trace-like workloads: measured figures and the generator's reproduction ({dt.date.today()})"
    summary = [title,
               "", "Protocol: `bench/tracelike.md`. Command: `python bench/bench_tracelike.py`. Generator "
               f"figures: mean over seeds {SEEDS.start}–{SEEDS.stop - 1} of one span each.", ""]
    stale = []
    for name, (public, description) in SOURCES.items():
        tr = load_trace(public)
        like = measure(tr.arrival_s, tr.input_tokens, tr.output_tokens, name=name, description=description)
        path = out_dir / f"{name}.json"
        text = like.to_json()
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.relative_to(ROOT).as_posix())
            continue
        out_dir.mkdir(exist_ok=True)
        path.write_text(text)
        real = _figures(tr.arrival_s - tr.arrival_s[0], tr.input_tokens, tr.output_tokens, tr.span_s)
        gen = [_figures(*generate_arrays(like, s), like.span_s) for s in SEEDS]
        worst, mean = _shape_error(like)
        cv2 = 2 * float(np.dot(like.gap_weights, np.square(like.gap_means))) - 1
        summary += [f"## {name} (from `{public}`: {tr.n_requests:,} requests over {tr.span_s:,.0f} s)", "",
                    f"Fitted: operational-time gaps hyper-exponential, weights "
                    f"{', '.join(f'{w:.4g}' for w in like.gap_weights)}, means "
                    f"{', '.join(f'{m:.4g}' for m in like.gap_means)} (gap CV in operational time "
                    f"{np.sqrt(cv2):.3f}); length Spearman ρ {like.length_spearman:.4f}; volume curve of "
                    f"{len(like.volume)} bins, relative rate {min(like.volume):.3f} – "
                    f"{max(like.volume):.3f}.",
                    "", *_table(real, gen), "",
                    f"5-minute volume shape (relative to the mean), generator (mean of seeds) vs real: "
                    f"max abs. difference {worst:.3f}, mean {mean:.3f}.", ""]
        print(f"wrote {path.relative_to(ROOT).as_posix()}")
    if args.check:
        print("stale: " + ", ".join(stale) if stale else "the shipped figures are up to date")
        raise SystemExit(1 if stale else 0)
    res = ROOT / "bench" / "results" / f"tracelike-{dt.date.today()}.md"
    res.write_text("\n".join(summary))
    print(f"wrote {res.relative_to(ROOT).as_posix()}")


if __name__ == "__main__":
    main()
