"""Re-placement benchmark: GPUs and adapter moves of `replan` against a from-scratch solve on drifting
workloads, a 24-period day from the trace-like volume curve, and the exact fewest moves on small instances.
Protocol: bench/replan.md.

Run: ``python bench/bench_replan.py`` (defaults as in the protocol; ``--quick`` for a 2-minute check).
"""

# ruff: noqa: E501  (the summary writes Markdown table rows; splitting their f-strings hides the columns)
from __future__ import annotations

import argparse
import csv
import datetime as dt
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MODELS = ("llama-3.1-8b-instruct", "qwen-2.5-7b-instruct")
GPU = "h100-64gb"
FIELDS = ("kind", "criterion", "model", "n_adapters", "seed", "scenario", "period", "old_gpus", "gpus", "scratch_gpus",
          "gpu_diff", "moves", "scratch_moves", "moves_ratio", "method", "restart", "added", "drained",
          "replan_s", "scratch_s", "incremental_s", "twin_sampled", "twin_feasible", "exact_gpus",
          "exact_moves", "exact_moves_at_gpus", "exact_optimal", "gpu_hours", "static_gpu_hours")


def scenarios(base: Any, seed: int) -> list[tuple[str, Any]]:
    from placer.dynamic.drift import churn, reshuffle, scale_rates

    return [("reshuffle-10", reshuffle(base, 0.10, seed + 101)),
            ("reshuffle-30", reshuffle(base, 0.30, seed + 102)),
            ("churn-10", churn(base, 0.10, seed + 103)), ("rate+30", scale_rates(base, 1.3)),
            ("rate-30", scale_rates(base, 0.7))]


def twin_check(problem: Any, plan: Any, sample: int, seed: int) -> tuple[int, bool]:
    from placer.check.verify import verify

    rep = verify(problem, plan, seed=seed, workers=1, sample=min(sample, plan.num_gpus))
    return len(rep.simulated), rep.feasible


def row(**kw: Any) -> dict[str, Any]:
    return {k: kw.get(k, "") for k in FIELDS}


def with_criterion(problem: Any, criterion: str) -> Any:
    """The instance under ``criterion``: ``paper`` (the papers' served-fraction rule) or ``slo`` (the default
    latency SLO the generator sets)."""
    from twin.spec import Slo

    return problem.replace(slo=Slo.paper()) if criterion == "paper" else problem


def drift_rows(model: str, n: int, seed: int, sample: int, time_limit: float,
               criterion: str = "paper") -> list[dict[str, Any]]:
    import placer
    from placer.dynamic import replan
    from placer.oracle import make_oracle

    base = with_criterion(placer.generate("zipf", n, seed, model=model, gpu=GPU), criterion)
    old = placer.solve(base, time_limit=time_limit, seed=seed, oracle=make_oracle(base))
    out = []
    for name, new in scenarios(base, seed):
        oracle = make_oracle(new)
        res = replan(new, old, time_limit=time_limit, seed=seed, oracle=oracle)
        sims, ok = twin_check(new, res.plan, sample, seed)
        d = res.diff
        out.append(row(kind="drift", model=model, n_adapters=n, seed=seed, scenario=name, criterion=criterion,
                       old_gpus=old.num_gpus,
                       gpus=res.plan.num_gpus, scratch_gpus=res.scratch_gpus, gpu_diff=res.extra_gpus,
                       moves=res.moves, scratch_moves=res.scratch_moves,
                       moves_ratio=round(res.moves / res.scratch_moves, 4) if res.scratch_moves else "",
                       method=res.method, restart=len(d.restart), added=len(d.added), drained=len(d.drained),
                       replan_s=round(res.runtime_s, 3), scratch_s=round(res.scratch_s, 3),
                       incremental_s=round(res.runtime_s - res.scratch_s, 3), twin_sampled=sims,
                       twin_feasible=ok))
        print(out[-1], flush=True)
    return out


