"""Twin speed benchmark: wall and CPU seconds per simulated hour (protocol: bench/twin_speed.md)."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

ROOT = Path(__file__).resolve().parents[1]

from twin import Adapter, Instance, Workload, generate_requests, simulate  # noqa: E402
from twin.files import atomic_write_text  # noqa: E402

LLAMA, QWEN = "llama-3.1-8b-instruct", "qwen-2.5-7b-instruct"
# name: (model, n adapters, rates, ranks, max_loras)
CASES: dict[str, tuple[str, int, tuple[float, ...], tuple[int, ...], int]] = {
    "a-heavy": (LLAMA, 384, (1.6, 0.8, 0.4), (8, 16), 32),
    "b-light": (LLAMA, 128, (0.1, 0.05, 0.025), (8, 16), 128),
    "c-medium": (LLAMA, 128, (0.4, 0.2, 0.1), (8, 16, 32), 32),
    "d-qwen": (QWEN, 256, (0.4, 0.2, 0.1), (8, 16), 64),
}
DURATION_S = 3600.0
TINY = ("from twin import Adapter, Instance, Workload, simulate; "
        "i = Instance(name='t', model='llama-3.1-8b-instruct', gpu='h100-64gb', "
        "adapters=(Adapter('a', 8, 1.0),), workload=Workload(duration_s=60.0)); "
        "simulate(i, max_loras=1)")


def instance(case: str) -> Instance:
    model, n, rates, ranks, _ = CASES[case]
    ads = tuple(Adapter(f"a{i}", ranks[i % len(ranks)], rates[i % len(rates)]) for i in range(n))
    return Instance(name=case, model=model, gpu="h100-64gb", adapters=ads,
                    workload=Workload(duration_s=DURATION_S))


def first_call_s(cache_dir: str) -> float:
    """Wall seconds of a fresh interpreter's first tiny simulation (imports excluded)."""
    code = "import time, twin; t = time.perf_counter(); " + TINY + "; print(time.perf_counter() - t)"
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def ratio(cases: list[str], seeds: int, candidate: Path, out_dir: Path) -> None:
    """CPU seconds of the candidate profiles (``<model>@h100-64gb.json`` in ``candidate``) over the shipped
    ones, in one process: for each case and seed the two runs alternate (shipped first), so both see the same
    machine load; the ratio is median(candidate CPU) / median(shipped CPU) per case."""
    from twin import Profile, load_profile

    exec(TINY, {})
    lines = [f"# Twin speed: candidate profiles vs shipped — {dt.date.today().isoformat()}", "",
             f"Command: `python bench/bench_twin_speed.py --candidate {candidate.name} --seeds {seeds} "
             f"--cases {','.join(cases)}` (one process, one thread, runs alternate). Load average at start "
             f"{os.getloadavg()[0]:.1f}.", "",
             "| case | shipped CPU s (median) | candidate CPU s (median) | ratio "
             "| shipped / candidate steps |",
             "|---|---|---|---|---|"]
    for case in cases:
        inst, k = instance(case), CASES[case][4]
        profs = {"shipped": load_profile(inst.model, inst.gpu),
                 "candidate": Profile.load(candidate / f"{inst.model}@{inst.gpu}.json")}
        cpu: dict[str, list[float]] = {"shipped": [], "candidate": []}
        steps: dict[str, list[int]] = {"shipped": [], "candidate": []}
        for seed in range(seeds):
            for name, prof in profs.items():
                c0 = time.process_time()
                res = simulate(inst, max_loras=k, seed=seed, profile=prof)
                cpu[name].append(time.process_time() - c0)
                steps[name].append(res.steps)
        a, b = statistics.median(cpu["shipped"]), statistics.median(cpu["candidate"])
        lines.append(f"| {case} | {a:.3f} | {b:.3f} | {b / a:.2f} | "
                     f"{int(statistics.median(steps['shipped']))} / "
                     f"{int(statistics.median(steps['candidate']))} |")
        print(lines[-1], flush=True)
    atomic_write_text(out_dir / f"twin_speed_ratio_{dt.date.today().isoformat()}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--candidate", default=None,
                    help="folder of candidate profiles: report only their CPU time / the shipped ones'")
    args = ap.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    out_dir = Path(args.out)
    if args.candidate:
        ratio(cases, args.seeds, Path(args.candidate), out_dir)
        return
    load_start = os.getloadavg()

    with tempfile.TemporaryDirectory() as cache:
        compile_s = first_call_s(cache)
        cache_load_s = first_call_s(cache)
    print(f"first call: compiling {compile_s:.2f} s, warm cache {cache_load_s:.2f} s", flush=True)

    exec(TINY, {})  # warm-up in this process (loads the cached code)
    rows = []
    for case in cases:
        inst = instance(case)
        k = CASES[case][4]
        for seed in range(args.seeds):
            c0, t0 = time.process_time(), time.perf_counter()
            res = simulate(inst, max_loras=k, seed=seed)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            c1 = time.process_time()
            generate_requests(inst, seed)
            gen_cpu = time.process_time() - c1
            rows.append({
                "case": case, "seed": seed, "wall_s": round(wall, 4), "cpu_s": round(cpu, 4),
                "gen_cpu_s": round(gen_cpu, 4),
                "sim_s": DURATION_S, "arrived": res.arrived, "completed": res.completed, "steps": res.steps,
                "preemptions": res.preemptions, "throughput_tok_s": round(res.throughput_tok_s, 1),
                "offered_tok_s": round(res.offered_tok_s, 1), "starved": res.starved,
                "loadavg_1m": round(os.getloadavg()[0], 2),
            })
            print(f"{case} seed {seed}: wall {wall:.3f} s, cpu {cpu:.3f} s, {res.arrived} arrived, "
                  f"{res.steps} steps", flush=True)
    load_end = os.getloadavg()

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out_dir / "twin_speed.csv", buf.getvalue())

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    lines = [
        f"# Twin speed — {dt.date.today().isoformat()}",
        "",
        f"Protocol: `bench/twin_speed.md`. Command: `python bench/bench_twin_speed.py --seeds {args.seeds}`. "
        f"Commit {commit}. {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), "
        f"Python {platform.python_version()}. Load average (1/5/15 min) at start "
        f"{'/'.join(f'{x:.1f}' for x in load_start)}, at end {'/'.join(f'{x:.1f}' for x in load_end)}.",
        "",
        f"First call: with numba compilation {compile_s:.1f} s; from the warm on-disk cache "
        f"{cache_load_s:.2f} s (both excluded below).",
        "",
        "| case | arrivals | steps | wall s / sim. hour (median) | CPU s / sim. hour (median) | "
        "sim/wall | sim/CPU | gen CPU s | target < 0.5 s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        rs = [r for r in rows if r["case"] == case]
        wall = statistics.median(float(r["wall_s"]) for r in rs) * 3600.0 / DURATION_S
        cpu = statistics.median(float(r["cpu_s"]) for r in rs) * 3600.0 / DURATION_S
        arrivals = int(statistics.median(int(r["arrived"]) for r in rs))
        steps = int(statistics.median(int(r["steps"]) for r in rs))
        gen = statistics.median(float(r["gen_cpu_s"]) for r in rs)
        ok = "met (CPU)" if cpu < 0.5 else "NOT met"
        if wall < 0.5:
            ok = "met"
        lines.append(f"| {case} | {arrivals} | {steps} | {wall:.3f} | {cpu:.3f} | {3600 / wall:,.0f}× | "
                     f"{3600 / cpu:,.0f}× | {gen:.3f} | {ok} |")
    lines += ["", "Wall time on this shared machine includes waiting for a core while other jobs run; "
              "CPU time is this process's own time (one thread). gen = request generation alone "
              "(`generate_requests`, part of each run), median CPU s.", ""]
    atomic_write_text(out_dir / "twin_speed_summary.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
