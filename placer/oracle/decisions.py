"""Training samples where the placer decides: the GPUs of its own plans, as twin sweep samples.

A random sweep (:mod:`surrogate.sampling`) covers the configuration space evenly, but a packer does not ask
evenly: it fills every GPU until the oracle says no, so it lands exactly where the surrogate *under*-predicts
latency or over-predicts capacity (the optimiser's curse). On the SLO benchmark's plans the shipped latency
models judged GPUs of 377 adapters on 160 slots at TTFT p99 ≈ 2.2 s where the twin measured 35 s — a regime
(hundreds of cold adapters per GPU, slot-bound) that a log-uniform sweep visits rarely.

:func:`plan_specs` turns the GPUs of a plan into samples in the form of
:func:`surrogate.sampling.draw_sample` (the twin re-simulates each with its adapters, configuration and the
instance's workload), optionally at scaled loads, so the labels bracket the decision boundary;
:func:`decision_specs` makes them for a grid of generated instances solved at several SLO levels. Run them
with :func:`surrogate.dataset.sweep_specs` and train on them together with a random sweep. Seeds of the
instances here must differ from those of any benchmark that judges the result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from placer.oracle.base import Oracle
from placer.result import Result
from twin.errors import InputError
from twin.spec import Instance, ServerSettings, Slo

__all__ = ["decision_specs", "plan_specs"]


def plan_specs(problem: Instance, plan: Result, *, seed: int = 0, loads: Sequence[float] = (1.0,),
               max_gpus: int | None = None) -> list[dict[str, Any]]:
    """One sample per GPU of ``plan`` and per load factor in ``loads`` (every rate scaled by it).

    ``max_gpus``: at most that many GPUs, drawn with ``numpy.random.default_rng(seed)`` (None: all). The
    instance must use the default server settings (a sample has no fields for others).
    """
    if problem.server != ServerSettings():
        raise InputError("samples carry the default server settings only", field="server",
                         value=problem.server)
    w = problem.workload
    chosen = list(range(plan.num_gpus))
    rng = np.random.default_rng(seed)
    if max_gpus is not None and len(chosen) > max_gpus:
        chosen = sorted(rng.choice(chosen, size=max_gpus, replace=False).tolist())
    specs = []
    for j in chosen:
        g = plan.gpus[j]
        idx = [problem.index[a] for a in g.adapters]
        for load in loads:
            specs.append({
                "profile": f"{problem.model}@{problem.gpu}", "n_adapters": len(idx),
                "ranks": [int(problem.adapters[i].rank) for i in idx],
                "rates": [float(f"{problem.adapters[i].rate_rps * load:.6g}") for i in idx],
                "max_loras": int(g.max_loras), "max_cpu_loras": g.max_cpu_loras,
                "max_lora_rank": int(g.max_lora_rank), "duration_s": float(w.duration_s),
                "arrival": w.arrival, "cv": w.cv, "arrival_trace": w.trace, "lengths": w.lengths.kind,
                "input_mean": w.lengths.input_mean, "input_std": w.lengths.input_std,
                "output_mean": w.lengths.output_mean, "output_std": w.lengths.output_std,
                "lengths_trace": w.lengths.trace, "target_load": math.nan,
                "seed": int(rng.integers(2**31 - 1)),
                "origin": f"{problem.name} gpu {j} load x{load:g} ({problem.slo.describe()})",
            })
    return specs


def decision_specs(families: Sequence[str], sizes: Sequence[int], seeds: Sequence[int],
                   models: Sequence[str], slos: Sequence[Slo], *, rate_per_adapter: float = 1.0,
                   loads: Sequence[float] = (1.0, 1.15), max_gpus: int = 8, solver: str = "ffd-bisect",
                   time_limit: float = 30.0, oracle_kind: str = "surrogate") -> list[dict[str, Any]]:
    """Samples from the plans of ``solver`` on generated instances (every family × size × seed × model ×
    SLO): :func:`plan_specs` of each plan (``max_gpus`` GPUs at most, each at every load in ``loads``).
    An instance with adapters the oracle says fit nowhere gives those adapters alone on a GPU instead."""
    from placer.oracle import make_oracle
    from placer.problem.generate import generate
    from placer.solve import solve

    specs: list[dict[str, Any]] = []
    for family in families:
        for n in sizes:
            for seed in seeds:
                for model in models:
                    total = None if family == "paper" else rate_per_adapter * n
                    base = generate(family, n, seed, model=model, total_rate_rps=total)
                    oracle: Oracle = make_oracle(base, oracle_kind)
                    for slo in slos:
                        problem = base.replace(slo=slo)
                        plan = solve(problem, solver, time_limit=time_limit, seed=0, oracle=oracle)
                        if plan.gpus:
                            specs += plan_specs(problem, plan, seed=seed, loads=loads, max_gpus=max_gpus)
                        else:  # the oracle refused an adapter even alone: learn whether it was right
                            specs += plan_specs(problem, _alone(problem, oracle), seed=seed, loads=loads,
                                                max_gpus=max_gpus)
    return specs


def _alone(problem: Instance, oracle: Oracle) -> Result:
    """The adapters ``oracle`` says fit on no GPU, each alone on one GPU with one slot."""
    from placer.result import GpuPlan

    bad = oracle.unplaceable(problem)
    gpus = tuple(GpuPlan(adapters=(problem.adapters[i].id,), max_loras=1, max_cpu_loras=1,
                         max_lora_rank=int(problem.adapters[i].rank)) for i in bad)
    return Result(solver="alone", status="infeasible", num_gpus=len(gpus), lower_bound=0, runtime_s=0.0,
                  gpus=gpus)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m placer.oracle.decisions OUT_DIR [options]``: make the samples and run them in the twin."""
    import argparse
    import sys

    from surrogate.dataset import sweep_specs

    ap = argparse.ArgumentParser(prog="python -m placer.oracle.decisions", description=main.__doc__)
    ap.add_argument("out_dir")
    ap.add_argument("--families", default="paper,zipf,dirichlet,trace")
    ap.add_argument("--sizes", default="60,250,1000")
    ap.add_argument("--seeds", default="100,101", help="instance seeds (keep them apart from benchmarks')")
    ap.add_argument("--models", default="llama-3.1-8b-instruct,qwen-2.5-7b-instruct")
    ap.add_argument("--ttft", default="1,2,5", help="TTFT p99 levels (s), each with TPOT p99 200 ms")
    ap.add_argument("--loads", default="1,1.15")
    ap.add_argument("--max-gpus", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    args = list(sys.argv[1:] if argv is None else argv)
    a = ap.parse_args(args)
    slos = [Slo(ttft_p99_s=float(t), tpot_p99_ms=200.0) for t in a.ttft.split(",")]
    specs = decision_specs(a.families.split(","), [int(n) for n in a.sizes.split(",")],
                           [int(s) for s in a.seeds.split(",")], a.models.split(","), slos,
                           loads=[float(x) for x in a.loads.split(",")], max_gpus=a.max_gpus)
    source = " ".join(["python -m placer.oracle.decisions", *args[1:]])  # the output folder is not part of it
    stats = sweep_specs(specs, a.out_dir, workers=a.workers, source=source)
    print(f"{stats.runs} twin runs ({len(specs)} samples) in {stats.elapsed_s:.0f} s → {a.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
