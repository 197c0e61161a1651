"""Placement benchmark: solvers × generated instances, every plan judged by the evaluator and the twin.

Protocol: bench/placement.md. Writes ``bench/results/placement[-TAG].csv`` (one row per solver run),
``bench/results/placement[-TAG]-<date>.md`` (summary) and ``bench/results/placement[-TAG].png`` (plot).

    python bench/bench_placement.py                                   # the full protocol (long)
    python bench/bench_placement.py --sizes 16,256 --seeds 0 --families zipf --tag smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from placer.check.evaluate import evaluate
from placer.check.repair import repair
from placer.check.verify import _simulate_gpu
from placer.oracle import Oracle, make_oracle
from placer.problem.generate import DEFAULT_RATE_PER_ADAPTER, generate
from placer.result import Result
from placer.solve import SOLVERS, solve
from twin.catalogue import load_profile
from twin.files import atomic_write_text
from twin.spec import Instance

ROOT = Path(__file__).resolve().parent
HEURISTICS = "greedy-paper,ffd-bisect,loraserve,dlora,least-loaded,round-robin"


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default="paper,zipf,dirichlet,trace")
    ap.add_argument("--sizes", default="16,64,256,1000,10000")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--seeds-large", default="0", help="seeds for sizes >= 10,000 (they are slow)")
    ap.add_argument("--models", default="llama-3.1-8b-instruct,qwen-2.5-7b-instruct")
    ap.add_argument("--solvers", default=HEURISTICS, help="comma-separated registry names")
    ap.add_argument("--exact-solvers", default="cpsat,ilp", help="run only up to --exact-max-adapters")
    ap.add_argument("--exact-max-adapters", type=int, default=64)
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--oracle", default="surrogate")
    ap.add_argument("--margin", type=float, default=None)
    ap.add_argument("--starved-threshold", type=float, default=None,
                    help="surrogate oracle: starved when the classifier's probability exceeds this")
    ap.add_argument("--verify-max-gpus", type=int, default=4,
                    help="simulate every GPU of a plan up to this many, else a seeded sample of this many")
    ap.add_argument("--verify-max-size", type=int, default=10_000, help="skip twin checks above this size")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repair", default="", help="solvers whose plans are also twin-repaired (+repair rows)")
    ap.add_argument("--repair-max-size", type=int, default=1000)
    ap.add_argument("--from-csv", default="", help="only re-summarise and re-plot this CSV")
    ap.add_argument("--commit", default="", help="commit to name in the summary (default: git HEAD)")
    ap.add_argument("--command", default="", help="command line to quote in the summary")
    ap.add_argument("--models-note", default="", help="surrogate models to name (default: shipped metadata)")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out-dir", default=str(ROOT / "results"))
    return ap.parse_args()


# Request rate per adapter by size, so that every size needs several GPUs (bench/placement.md)
RATE_PER_ADAPTER = {16: 2.0, 64: 2.0, 256: 1.0}
PAPER_RATES = {16: (3.2, 1.6, 0.8), 64: (3.2, 1.6, 0.8), 256: (1.6, 0.8, 0.4)}
PAPER_RATES_LARGE = (0.4, 0.1, 0.05)


def make_instance(family: str, n: int, seed: int, model: str) -> Instance:
    if family == "paper":
        return generate("paper", n, seed, model=model, rates=PAPER_RATES.get(n, PAPER_RATES_LARGE))
    per = RATE_PER_ADAPTER.get(n, DEFAULT_RATE_PER_ADAPTER)
    return generate(family, n, seed, model=model, total_rate_rps=per * n)


def twin_checks(pool: ProcessPoolExecutor, problem: Instance, result: Result, k: int, seed: int,
                memo: dict) -> dict:
    """Simulate the plan's GPUs (all, or a seeded sample of ``k``); identical GPUs are simulated once."""
    chosen = list(range(result.num_gpus))
    if len(chosen) > k:
        chosen = sorted(np.random.default_rng(seed).choice(len(chosen), size=k, replace=False).tolist())
    jobs, keys = [], []
    for j in chosen:
        g = result.gpus[j]
        key = (frozenset(g.adapters), g.max_loras, g.max_cpu_loras, g.max_lora_rank)
        keys.append(key)
        if key not in memo:
            memo[key] = None
            jobs.append((key, (problem.subset(list(g.adapters)), j, g.max_loras, g.max_cpu_loras,
                               g.max_lora_rank, seed, load_profile(problem.model, problem.gpu))))
    start = time.perf_counter()
    for key, row in zip([k_ for k_, _ in jobs], pool.map(_simulate_gpu, [a for _, a in jobs]), strict=True):
        memo[key] = row
    rows = [memo[key] for key in keys]
    return {"twin_gpus": len(rows), "twin_sampled": len(chosen) < result.num_gpus,
            "twin_starved": sum(bool(r["starved"]) for r in rows),
            "twin_oom": sum(bool(r["oom"]) for r in rows),
            "twin_min_served": min((r["throughput_tok_s"] / r["offered_tok_s"] for r in rows
                                    if r["offered_tok_s"]), default=float("nan")),
            "twin_wall_s": round(time.perf_counter() - start, 3)}


