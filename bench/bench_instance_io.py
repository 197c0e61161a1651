"""Time read_instance on large instances (protocol: bench/instance_io.md)."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from placer.problem.generate import generate
from placer.problem.io import read_instance, write_instance

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (128, 2_000, 10_000):
            inst = generate("zipf", n, seed=0)
            for fmt, suffix, as_csv in (("yaml+csv", ".yaml", True), ("yaml inline", ".yaml", False),
                                        ("json inline", ".json", False)):
                path = Path(tmp) / f"n{n}-{fmt.replace(' ', '-').replace('+', '-')}{suffix}"
                write_instance(inst, path, adapters_csv=as_csv)
                assert read_instance(path) == inst
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    read_instance(path)
                    times.append(time.perf_counter() - start)
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "placer", "show", str(path), "--json"], check=True,
                               capture_output=True)
                cli = time.perf_counter() - start
                rows.append({"n": n, "format": fmt, "median_s": round(statistics.median(times), 4),
                             "max_s": round(max(times), 4), "cli_s": round(cli, 3)})
                print(rows[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "instance_io.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    today = dt.date.today().isoformat()
    lines = [f"# instance_io — {today}", "", f"repeats = {args.repeats}; protocol: bench/instance_io.md", "",
             "| adapters | format | read median (s) | read max (s) | `placer show --json` (s) |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['n']:,} | {r['format']} | {r['median_s']} | {r['max_s']} | {r['cli_s']} |" for r in rows]
    (RESULTS / f"instance_io-{today}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
