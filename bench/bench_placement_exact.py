"""Exact-solver rows for the placement benchmark (protocol: bench/placement_exact.md).

On instances of at most 60 adapters, ``cpsat`` and ``ilp`` solve the linearised model; the best heuristic
(``ffd-bisect``) and the published greedy (``greedy-paper``) run under the same oracle; every plan is judged
by the one evaluator. Reports the proven-optimal count and the heuristics' gap to the proven optimum.

    python bench/bench_placement_exact.py --oracle analytic
    python bench/bench_placement_exact.py --sizes 16 --seeds 0 --families zipf --tag smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd

from placer.check.evaluate import evaluate
from placer.oracle import make_oracle
from placer.problem.generate import generate
from placer.solve import solve
from twin.files import atomic_write_text

ROOT = Path(__file__).resolve().parent
EXACT = ("cpsat", "ilp")
HEURISTICS = ("ffd-bisect", "greedy-paper")


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default="paper,zipf,dirichlet,trace")
    ap.add_argument("--sizes", default="16,32,60")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--model", default="llama-3.1-8b-instruct")
    ap.add_argument("--rate-per-adapter", type=float, default=1.5,
                    help="req/s per adapter for zipf/dirichlet/trace (paper keeps its own rates)")
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--oracle", default="surrogate")
    ap.add_argument("--oracle-options", default="{}", help='JSON, e.g. {"slot_cost": 0.005}')
    ap.add_argument("--tag", default="")
    ap.add_argument("--out-dir", default=str(ROOT / "results"))
    return ap.parse_args()


def main() -> None:
    args = parse()
    opts = json.loads(args.oracle_options)
    rows = []
    for family in args.families.split(","):
        for n in [int(x) for x in args.sizes.split(",")]:
            for seed in [int(x) for x in args.seeds.split(",")]:
                kw = {} if family == "paper" else {"total_rate_rps": args.rate_per_adapter * n}
                problem = generate(family, n, seed, model=args.model, **kw)  # type: ignore[arg-type]
                oracle = make_oracle(problem, args.oracle, **opts)  # shared: one linear model per instance
                for name in (*HEURISTICS, *EXACT):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", DeprecationWarning)
                        r = solve(problem, name, time_limit=args.time_limit, seed=seed, oracle=oracle)
                    ev = evaluate(problem, r, oracle)
                    rows.append({"family": family, "n": n, "seed": seed, "solver": name, "status": r.status,
                                 "num_gpus": r.num_gpus, "lower_bound": r.lower_bound,
                                 "runtime_s": round(r.runtime_s, 3), "evaluator_feasible": ev.feasible,
                                 "model_status": r.extra.get("model_status"),
                                 "model_objective": r.extra.get("model_objective"),
                                 "model_bound": r.extra.get("model_bound"),
                                 "oracle_rejected": len(r.extra.get("oracle_rejected") or []),
                                 "classes": len(r.extra.get("classes") or []), "reason": r.reason or "",
                                 "pattern_lp": (r.extra.get("pattern_lp") or {}).get("bound"),
                                 "warm_start_patterns": (r.extra.get("warm_start") or {}).get("patterns"),
                                 "oracle": oracle.name})
                    print(f"{family:9s} n={n:3d} s={seed} {name:12s} {r.status:10s} GPUs={r.num_gpus:3d} "
                          f"LB={r.lower_bound:3d} t={r.runtime_s:6.2f}s "
                          f"eval={'ok' if ev.feasible else 'FAIL'}",
                          flush=True)
    df = pd.DataFrame(rows)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "placement_exact" + (f"-{args.tag}" if args.tag else "")
    atomic_write_text(out / f"{stem}.csv", df.to_csv(index=False))
    atomic_write_text(out / f"{stem}-{dt.date.today().isoformat()}.md", summary(df, args))


def _git(*args: str) -> str:
    """Short hash of the last commit (of the paths after ``--``), or ``?`` outside git."""
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%h", *args], cwd=ROOT.parent, capture_output=True,
                             text=True, check=True)
        return out.stdout.strip() or "?"
    except (OSError, subprocess.CalledProcessError):
        return "?"


def _dirty(*paths: str) -> bool:
    """Whether the working tree has uncommitted changes under ``paths`` (default: placer/ and this script)."""
    try:
        where = paths or ("placer", "bench/bench_placement_exact.py")
        out = subprocess.run(["git", "status", "--porcelain", "--", *where],
                             cwd=ROOT.parent, capture_output=True, text=True, check=True)
        return any(ln and not ln.startswith("??") for ln in out.stdout.splitlines())
    except (OSError, subprocess.CalledProcessError):
        return False


def summary(df: pd.DataFrame, args: argparse.Namespace) -> str:
    """Proven-optimal counts, and each heuristic's gap to the proven optimum."""
    lines = [f"# Exact placement solvers ({dt.date.today().isoformat()})", "",
             f"Protocol: bench/placement_exact.md. "
             f"Oracle `{df['oracle'].iloc[0] if len(df) else args.oracle}`, "
             f"time limit {args.time_limit:g} s, model {args.model}, "
             f"{args.rate_per_adapter:g} req/s per adapter (zipf/dirichlet/trace).", "",
             f"Command: `python bench/bench_placement_exact.py {' '.join(sys.argv[1:])}`; code at commit "
             f"{_git('HEAD')}{' (uncommitted changes in placer/ or this script)' if _dirty() else ''}, "
             f"surrogate models of commit {_git('HEAD', '--', 'surrogate/models')}, "
             f"twin of commit {_git('HEAD', '--', 'twin')}"
             f"{' (uncommitted twin changes in the working tree)' if _dirty('twin') else ''}; "
             f"sequential on a shared 2-core machine.", ""]
    inst_cols = ["family", "n", "seed"]
    solved = df[df["status"] != "infeasible"]
    lines.append(f"Instances: {df.groupby(inst_cols).ngroups}; "
                 f"with a plan: {solved.groupby(inst_cols).ngroups}.")
    lines += ["", "| solver | runs | optimal | timeout | feasible | infeasible | oracle-rejected GPUs | "
              "mean time (s) | max time (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, g in df.groupby("solver"):
        c = g["status"].value_counts()
        lines.append(f"| {name} | {len(g)} | {c.get('optimal', 0)} | {c.get('timeout', 0)} | "
                     f"{c.get('feasible', 0)} | {c.get('infeasible', 0)} | "
                     f"{int(g['oracle_rejected'].sum())} | "
                     f"{g['runtime_s'].mean():.2f} | {g['runtime_s'].max():.2f} |")
    lines.append("")
    for name in EXACT:
        g = df[df["solver"] == name]
        if "model_status" in g:
            proven = int((g["model_status"] == "optimal").sum())
            lines.append(f"- {name}: linear-model optimum proven on {proven}/{len(g)} (status `optimal` "
                         "above also needs the plan to meet the relaxed lower bound)")
    exact = df[df["solver"].isin(EXACT)]
    if len(exact):
        over = int((exact["runtime_s"] > args.time_limit).sum())
        lines.append(f"- exact solvers' runtime: max {exact['runtime_s'].max():.2f} s for a "
                     f"{args.time_limit:g} s limit; runs over the limit: {over}")
    model_opt = exact[exact["model_status"] == "optimal"].groupby(inst_cols)["model_objective"].min()
    for h in HEURISTICS:
        hh = df[df["solver"] == h].set_index(inst_cols)["num_gpus"]
        joined = pd.concat([hh, model_opt.rename("optimum")], axis=1, join="inner")
        if not joined.empty:
            diff = joined["num_gpus"] - joined["optimum"]
            lines.append(f"- {h} vs the proven linear-model optimum ({len(joined)} instances): equal on "
                         f"{int((diff == 0).sum())} ({100 * (diff == 0).mean():.0f} %), within +1 on "
                         f"{int((diff <= 1).sum())}, max excess {int(diff.max())}, "
                         f"below on {int((diff < 0).sum())}")
    opt = df[df["solver"].isin(EXACT) & (df["status"] == "optimal")]
    best = opt.groupby(inst_cols)["num_gpus"].min().rename("optimum")
    lines += ["", f"Instances with a proven optimum (either exact solver): {len(best)}.", ""]
    for h in HEURISTICS:
        hh = df[df["solver"] == h].set_index(inst_cols)["num_gpus"]
        joined = pd.concat([hh, best], axis=1, join="inner")
        if joined.empty:
            continue
        diff = joined["num_gpus"] - joined["optimum"]
        lines.append(f"- {h}: equals the optimum on {int((diff == 0).sum())}/{len(joined)} "
                     f"({100 * (diff == 0).mean():.0f} %), "
                     f"within +1 on {int((diff <= 1).sum())}/{len(joined)}, "
                     f"max excess {int(diff.max())}, below the model optimum on {int((diff < 0).sum())} "
                     "(possible: the linear model is conservative w.r.t. the oracle)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