def run_one(pool: ProcessPoolExecutor, problem: Instance, name: str, family: str, seed: int, judge: Oracle,
            memo: dict, args: argparse.Namespace, opts: dict) -> list[dict]:
    """One solver on one instance: solve with a fresh oracle, judge, twin-check, optionally repair."""
    oracle = make_oracle(problem, args.oracle, **opts)
    result = solve(problem, name, time_limit=args.time_limit, seed=seed, oracle=oracle)
    ev = evaluate(problem, result, judge)
    n = problem.n_adapters
    row = {"model": problem.model, "family": family, "n": n, "seed": seed, "instance": problem.name,
           "total_rate_rps": round(problem.total_rate_rps, 4), "solver": name, "status": result.status,
           "num_gpus": result.num_gpus, "lower_bound": result.lower_bound, "gap": result.gap,
           "runtime_s": round(result.runtime_s, 4), "evaluator_feasible": ev.feasible,
           "oracle": oracle.name, "backend_calls": oracle.calls, "predictions": oracle.predictions}
    if result.gpus and n <= args.verify_max_size:
        row.update(twin_checks(pool, problem, result, args.verify_max_gpus, seed, memo))
    print(f"{problem.model[:5]} {family:9s} n={n:5d} s={seed} {name:13s} {result.status:9s} "
          f"GPUs={result.num_gpus:4d} LB={result.lower_bound:4d} t={result.runtime_s:7.2f}s "
          f"eval={'ok' if ev.feasible else 'FAIL'} "
          f"twin={row.get('twin_starved', '-')}/{row.get('twin_gpus', '-')} starved", flush=True)
    rows = [row]
    if name in args.repair.split(",") and result.gpus and n <= args.repair_max_size:
        fixed = repair(problem, result, oracle, seed=seed, workers=args.workers)
        info = fixed.extra["repair"]
        rows.append({**row, "solver": fixed.solver, "num_gpus": fixed.num_gpus,
                     "gap": fixed.replace(lower_bound=result.lower_bound).gap,
                     "runtime_s": round(result.runtime_s + info["seconds"], 4),
                     "evaluator_feasible": evaluate(problem, fixed, judge).feasible,
                     "twin_gpus": fixed.num_gpus, "twin_sampled": False,
                     "twin_starved": 0 if info["all_pass"] else float("nan"), "twin_oom": 0,
                     "twin_min_served": float("nan"), "twin_wall_s": info["seconds"]})
        print(f"{'':5s} {'':9s} {'':7s} {'':3s} {fixed.solver:20s} GPUs={fixed.num_gpus:4d} "
              f"(split {info['split_gpus']}, all pass: {info['all_pass']})", flush=True)
    return rows


def markdown(df: pd.DataFrame) -> str:
    """A DataFrame as a GitHub markdown table (index included)."""
    cols = [str(df.index.name or "")] + [str(c) for c in df.columns]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in df.iterrows():
        cells = ["" if (not isinstance(v, str) and pd.isna(v)) else (v if isinstance(v, str) else f"{v:g}")
                 for v in row]
        out.append("| " + " | ".join([str(idx)] + cells) + " |")
    return "\n".join(out)