def day_rows(model: str, n: int, seed: int, sample: int, time_limit: float) -> list[dict[str, Any]]:
    import placer
    from placer.dynamic import solve_periods
    from placer.dynamic.periods import period_instances
    from placer.oracle import make_oracle
    from twin.rates import RateProfile

    base = placer.generate("zipf", n, seed, model=model, gpu=GPU).replace(
        rate_profile=RateProfile(trace="azure-like-conv", n_periods=24))
    day = solve_periods(base, time_limit=time_limit, seed=seed, oracle=make_oracle(base))
    out = []
    for p, inst in zip(day.periods, period_instances(base), strict=True):
        sims, ok = twin_check(inst, p.plan, sample, seed)
        moves = p.diff.moves if p.diff is not None else ""
        out.append(row(kind="day", model=model, n_adapters=n, seed=seed, scenario="day-azure-like-conv",
                       period=p.period, gpus=p.plan.num_gpus, scratch_gpus=p.scratch_gpus,
                       gpu_diff=p.plan.num_gpus - p.scratch_gpus, moves=moves,
                       scratch_moves=p.scratch_moves if p.scratch_moves is not None else "",
                       replan_s=round(p.runtime_s, 3), twin_sampled=sims, twin_feasible=ok,
                       gpu_hours=round(day.gpu_hours, 3), static_gpu_hours=round(day.static_gpu_hours, 3)))
    print({k: out[-1][k] for k in ("model", "gpu_hours", "static_gpu_hours")}, flush=True)
    return out


def exact_rows(model: str, n: int, seed: int, time_limit: float) -> list[dict[str, Any]]:
    import placer
    from placer.dynamic import replan
    from placer.dynamic.exact_moves import exact_moves
    from placer.oracle import make_oracle

    base = placer.generate("zipf", n, seed, model=model, gpu=GPU, total_rate_rps=2.5 * n)
    old = placer.solve(base, seed=seed, oracle=make_oracle(base))
    out = []
    for name, new in scenarios(base, seed):
        oracle = make_oracle(new)
        res = replan(new, old, seed=seed, oracle=oracle)
        best = exact_moves(new, old, oracle, time_limit=time_limit, seed=seed)
        at_g = exact_moves(new, old, oracle, max_gpus=res.plan.num_gpus, time_limit=time_limit, seed=seed)
        out.append(row(kind="exact", model=model, n_adapters=n, seed=seed, scenario=name,
                       old_gpus=old.num_gpus,
                       gpus=res.plan.num_gpus, scratch_gpus=res.scratch_gpus, gpu_diff=res.extra_gpus,
                       moves=res.moves, scratch_moves=res.scratch_moves, method=res.method,
                       exact_gpus=best.num_gpus, exact_moves=best.moves, exact_moves_at_gpus=at_g.moves,
                       exact_optimal=best.gpus_optimal and best.moves_optimal and at_g.moves_optimal))
        print(out[-1], flush=True)
    return out


