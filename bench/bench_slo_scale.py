"""Scale of the default solver under the default SLO, against the papers' rule on the same instance.

Protocol (issue 14, "Scale"): `placer.generate("zipf", N, seed=0)` with 0.25 req/s per adapter on average
(2,500 req/s at 10,000 adapters, 25,000 at 100,000), Llama-3.1-8B on h100-64gb; `placer.solve(problem,
"ffd-bisect", time_limit=600, seed=0)` with the shipped surrogate oracle, once under the instance's default
criterion (SLO: TTFT p99 ≤ 2 s, TPOT p99 ≤ 200 ms, served ≥ 0.9) and once under `criterion: paper`, in one
process (so the two times are a ratio on the same machine state). Reported: wall seconds of each solve
(lower bound included), its CPU seconds (all threads of the process: on the shared machine wall time
grows with the other jobs' load, CPU time much less), the wall seconds of the bound alone (linear model +
bounds, `stats.bound_s`), GPUs, lower bound, gap = (GPUs − bound) / GPUs, and the process's peak resident
memory. Protocol: `bench/slo_scale.md`.

Usage: `python bench/bench_slo_scale.py 10000 100000` — prints one JSON line per size.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import placer
from twin.spec import Slo


def run(n: int) -> dict[str, object]:
    problem = placer.generate("zipf", n, seed=0, total_rate_rps=0.25 * n)
    out: dict[str, object] = {"adapters": n}
    for criterion in ("slo", "paper"):
        q = problem if criterion == "slo" else problem.replace(slo=Slo(criterion="paper"))
        start, cpu = time.perf_counter(), time.process_time()
        result = placer.solve(q, "ffd-bisect", time_limit=600, seed=0)
        out[criterion] = {"solve_s": round(time.perf_counter() - start, 1),
                          "solve_cpu_s": round(time.process_time() - cpu, 1), "bound_s": result.stats.bound_s,
                          "gpus": result.num_gpus, "lower_bound": result.lower_bound,
                          "gap": None if result.gap is None else round(result.gap, 4)}
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return out


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["10000"]:
        print(json.dumps(run(int(arg))), flush=True)