def run(args: argparse.Namespace) -> pd.DataFrame:
    solvers = [s for s in args.solvers.split(",") if s]
    exact = [s for s in args.exact_solvers.split(",") if s and s in SOLVERS]
    missing = [s for s in solvers if s not in SOLVERS]
    if missing:
        sys.exit(f"unknown solvers {missing}; registered: {sorted(SOLVERS)}")
    opts: dict[str, float] = {} if args.margin is None else {"margin": args.margin}
    if args.starved_threshold is not None:
        opts["starved_threshold"] = args.starved_threshold
    rows = []
    for model in args.models.split(","):  # warm-up (length tables, surrogate load, JIT): not timed
        tiny = make_instance("zipf", 8, 0, model)
        solve(tiny, "greedy-paper", time_limit=60, oracle=make_oracle(tiny, args.oracle, **opts))
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for model in args.models.split(","):
            for family in args.families.split(","):
                for n in (int(x) for x in args.sizes.split(",")):
                    seeds = args.seeds_large if n >= 10_000 else args.seeds
                    for seed in (int(x) for x in seeds.split(",")):
                        problem = make_instance(family, n, seed, model)
                        judge = make_oracle(problem, args.oracle, **opts)
                        memo: dict = {}
                        names = solvers + ([s for s in exact if n <= args.exact_max_adapters])
                        for name in names:
                            rows.extend(run_one(pool, problem, name, family, seed, judge, memo, args, opts))
    return pd.DataFrame(rows)


def _versus(piv: pd.DataFrame, best: str, title: str) -> list[str]:
    lines = ["", title, "", "| versus | instances | fewer GPUs | equal | more GPUs | mean reduction |",
             "|---|---|---|---|---|---|"]
    for other in [c for c in piv.columns if c != best]:
        both = piv[[best, other]].dropna()
        if both.empty:
            continue
        d = both[best] - both[other]
        red = (1 - both[best] / both[other]).mean() * 100
        lines.append(f"| {other} | {len(both)} | {int((d < 0).sum())} | {int((d == 0).sum())} | "
                     f"{int((d > 0).sum())} | {red:.1f} % |")
    return lines