def summary(rows: list[dict[str, Any]], cmd: str, wall: float) -> str:
    lines = [f"# Replan benchmark (run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)", "", f"`{cmd}` on {platform.node() and '2-core shared'} "
             f"machine, Python {platform.python_version()}, {wall / 60:.1f} min wall. Protocol: "
             "`bench/replan.md`. Every figure below is computed from `replan.csv` of this run.", ""]
    drift = [r for r in rows if r["kind"] == "drift"]
    if drift:
        lines += ["## Drift scenarios (replan vs from-scratch ffd-bisect; moves of scratch = Hungarian matching)",
                  "", "| model | adapters | scenario | runs | GPU diff mean | GPU diff max | moves / scratch moves "
                  "(mean) | max | replan s (mean) | scratch s (mean) | twin-checked GPUs | twin feasible |",
                  "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
        keys = sorted({(r["model"], r["n_adapters"], r["scenario"]) for r in drift})
        for m, n, s in keys:
            rs = [r for r in drift if (r["model"], r["n_adapters"], r["scenario"]) == (m, n, s)]
            ratios = [float(r["moves_ratio"]) for r in rs if r["moves_ratio"] != ""]
            lines.append(f"| {m} | {n} | {s} | {len(rs)} | {np.mean([r['gpu_diff'] for r in rs]):+.2f} | "
                         f"{max(r['gpu_diff'] for r in rs):+d} | "
                         f"{(100 * np.mean(ratios)) if ratios else float('nan'):.1f} % | "
                         f"{(100 * max(ratios)) if ratios else float('nan'):.1f} % | "
                         f"{np.mean([r['replan_s'] for r in rs]):.2f} | {np.mean([r['scratch_s'] for r in rs]):.2f} | "
                         f"{sum(r['twin_sampled'] for r in rs)} | "
                         f"{'all' if all(r['twin_feasible'] for r in rs) else 'NOT all'} |")
        ratios = [float(r["moves_ratio"]) for r in drift if r["moves_ratio"] != ""]
        lines += ["", f"All drift runs: {len(drift)}; GPU diff mean {np.mean([r['gpu_diff'] for r in drift]):+.3f}, "
                  f"max {max(r['gpu_diff'] for r in drift):+d}; moves / scratch moves mean "
                  f"{100 * np.mean(ratios):.1f} %, max {100 * max(ratios):.1f} %, runs above 25 %: "
                  f"{sum(x > 0.25 for x in ratios)} of {len(ratios)}; twin: "
                  f"{sum(r['twin_sampled'] for r in drift)} GPUs simulated, "
                  f"{sum(not r['twin_feasible'] for r in drift)} plans with a failing sampled GPU."]
        big = [r for r in drift if r["n_adapters"] >= 10000]
        if big:
            lines += ["", f"10,000 adapters: replan wall time (incl. its from-scratch reference solve) mean "
                      f"{np.mean([r['replan_s'] for r in big]):.2f} s, max {max(r['replan_s'] for r in big):.2f} s; "
                      f"the incremental part alone mean {np.mean([r['incremental_s'] for r in big]):.2f} s, max "
                      f"{max(r['incremental_s'] for r in big):.2f} s; ratio incremental / scratch solve mean "
                      f"{np.mean([r['incremental_s'] / r['scratch_s'] for r in big]):.2f}."]
    day = [r for r in rows if r["kind"] == "day"]
    if day:
        lines += ["", "## 24-period day (azure-like-conv volume curve, stretched to 24 periods)", "",
                  "| model | adapters | GPU-hours replanned | GPU-hours static peak | saved | moves (total) | "
                  "GPU diff vs scratch mean / max | twin-checked GPUs | twin feasible |", "|---|--:|--:|--:|--:|--:|--:|--:|---|"]
        for m, n in sorted({(r["model"], r["n_adapters"]) for r in day}):
            rs = [r for r in day if (r["model"], r["n_adapters"]) == (m, n)]
            gh, sh = rs[0]["gpu_hours"], rs[0]["static_gpu_hours"]
            lines.append(f"| {m} | {n} | {gh:.0f} | {sh:.0f} | {100 * (1 - gh / sh):.1f} % | "
                         f"{sum(r['moves'] for r in rs if r['moves'] != '')} | "
                         f"{np.mean([r['gpu_diff'] for r in rs]):+.2f} / {max(r['gpu_diff'] for r in rs):+d} | "
                         f"{sum(r['twin_sampled'] for r in rs)} | "
                         f"{'all' if all(r['twin_feasible'] for r in rs) else 'NOT all'} |")
    ex = [r for r in rows if r["kind"] == "exact"]
    if ex:
        lines += ["", "## Small instances: replan moves vs the exact fewest moves (CP-SAT, linearised model)", "",
                  "| model | adapters | scenario | replan GPUs | replan moves | exact GPUs | exact moves | exact moves "
                  "at replan's GPUs | proven |", "|---|--:|---|--:|--:|--:|--:|--:|---|"]
        for r in ex:
            lines.append(f"| {r['model']} | {r['n_adapters']} | {r['scenario']} | {r['gpus']} | {r['moves']} | "
                         f"{r['exact_gpus']} | {r['exact_moves']} | {r['exact_moves_at_gpus']} | {r['exact_optimal']} |")
    return "\n".join(lines) + "\n"


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    from placer.reporting.charts import _figure, save

    drift = [r for r in rows if r["kind"] == "drift"]
    day = [r for r in rows if r["kind"] == "day"]
    fig = _figure(12, 4.5)
    ax1, ax2 = fig.subplots(1, 2)
    names = sorted({r["scenario"] for r in drift})
    for k, s in enumerate(names):
        ratios = [100 * float(r["moves_ratio"]) for r in drift if r["scenario"] == s and r["moves_ratio"] != ""]
        ax1.scatter([k] * len(ratios), ratios, s=14, alpha=0.7)
    ax1.axhline(25, ls="--", color="#222222", lw=1)
    ax1.set_xticks(range(len(names)), names, rotation=20)
    ax1.set_ylabel("replan moves / from-scratch moves (%)")
    ax1.set_title("moves (dashed: 25 % target)", fontsize=10)
    for m in sorted({r["model"] for r in day}):
        rs = [r for r in day if r["model"] == m]
        ax2.plot([r["period"] for r in rs], [r["gpus"] for r in rs], "-o", ms=3, label=f"{m} replanned")
        ax2.plot([r["period"] for r in rs], [r["scratch_gpus"] for r in rs], ":", label=f"{m} from scratch")
    ax2.set_xlabel("period (hour)")
    ax2.set_ylabel("GPUs")
    ax2.set_title("24-period day", fontsize=10)
    ax2.legend(fontsize=7, frameon=False)
    save(fig, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--seeds", default="0,1", help="seeds for sizes below 10,000")
    ap.add_argument("--big-seeds", default="0", help="seeds at 10,000 adapters")
    ap.add_argument("--day-adapters", type=int, default=1000)
    ap.add_argument("--exact-adapters", type=int, default=30)
    ap.add_argument("--sample", type=int, default=4, help="GPUs twin-checked per plan")
    ap.add_argument("--time-limit", type=float, default=120.0)
    ap.add_argument("--exact-time-limit", type=float, default=30.0)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--tag", default="")
    ap.add_argument("--date", default=str(dt.date.today()), help="date in the summary's file name")
    ap.add_argument("--criterion", default="paper", choices=("paper", "slo"),
                    help="feasibility criterion of the drift instances (paper: as in the 2026-12-04 run)")
    ap.add_argument("--no-day", action="store_true", help="skip the 24-period day")
    ap.add_argument("--no-exact", action="store_true", help="skip the small exact instances")
    ap.add_argument("--quick", action="store_true", help="100 and 1,000 adapters, one seed, llama only")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.seeds, args.models, args.day_adapters = "100,1000", "0", MODELS[0], 200
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for model in args.models.split(","):
        for n in [int(x) for x in args.sizes.split(",")]:
            seeds = args.big_seeds if n >= 10000 else args.seeds
            for seed in [int(s) for s in seeds.split(",")]:
                rows += drift_rows(model, n, seed, args.sample, args.time_limit, args.criterion)
        if not args.no_day:
            rows += day_rows(model, args.day_adapters, 0, args.sample, args.time_limit)
        if not args.no_exact:
            rows += exact_rows(model, args.exact_adapters, 0, args.exact_time_limit)
    stem = f"replan{args.tag}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    import io

    from twin.files import atomic_write_text
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(RESULTS / f"{stem}.csv", buf.getvalue())
    cmd = "python bench/bench_replan.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    atomic_write_text(RESULTS / f"{stem}-{args.date}.md", summary(rows, cmd.strip(), time.perf_counter() - t0))
    chart(rows, RESULTS / f"{stem}.png")
    print(f"wrote {RESULTS / stem}.csv, .md, .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
