"""Twin fidelity benchmark: re-simulate every dt_real run and compare with the real vLLM measurements.

Protocol: bench/twin_fidelity.md. Usage (from the repository root):

    python bench/bench_twin_fidelity.py [--runs CSV] [--kv CSV] [--models a,b] [--modes plain,cap] [--lowo]
                                  [--workers N] [--limit N] [--out-dir bench/results]

Writes ``bench/results/twin_fidelity_runs_<date>.csv`` (one row per run × profile × mode),
``twin_fidelity_summary_<date>.md`` and ``twin_fidelity_<date>.png``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from twin.calibration.fit import fit_profile, load_kv_table, measured_scrape_ms, memory_error
from twin.calibration.replay import DEFAULT_CLIENT_CAP, capped, rerun
from twin.calibration.runs import RunRecord, load_runs
from twin.catalogue import load_profile
from twin.external import data_file
from twin.metrics import smape_paper
from twin.metrics import smape_symmetric as smape
from twin.profile import Profile

ROOT = Path(__file__).resolve().parents[1]

MODELS = ("llama-3.1-8b-instruct", "qwen-2.5-7b-instruct")


def _one(args: tuple[RunRecord, dict[str, Any], str, str, int]) -> dict[str, Any]:
    run, prof_dict, fit_label, mode, seed = args
    prof = Profile.from_dict(prof_dict)
    t0 = time.perf_counter()
    out = rerun(run, prof, seed, None, client_cap=DEFAULT_CLIENT_CAP if mode == "cap" else None)
    return {
        "model": run.model, "workload": run.workload, "max_loras": run.max_loras,
        "max_cpu_loras": run.max_cpu_loras, "max_lora_rank": run.max_lora_rank, "fit": fit_label,
        "mode": mode, "seed": seed, "oom_real": run.oom, "oom_pred": out.oom,
        "thr_real": run.throughput_total, "thr_pred": out.throughput, "thr_published": run.dt_throughput,
        "offered_real": run.ideal_throughput, "offered_pred": out.offered,
        "starved_real": run.starved, "starved_pred": out.starved,
        "itl_real_ms": run.mean_itl_ms, "itl_pred_ms": out.itl_ms,
        "ttft_real_ms": run.mean_ttft_ms, "ttft_pred_ms": out.ttft_ms,
        "ttft_p50_real_ms": run.median_ttft_ms, "ttft_p50_pred_ms": out.ttft_p50_ms,
        "ttft_p99_real_ms": run.p99_ttft_ms, "ttft_p99_pred_ms": out.ttft_p99_ms,
        "itl_p50_real_ms": run.median_itl_ms, "itl_p50_pred_ms": out.itl_p50_ms,
        "itl_p99_real_ms": run.p99_itl_ms, "itl_p99_pred_ms": out.itl_p99_ms,
        "running_real": run.mean_running, "running_pred": out.mean_running,
        "waiting_real": run.mean_waiting, "waiting_pred": out.mean_waiting,
        "loads_per_req_pred": out.gpu_loads / out.completed if out.completed else math.nan,
        "scrape_real_ms": measured_scrape_ms(run), "scrape_pred_ms": out.scrape_ms,
        "wall_s": time.perf_counter() - t0,
    }


def simulate_all(runs: list[RunRecord], prof: Profile, fit_label: str, modes: list[str], seed: int,
                 workers: int) -> list[dict[str, Any]]:
    jobs = [(r, prof.to_dict(), fit_label, m, seed) for m in modes for r in runs]
    if workers <= 1:
        return [_one(j) for j in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_one, jobs, chunksize=2))


def lowo_profiles(runs: list[RunRecord], base: Profile, kv_rows: list[Any], seed: int, n_runs: int,
                  max_evals: int, refine_batch: bool = False,
                  fit_output_shape: bool = False, in_batch_eviction: bool | None = None,
                  w_tail: float = 0.0, adapter_sq: bool = False, scrape: bool = False,
                  scrape_blocks_tokens: bool | None = None, prefill_from_spread: bool = False
                  ) -> dict[str, tuple[Profile, float]]:
    """Leave-one-workload-out: for each workload, a profile fitted on the other workloads' runs."""
    out = {}
    for w in sorted({r.workload for r in runs}):
        t0 = time.perf_counter()
        train = [r for r in runs if r.workload != w]
        res = fit_profile(train, base, kv_rows=kv_rows, rerun=capped(), seed=seed, n_runs=n_runs,
                          max_evals=max_evals, refine_batch=refine_batch, fit_output_shape=fit_output_shape,
                          in_batch_eviction=in_batch_eviction, w_tail=w_tail, adapter_sq=adapter_sq,
                          scrape=scrape, scrape_blocks_tokens=scrape_blocks_tokens,
                          prefill_from_spread=prefill_from_spread)
        out[w] = (res.profile, time.perf_counter() - t0)
        print(f"  LOWO fit without {w}: {out[w][1]:.0f} s, step {res.profile.step}", flush=True)
    return out


