"""Classic bin-packing benchmark on Falkenauer-style triplets (protocol: bench/binpack.md).

    python bench/bench_binpack.py
    python bench/bench_binpack.py --sizes 60 --seeds 0 --tag smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
from pathlib import Path

import pandas as pd

from placer.exact.binpack import solve_binpack, triplet_instance
from twin.files import atomic_write_text

ROOT = Path(__file__).resolve().parent


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="60,120")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--hard", default="249,501", help="extra sizes, seed 0 only (reported, no target)")
    ap.add_argument("--solvers", default="ffd,ilp,cpsat")
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--tag", default="")
    ap.add_argument("--out-dir", default=str(ROOT / "results"))
    return ap.parse_args()


def runs(args: argparse.Namespace) -> list[tuple[int, int]]:
    sizes = [int(x) for x in args.sizes.split(",") if x]
    seeds = [int(x) for x in args.seeds.split(",") if x]
    hard = [int(x) for x in args.hard.split(",") if x]
    return [(n, s) for n in sizes for s in seeds] + [(n, 0) for n in hard]


def main() -> None:
    args = parse()
    rows = []
    for n, seed in runs(args):
        inst = triplet_instance(n, seed)
        for solver in args.solvers.split(","):
            r = solve_binpack(inst, solver=solver, time_limit=args.time_limit, seed=0)
            rows.append({"n": n, "seed": seed, "solver": solver, "optimum": n // 3, "num_bins": r.num_bins,
                         "lower_bound": r.lower_bound, "status": r.status, "excess": r.num_bins - n // 3,
                         "runtime_s": round(r.runtime_s, 3), "detail": r.detail})
            print(f"n={n:4d} seed={seed} {solver:6s} bins={r.num_bins:4d} (opt {n // 3}) lb={r.lower_bound} "
                  f"{r.status:8s} {r.runtime_s:6.1f}s", flush=True)
    df = pd.DataFrame(rows)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "binpack" + (f"-{args.tag}" if args.tag else "")
    atomic_write_text(out / f"{stem}.csv", df.to_csv(index=False))
    atomic_write_text(out / f"{stem}-{dt.date.today().isoformat()}.md", summary(df, args))


def summary(df: pd.DataFrame, args: argparse.Namespace) -> str:
    target = df[df["n"] <= 120]
    lines = [f"# Bin-packing benchmark ({dt.date.today().isoformat()})", "",
             f"Protocol: bench/binpack.md. Time limit {args.time_limit:g} s, "
             f"{platform.processor() or 'cpu'}, "
             "2 shared cores.", "", "| solver | n | runs | optimal (= n/3, proven) | mean excess bins | "
             "mean time (s) | max time (s) |", "|---|---|---|---|---|---|---|"]
    for (solver, n), g in df.groupby(["solver", "n"], sort=True):
        ok = int(((g["status"] == "optimal") & (g["excess"] == 0)).sum())
        lines.append(f"| {solver} | {n} | {len(g)} | {ok} | {g['excess'].mean():.2f} | "
                     f"{g['runtime_s'].mean():.1f} | {g['runtime_s'].max():.1f} |")
    lines += ["", "Target (n ≤ 120: optimal within the time limit on every instance):"]
    for solver, g in target.groupby("solver"):
        ok = int(((g["status"] == "optimal") & (g["excess"] == 0)).sum())
        lines.append(f"- {solver}: {ok}/{len(g)} " + ("— reached" if ok == len(g) else "— NOT reached"))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