def summarise(df: pd.DataFrame, command: str, commit: str, models_note: str) -> str:
    """The markdown summary of a run's rows."""
    df = df.copy()
    for col in ("twin_gpus", "twin_starved", "twin_oom"):
        df[col] = df.get(col, pd.Series(np.nan, index=df.index))
    ok = df[df.status.isin(["optimal", "feasible"])]
    raw = ok[~ok.solver.str.endswith("+repair")]
    lines = [f"# Placement benchmark {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC (commit {commit})", "",
             f"Command: `{command}`", "", f"Surrogate models: {models_note}", "",
             f"Oracle: {df.oracle.iloc[0] if len(df) else '-'}; instances: {df.instance.nunique()} "
             f"(x {df.model.nunique()} models); solver runs: {len(df)}.", "",
             "## GPUs per solver", "",
             "| solver | runs | mean GPUs | mean gap to LB | evaluator-feasible | twin GPUs checked "
             "| twin starved | twin OOM | plans with a starved GPU |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, g in df.groupby("solver", sort=False):
        bad = int((g.twin_starved.fillna(0) + g.twin_oom.fillna(0) > 0).sum())
        lines.append(f"| {name} | {len(g)} | {g.num_gpus.mean():.2f} | {100 * g.gap.mean():.1f} % | "
                     f"{int(g.evaluator_feasible.sum())} | {int(g.twin_gpus.fillna(0).sum())} | "
                     f"{int(g.twin_starved.fillna(0).sum())} | {int(g.twin_oom.fillna(0).sum())} | {bad} |")
    piv = raw.pivot_table(index=["model", "instance"], columns="solver", values="num_gpus", aggfunc="first")
    if "ffd-bisect" in piv:
        lines += _versus(piv, "ffd-bisect", "## ffd-bisect against the others (same instance, same oracle)")
        for exact in ("cpsat", "ilp"):
            if exact in piv:
                proven = ok[(ok.solver == exact) & (ok.status == "optimal")].set_index(["model", "instance"])
                both = piv.loc[piv.index.isin(proven.index), ["ffd-bisect", exact]].dropna()
                d = both["ffd-bisect"] - both[exact]
                lines += ["", f"Where `{exact}` proved optimality ({len(both)} instances): ffd-bisect "
                          f"equal on {int((d == 0).sum())}, +1 on {int((d == 1).sum())}, more on "
                          f"{int((d > 1).sum())}, fewer on {int((d < 0).sum())}."]
    rep = ok[ok.solver == "ffd-bisect+repair"].set_index(["model", "instance"])
    if len(rep):
        before = raw[raw.solver == "ffd-bisect"].set_index(["model", "instance"]).num_gpus
        greedy = raw[raw.solver == "greedy-paper"].set_index(["model", "instance"]).num_gpus
        j = pd.DataFrame({"repaired": rep.num_gpus, "before": before, "greedy": greedy}).dropna()
        lines += ["", "## Twin repair of ffd-bisect plans (placer.repair; all GPUs simulated)", "",
                  f"{len(j)} plans (n ≤ repair limit): {int((j.repaired > j.before).sum())} needed repair, "
                  f"+{int((j.repaired - j.before).sum())} GPUs in total; every repaired GPU passed the twin "
                  f"in {int((rep.twin_starved == 0).sum())} of {len(rep)} plans. Repaired plans vs "
                  f"greedy-paper: "
                  f"fewer GPUs on {int((j.repaired < j.greedy).sum())}, equal on "
                  f"{int((j.repaired == j.greedy).sum())}, more on {int((j.repaired > j.greedy).sum())}; "
                  f"mean reduction {100 * (1 - j.repaired / j.greedy).mean():.1f} %."]
    lines += ["", "## Twin failures by size (GPUs starved / GPUs simulated)", "",
              markdown(raw.assign(f=raw.twin_starved.fillna(0).astype(int).astype(str) + "/" +
                                  raw.twin_gpus.fillna(0).astype(int).astype(str))
                       .pivot_table(index="n", columns="solver", values="f", aggfunc=_sum_frac)), ""]
    lines += ["## Solver time (s) by size (mean over instances)", "",
              markdown(raw.pivot_table(index="n", columns="solver", values="runtime_s", aggfunc="mean")
                       .round(3)), ""]
    return "\n".join(lines) + "\n"


def _sum_frac(values: pd.Series) -> str:
    a = b = 0
    for v in values:
        x, y = str(v).split("/")
        a, b = a + int(x), b + int(y)
    return f"{a}/{b}"


def plot(df: pd.DataFrame, path: Path) -> None:
    from matplotlib.figure import Figure

    ok = df[df.status.isin(["optimal", "feasible"])]
    piv = ok.pivot_table(index=["model", "instance", "n"], columns="solver", values="num_gpus",
                         aggfunc="first")
    if "greedy-paper" not in piv:
        return
    rel = piv.div(piv["greedy-paper"], axis=0).reset_index()
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    for name in [c for c in piv.columns if c != "greedy-paper"]:
        means = rel.groupby("n")[name].mean()
        ax.plot(means.index, means.values, marker="o", label=name)
    ax.axhline(1.0, color="k", lw=0.8, ls="--", label="greedy-paper")
    ax.set_xscale("log")
    ax.set_xlabel("adapters")
    ax.set_ylabel("GPUs / greedy-paper GPUs (mean)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    args = parse()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "placement" + (f"-{args.tag}" if args.tag else "")
    if args.from_csv:  # re-summarise an earlier run
        df = pd.read_csv(args.from_csv)
    else:
        df = run(args)
        atomic_write_text(out / f"{stem}.csv", df.to_csv(index=False))
    commit = args.commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                           text=True, cwd=ROOT).stdout.strip()
    command = args.command or f"python bench/bench_placement.py {' '.join(sys.argv[1:])}"
    models = args.models_note or _models_note()
    atomic_write_text(out / f"{stem}-{dt.date.today():%Y-%m-%d}.md", summarise(df, command, commit, models))
    plot(df[~df.solver.str.endswith("+repair")], out / f"{stem}.png")
    print(f"wrote {out / stem}.csv, .png and the summary")


def _models_note() -> str:
    import json

    from surrogate.bundle import default_models_dir

    notes = []
    for f in sorted(default_models_dir().glob("*.surrogate.json")):
        meta = json.loads(f.read_text())
        notes.append(f"{meta.get('name')}: {meta.get('rows')} twin runs, trained {meta.get('trained_utc')}, "
                     f"validation {meta.get('validation')}")
    return "; ".join(notes) or "none"


if __name__ == "__main__":
    main()