# ------------------------------------------------------------------------------------------------ summary
#: The SLO regime of issue 13: runs whose real p99 TTFT is at most this (ms).
SLO_P99_TTFT_MS = 10_000.0
LATENCY = (("ttft_p50", "TTFT p50"), ("ttft_p99", "TTFT p99"), ("itl_p50", "ITL p50"), ("itl_p99", "ITL p99"))


def _pair_smape(g: pd.DataFrame, real: str, pred: str) -> tuple[float, float, int]:
    """(papers' SMAPE %, median pred/real, runs) over rows where both are finite and positive."""
    d = g[np.isfinite(g[real]) & np.isfinite(g[pred]) & (g[real] > 0) & (g[pred] >= 0)]
    if not len(d):
        return math.nan, math.nan, 0
    ratio = d[pred] / d[real]
    return smape_paper(d[real], d[pred]), float(np.median(ratio)), len(d)


def latency_agg(g: pd.DataFrame) -> dict[str, Any]:
    """Latency percentiles (papers' SMAPE, median twin/real) on the SLO regime (real p99 TTFT ≤ 10 s) and
    on all ok runs; per-run state SMAPE (mean running, mean waiting; standard form is twice these)."""
    ok = g[~g.oom_real & ~g.oom_pred & g.thr_real.notna()]
    out: dict[str, Any] = {"runs": len(ok)}
    for label, d in (("slo", ok[ok.ttft_p99_real_ms <= SLO_P99_TTFT_MS]), ("all", ok)):
        out[f"{label}_runs"] = len(d)
        for key, _ in LATENCY:
            e, r, _n = _pair_smape(d, f"{key}_real_ms", f"{key}_pred_ms")
            out[f"{label}_{key}_smape_%"] = e
            out[f"{label}_{key}_ratio"] = r
    for key in ("running", "waiting"):
        out[f"{key}_smape_%"] = _pair_smape(ok, f"{key}_real", f"{key}_pred")[0]
    if "scrape_pred_ms" in ok.columns:
        out["scrape_smape_%"] = _pair_smape(ok, "scrape_real_ms", "scrape_pred_ms")[0]
    out["loads_per_req_pred_median"] = float(np.nanmedian(ok.loads_per_req_pred)) if len(ok) else math.nan
    return out


