"""Twin-oracle memory benchmark: peak RSS and wall time of ``placer solve --oracle twin`` on the 48-adapter
instance of issue 15 item 12, per code revision (protocol: bench/twin_oracle_memory.md)."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import os
import platform
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from twin.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]

INSTANCE_ARGS = ("--family", "paper", "--adapters", "48", "--rates", "1.6,0.8,0.1", "--ranks", "8,16,32",
                 "--seed", "0")
TINY = ("from twin import Adapter, Instance, Workload, simulate; "
        "i = Instance(name='t', model='llama-3.1-8b-instruct', gpu='h100-64gb', "
        "adapters=(Adapter('a', 8, 1.0),), workload=Workload(duration_s=60.0)); "
        "simulate(i, max_loras=1)")
THREADS = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
WORKTREE = "worktree"  # --revs entry meaning the files as they are in this checkout


def source_tree(rev: str, tmp: Path) -> tuple[Path, str]:
    """A directory holding the code of ``rev`` (``git archive``), or this checkout; and its short hash."""
    if rev == WORKTREE:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        return ROOT, head + ("+changes" if dirty else "")
    short = _git("rev-parse", "--short", rev)
    dest = tmp / f"src-{short}"
    if not dest.exists():
        data = subprocess.run(["git", "archive", "--format=tar", short], cwd=ROOT, capture_output=True,
                              check=True).stdout
        dest.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(dest, filter="data")
    return dest, short


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def _env(tree: Path) -> dict[str, str]:
    # the tree's own packages first (an editable install may point at another checkout)
    return {**os.environ, **THREADS, "PYTHONPATH": str(tree)}


def _limits(as_bytes: int, cpu: int | None) -> Any:
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (as_bytes, as_bytes))
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
    return apply


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_solve(tree: Path, instance: Path, time_limit: float, as_gb: float, timeout_s: float,
              cpu: int | None, workdir: Path) -> dict[str, Any]:
    """One ``python -m placer solve INSTANCE --oracle twin --json`` in a fresh process under an address-space
    limit: wall time, peak RSS (the kernel's, via wait4), time to pass 1 GB (sampled every 0.5 s)."""
    cmd = [sys.executable, "-m", "placer", "solve", instance.name, "--oracle", "twin", "--json",
           "--time-limit", f"{time_limit:g}"]
    out_path, err_path = workdir / "solve.out", workdir / "solve.err"
    load_start = os.getloadavg()[0]
    with open(out_path, "w") as out, open(err_path, "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=instance.parent, env=_env(tree), stdout=out, stderr=err,
                                preexec_fn=_limits(int(as_gb * 1e9), cpu))
        samples: list[tuple[float, float]] = []
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.5):
                rss = _rss_mb(proc.pid)
                if rss is not None:
                    samples.append((time.perf_counter() - t0, rss))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        killer = threading.Timer(timeout_s, lambda: os.kill(proc.pid, signal.SIGKILL))
        killer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        killer.cancel()
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    row: dict[str, Any] = {
        "exit": proc.returncode, "wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "first_over_1gb_s": next((round(t, 1) for t, r in samples if r > 1024), ""),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "loadavg_start": round(load_start, 2),
        "loadavg_end": round(os.getloadavg()[0], 2),
        "status": "", "num_gpus": "", "lower_bound": "", "solver_s": "", "bound_s": "", "error": "",
    }
    if proc.returncode == 0:
        doc = json.loads(out_path.read_text())
        row.update(status=doc["status"], num_gpus=doc["num_gpus"], lower_bound=doc["lower_bound"],
                   solver_s=round(doc["runtime_s"], 1), bound_s=round(doc["extra"].get("bound_s", 0.0), 1))
    else:
        lines = [ln for ln in err_path.read_text().splitlines() if ln.strip()]
        row["error"] = lines[-1][:120] if lines else ("killed at the timeout" if wall >= timeout_s else "")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--revs", default=WORKTREE,
                    help=f"comma-separated git revisions to measure ('{WORKTREE}' = this checkout)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--time-limit", type=float, default=60.0, help="placer solve --time-limit")
    ap.add_argument("--as-gb", type=float, default=4.0, help="address-space limit of each solve (GB)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds before a solve is killed")
    ap.add_argument("--cpu", type=int, default=0, help="pin each solve to this CPU (-1: no pinning)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--date", default=dt.date.today().isoformat())
    args = ap.parse_args()
    cpu = None if args.cpu < 0 else args.cpu
    revs = [r.strip() for r in args.revs.split(",") if r.strip()]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        instance = tmp / "p48.yaml"
        subprocess.run([sys.executable, "-m", "placer", "generate", *INSTANCE_ARGS, "--out", str(instance)],
                       cwd=ROOT, env=_env(ROOT), check=True, capture_output=True)
        for rev in revs:
            tree, short = source_tree(rev, tmp)
            # warm-up: compile (or load) the tree's numba cache outside the timed runs
            subprocess.run([sys.executable, "-c", TINY], cwd=tree, env=_env(tree), check=True)
            for rep in range(args.repeats):
                work = tmp / f"run-{short}-{rep}"
                work.mkdir()
                row = {"date": args.date, "rev": short, "repeat": rep,
                       **run_solve(tree, instance, args.time_limit, args.as_gb, args.timeout, cpu, work)}
                rows.append(row)
                print(json.dumps(row), flush=True)

    out_dir = Path(args.out)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out_dir / "twin_oracle_memory.csv", buf.getvalue())
    cmd = "python -m placer solve p48.yaml --oracle twin --json" + (
        f" --time-limit {args.time_limit:g}" if args.time_limit != 60.0 else "")
    lines = [
        f"# Twin-oracle memory — {args.date}",
        "",
        "Protocol: `bench/twin_oracle_memory.md`. Command: `python bench/bench_twin_oracle_memory.py "
        f"--revs {args.revs} --as-gb {args.as_gb:g} --timeout {args.timeout:g}`. "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), "
        f"Python {platform.python_version()}; each solve pinned to "
        f"{'CPU ' + str(cpu) if cpu is not None else 'no CPU'}, one thread.",
        "",
        f"Instance: `placer generate {' '.join(INSTANCE_ARGS)} --out p48.yaml` (48 adapters, 40 req/s). "
        f"Measured: `{cmd}` under an address-space limit of {args.as_gb:g} GB.",
        "",
        "| rev | exit | wall s | peak RSS MB | > 1 GB at s | solver s | bound s | GPUs | bound | status | "
        "load avg start/end | error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['rev']} | {r['exit']} | {r['wall_s']} | {r['peak_rss_mb']} | "
                     f"{r['first_over_1gb_s'] or '-'} | {r['solver_s'] or '-'} | {r['bound_s'] or '-'} | "
                     f"{r['num_gpus'] or '-'} | {r['lower_bound'] or '-'} | {r['status'] or '-'} | "
                     f"{r['loadavg_start']}/{r['loadavg_end']} | {r['error'] or '-'} |")
    lines += ["", "Peak RSS is the kernel's maximum resident set of the solve process (`wait4`); wall time "
              "includes process start and imports; solver s and bound s are the result's `runtime_s` and "
              "`extra.bound_s`. On this shared machine wall time includes waiting for a core.", ""]
    atomic_write_text(out_dir / f"twin_oracle_memory-{args.date}.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