def _agg(g: pd.DataFrame) -> dict[str, Any]:
    ok = g[~g.oom_real & ~g.oom_pred & g.thr_real.notna()]
    pub = ok[ok.thr_published.notna()]
    itl = ok[np.isfinite(ok.itl_pred_ms) & np.isfinite(ok.itl_real_ms)]
    ttft = ok[np.isfinite(ok.ttft_pred_ms) & np.isfinite(ok.ttft_real_ms)]
    return {
        "runs": len(g), "ok": len(ok),
        "thr_smape_paper_%": smape_paper(ok.thr_real, ok.thr_pred) if len(ok) else math.nan,
        "thr_smape_%": smape(ok.thr_real, ok.thr_pred) if len(ok) else math.nan,
        "median_bias_%": 100 * (float(np.median(ok.thr_pred / ok.thr_real)) - 1) if len(ok) else math.nan,
        "published_smape_paper_%": smape_paper(pub.thr_real, pub.thr_published) if len(pub) else math.nan,
        "published_bias_%": 100 * (float(np.median(pub.thr_published / pub.thr_real)) - 1)
        if len(pub) else math.nan,
        "starvation_acc_%": 100 * float((ok.starved_real == ok.starved_pred).mean()) if len(ok) else math.nan,
        "oom_acc_%": 100 * float((g.oom_real == g.oom_pred).mean()),
        "itl_smape_paper_%": smape_paper(itl.itl_real_ms, itl.itl_pred_ms) if len(itl) else math.nan,
        "itl_median_ratio": float(np.median(itl.itl_pred_ms / itl.itl_real_ms)) if len(itl) else math.nan,
        "ttft_smape_paper_%": smape_paper(ttft.ttft_real_ms, ttft.ttft_pred_ms) if len(ttft) else math.nan,
        "ttft_median_ratio": float(np.median(ttft.ttft_pred_ms / ttft.ttft_real_ms))
        if len(ttft) else math.nan,
    }


def summarize_latency(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`latency_agg` per model × fit × mode (runs CSVs without the percentile columns are skipped)."""
    if "ttft_p99_pred_ms" not in df.columns:
        return pd.DataFrame()
    df = df[df.ttft_p99_real_ms.notna()]
    return pd.DataFrame([{"model": m, "fit": f, "mode": mo, **latency_agg(g)}
                         for (m, f, mo), g in df.groupby(["model", "fit", "mode"])])


def summarize(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    by_model = pd.DataFrame([{"model": m, "fit": f, "mode": mo, **_agg(g)}
                             for (m, f, mo), g in df.groupby(["model", "fit", "mode"])])
    by_wl = pd.DataFrame([{"model": m, "workload": w, "fit": f, "mode": mo, **_agg(g)}
                          for (m, w, f, mo), g in df.groupby(["model", "workload", "fit", "mode"])])
    return by_model, by_wl


def plot(df: pd.DataFrame, path: Path) -> None:
    """Top: predicted vs real throughput (log-log). Bottom: predicted/real vs real (±2 % and ±10 % bands)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted(df.model.unique())
    fig, axes = plt.subplots(2, len(models), figsize=(7 * len(models), 11), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2]})
    colors = {("in-sample", "plain"): "tab:blue", ("in-sample", "cap"): "tab:green",
              ("LOWO", "plain"): "tab:orange", ("LOWO", "cap"): "tab:red"}
    lo, hi = 150, 20000
    for j, m in enumerate(models):
        top, bot = axes[0][j], axes[1][j]
        d = df[(df.model == m) & ~df.oom_real & df.thr_real.notna() & ~df.oom_pred]
        pub = d.drop_duplicates(["workload", "max_loras", "max_cpu_loras"])
        e_pub = smape_paper(pub.thr_real, pub.thr_published)
        for ax, y in ((top, pub.thr_published), (bot, pub.thr_published / pub.thr_real)):
            ax.scatter(pub.thr_real, y, s=12, c="0.65", marker="x",
                       label=f"published twin: SMAPE {e_pub:.2f} %")
        for (fit, mode), g in d.groupby(["fit", "mode"]):
            e = smape_paper(g.thr_real, g.thr_pred)
            kw = dict(s=15, marker="o" if mode == "plain" else "s", facecolors="none",
                      edgecolors=colors.get((fit, mode), "k"), label=f"{fit}, {mode}: SMAPE {e:.2f} %")
            top.scatter(g.thr_real, g.thr_pred, **kw)
            bot.scatter(g.thr_real, g.thr_pred / g.thr_real, **kw)
        top.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        for f in (0.9, 1.1):
            top.plot([lo, hi], [lo * f, hi * f], "k:", lw=0.6)
        top.set_xscale("log")
        top.set_yscale("log")
        top.set_xlim(lo, hi)
        top.set_ylim(lo, hi)
        top.set_ylabel("twin throughput (tok/s)")
        top.set_title(f"{m}, H100 64 GB: twin vs real vLLM (dotted: ±10 %)")
        top.legend(fontsize=8, loc="upper left")
        bot.axhspan(0.98, 1.02, color="tab:green", alpha=0.12, label="±2 %")
        bot.axhline(1.0, color="k", lw=0.8)
        for f in (0.9, 1.1):
            bot.axhline(f, color="k", ls=":", lw=0.6)
        bot.set_xscale("log")
        bot.set_xlim(lo, hi)
        bot.set_ylim(0.6, 1.5)
        bot.set_xlabel("real vLLM throughput (tok/s)")
        bot.set_ylabel("twin / real")
        for ax in (top, bot):
            ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _md(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in r) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description="Twin fidelity on dt_real (see bench/twin_fidelity.md).")
    ap.add_argument("--runs", default=None,
                    help="real_runs.csv (default: in the calibration folder that twin.external finds)")
    ap.add_argument("--kv", default=None, help="kv_cache.csv (default: in the same calibration folder)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--modes", default="plain,cap")
    ap.add_argument("--lowo", action="store_true", help="also fit leave-one-workload-out and test on it")
    ap.add_argument("--lowo-runs", type=int, default=16)
    ap.add_argument("--lowo-evals", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="only the first N runs per model (smoke test)")
    ap.add_argument("--no-insample", action="store_true", help="skip the in-sample re-simulation")
    ap.add_argument("--merge", nargs="*", default=[], help="runs CSVs of earlier parts to summarise with")
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--loads", action="store_true",
                    help="also re-simulate the scheduler-overhead runs: GPU loads per completed request")
    ap.add_argument("--loads-max-rate", type=float, default=10.0,
                    help="only scheduler-overhead runs with at most this total rate (req/s)")
    ap.add_argument("--refine-batch", action="store_true",
                    help="LOWO fits also refine the per-sequence step term (calibrate --refine-batch)")
    ap.add_argument("--fit-output-shape", action="store_true",
                    help="LOWO fits also fit the output lengths' tail (calibrate --fit-output-shape)")
    ap.add_argument("--profiles", default=None,
                    help="folder of candidate profiles <model>@h100-64gb.json used instead of the shipped "
                         "ones (in-sample rows and the LOWO fits' starting point)")
    ap.add_argument("--in-batch-eviction", action="store_true",
                    help="LOWO fits switch vLLM 0.8.5's in-batch slot eviction on "
                         "(calibrate --in-batch-eviction)")
    ap.add_argument("--w-tail", type=float, default=0.0,
                    help="LOWO fits weigh tail latency with this weight (calibrate --w-tail)")
    ap.add_argument("--adapter-sq", action="store_true",
                    help="LOWO fits add the A² step term (calibrate --adapter-sq)")
    ap.add_argument("--fit-scrape", action="store_true",
                    help="LOWO fits also fit the metrics scraper's stalls (calibrate --fit-scrape)")
    ap.add_argument("--scrape-intake-only", action="store_true",
                    help="LOWO fits: a scrape stall holds back request intake only (calibrate "
                         "--scrape-intake-only)")
    ap.add_argument("--prefill-from-spread", action="store_true",
                    help="LOWO fits pin the prefill cost by the TTFT spread (--prefill-from-spread)")
    args = ap.parse_args()
    args.runs = args.runs or str(data_file("calibration", "real_runs.csv"))
    args.kv = args.kv or str(data_file("calibration", "kv_cache.csv"))
    modes = args.modes.split(",")
    stamp = time.strftime("%Y-%m-%d")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    kv_lines = []
    loads_lines: list[str] = []
    if args.loads:
        from bench_twin_loads import loads_table

        llama = Path(args.profiles) / f"{MODELS[0]}@h100-64gb.json" if args.profiles else None
        loads_lines = loads_table(args.loads_max_rate, out_dir / f"twin_loads_runs_{stamp}.csv",
                                  Profile.load(llama) if llama is not None else None)
    t_all = time.perf_counter()
    for m in args.models.split(","):
        runs = load_runs(args.runs, model=m)
        if args.limit:
            runs = runs[: args.limit]
        prof = (Profile.load(Path(args.profiles) / f"{m}@h100-64gb.json") if args.profiles
                else load_profile(m, "h100-64gb"))
        kv_rows = load_kv_table(args.kv, m)
        ok = sum(memory_error(prof, s, r) == (k is None or k < prof.max_model_len) for s, r, k in kv_rows)
        kv_lines.append(f"| {m} | {prof.version} | {ok}/{len(kv_rows)} |")
        print(f"{m}: {len(runs)} runs, profile {prof.version}", flush=True)
        if not args.no_insample:
            rows += simulate_all(runs, prof, "in-sample", modes, args.seed, args.workers)
        if args.lowo:
            for w, (p, _) in lowo_profiles(runs, prof, kv_rows, args.seed, args.lowo_runs,
                                           args.lowo_evals, args.refine_batch,
                                           args.fit_output_shape, args.in_batch_eviction or None,
                                           args.w_tail, args.adapter_sq, args.fit_scrape,
                                           False if args.scrape_intake_only else None,
                                           args.prefill_from_spread).items():
                rows += simulate_all([r for r in runs if r.workload == w], p, "LOWO", modes, args.seed,
                                     args.workers)
    df = pd.concat([pd.read_csv(p) for p in args.merge] + [pd.DataFrame(rows)], ignore_index=True)
    df.to_csv(out_dir / f"twin_fidelity_runs_{stamp}.csv", index=False)
    import subprocess

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    by_model, by_wl = summarize(df)
    plot(df, out_dir / f"twin_fidelity_{stamp}.png")
    text = [f"# Twin fidelity on dt_real — {stamp}", "",
            f"Command: `python bench/bench_twin_fidelity.py {' '.join(sys.argv[1:])}` "
            f"({time.perf_counter() - t_all:.0f} s wall for this part; commit {commit}). "
            "Protocol: bench/twin_fidelity.md.", "",
            "Modes: `plain` = `twin.simulate` as users call it; `cap` = the same with the calibration "
            f"client's limit of {DEFAULT_CLIENT_CAP} requests in flight (`max_inflight`, refused beyond). "
            "`published_*` = the "
            "published twin's `dt_throughput` column on the same runs. SMAPE in the papers' form "
            "(100·mean|a−b|/(a+b)) and the standard form (twice that); bias = median(pred/real) − 1.", "",
            "## Per model", "", _md(by_model), "",
            "## Latency and state per model (issue 13)", "",
            f"`slo_*`: ok runs whose real p99 TTFT ≤ {SLO_P99_TTFT_MS / 1000:.0f} s; `all_*`: every ok run. "
            "`*_smape_%` papers' SMAPE of the percentile (twin vs the run's median/p99 column), `*_ratio` "
            "median twin/real; `running/waiting_smape_%`: papers' SMAPE of the run's mean running / waiting "
            "requests (twin: 10 s samples); `loads_per_req_pred_median`: twin GPU adapter loads per "
            "completed request (dt_real records no loads; see the scheduler-overhead section, --loads).", "",
            _md(summarize_latency(df)), "", *loads_lines,
            "## Per workload", "", _md(by_wl), "",
            "## OOM on kv_cache.csv (shipped profile's memory rule)", "",
            "| model | profile | correct |", "|---|---|---|", *kv_lines, ""]
    (out_dir / f"twin_fidelity_summary_{stamp}.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
