"""Twin verification of a plan: re-simulate every GPU with its own settings and name any that fails.

:func:`verify` first checks the plan's structure with the evaluator
(:func:`placer.check.evaluate.check_plan`); a
plan with unknown adapters or violated constraints is rejected with an :class:`~twin.errors.InputError`
giving the reason. Then every GPU (or a seeded sample of them, for very large plans) is simulated — at its own
``max_num_seqs`` and ``gpu_memory_utilization`` when the plan has them (``--tune-batch``), else the
instance's — by
``twin.simulate`` on a backend of :mod:`twin.parallel` — a local process pool (default) or a Ray cluster
(``backend="ray"``, extra ``ray``); the rows are the same whatever runs them. Each GPU is judged by the
problem's criterion (``problem.slo``: the default SLO, the file's ``slo`` section, or ``criterion: paper`` for
the papers' rule alone); a GPU that fails it — served fraction, a latency percentile over its bound, or a
memory error — makes the plan infeasible and is named in ``failures`` with the measured value, the bound and
by how much.

With ``seeds`` = n > 1 every GPU is simulated with seeds ``seed, …, seed + n − 1``
(:func:`twin.seeds.seed_list`): each GPU row keeps the first seed's twin result and adds its per-seed
verdicts (``seed_passed``) and ``pass_fraction``; the report adds the plan's verdict per seed
(``seed_feasible``: every checked GPU passes on that seed) and the plan's ``pass_fraction`` (seeds on which
every checked GPU passes / seeds). The plan is ``feasible`` only if every checked GPU passes on every seed.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from placer.check.evaluate import check_plan
from placer.context import DEFAULT_CONTEXT, Context
from placer.replicas import simulate_gpu
from placer.result import ReplicaPlan, Result, plural
from twin.errors import InputError
from twin.parallel import check_backend, map_unordered
from twin.profile import Profile
from twin.seeds import passes, seed_list
from twin.simulate import simulate
from twin.spec import Instance, Slo

DEFAULT_WORKERS = 2


@dataclass(frozen=True)
class VerifyReport:
    """The twin's verdict on a plan: ``feasible`` ⇔ every simulated GPU meets ``criterion`` (and starts)."""

    feasible: bool
    num_gpus: int
    simulated: tuple[int, ...]  # indices of the GPUs simulated (all of them unless sampled)
    gpus: tuple[dict[str, Any], ...]  # one twin result per simulated GPU (with ``gpu``, ``adapters`` count)
    failures: tuple[str, ...] = field(default=())
    seed: int = 0
    wall_s: float = 0.0
    criterion: str = ""  # the criterion checked, in words
    seeds: tuple[int, ...] = ()  # the seeds simulated (empty = just ``seed``)
    seed_feasible: tuple[bool, ...] = ()  # per seed of ``seeds``: every simulated GPU passes

    @property
    def pass_fraction(self) -> float:
        """Fraction of the seeds on which every simulated GPU passes (1 seed: 1.0 or 0.0)."""
        if not self.seed_feasible:
            return 1.0 if self.feasible else 0.0
        return sum(self.seed_feasible) / len(self.seed_feasible)

    @property
    def sampled(self) -> bool:
        return len(self.simulated) < self.num_gpus

    def summary(self, *, markup: bool = False) -> str:
        """One line: how many GPUs were simulated and the verdict (for a sample: about the sample only)."""
        what = (f"{len(self.simulated)} of {plural(self.num_gpus, 'GPU')} simulated" if self.sampled
                else f"{plural(self.num_gpus, 'GPU')} simulated")
        if self.criterion:
            what += f", checked against {self.criterion}"
        if len(self.seeds) > 1:
            what += f", seeds {self.seeds[0]}–{self.seeds[-1]}: passes on {sum(self.seed_feasible)} of " \
                    f"{len(self.seeds)} ({self.pass_fraction:.0%})"
        if self.feasible:
            verdict = "feasible" + (" for the sampled GPUs only (the others were not checked)"
                                    if self.sampled else "")
            return f"{what}: " + (f"[green]{verdict}[/green]" if markup else verdict)
        return f"{what}: " + ("[red]NOT feasible[/red]" if markup else "NOT feasible")

    def to_dict(self) -> dict[str, Any]:
        return {"feasible": self.feasible, "criterion": self.criterion, "num_gpus": self.num_gpus,
                "sampled": self.sampled,
                "simulated": list(self.simulated), "failures": list(self.failures), "seed": self.seed,
                "wall_s": self.wall_s, "gpus": list(self.gpus),
                "seeds": list(self.seeds or (self.seed,)),
                "seed_feasible": list(self.seed_feasible or (self.feasible,)),
                "pass_fraction": self.pass_fraction}


def _simulate_gpu(args: tuple[Instance, int, int, int, int, int, Profile, tuple[ReplicaPlan, ...]]
                  ) -> dict[str, Any]:
    sub, j, s, m, r, seed, profile, replicas = args
    if replicas:  # several servers share this GPU: the twin's replica model, judged server by server
        return _replica_row(sub, j, seed, profile, replicas)
    sim = simulate(sub, max_loras=s, max_cpu_loras=m, max_lora_rank=r, seed=seed, profile=profile)
    out: dict[str, Any] = {"gpu": j, "n_adapters": sub.n_adapters}
    out.update(sim.to_dict(per_adapter=False))
    out["max_num_seqs"] = sub.server.max_num_seqs  # the settings simulated (the plan's own, if it has them)
    out["gpu_memory_utilization"] = sub.server.gpu_memory_utilization
    out["seed"] = seed  # the row's key with the GPU (the backend may return rows in any order)
    out["passed"] = passes(sim)
    return out


def _replica_row(sub: Instance, j: int, seed: int, profile: Profile, replicas: tuple[ReplicaPlan, ...]
                 ) -> dict[str, Any]:
    """A replicated GPU's row: the replica that fares worst (an OOM, else the lowest served fraction) with
    the GPU's total throughput and offered load, and every replica's own result under ``replicas``."""
    res = simulate_gpu(sub, replicas, profile=profile, seed=seed)
    rows = [r.to_dict(per_adapter=False) for r in res.results]
    worst = min(range(len(rows)), key=lambda i: (not res.results[i].oom, res.results[i].meets(),
                                                 res.results[i].served_fraction))
    out: dict[str, Any] = {"gpu": j, "n_adapters": sub.n_adapters, **rows[worst]}
    for key in ("throughput_tok_s", "offered_tok_s", "expected_offered_tok_s"):
        out[key] = sum(float(r[key] or 0.0) for r in rows)
    out["replicas"] = [{"adapters": len(p.adapters), "slowdown": res.slowdowns[i], **rows[i]}
                       for i, p in enumerate(replicas)]
    out["max_num_seqs"] = [p.max_num_seqs or sub.server.max_num_seqs for p in replicas]
    out["gpu_memory_utilization"] = sum(p.gpu_memory_utilization for p in replicas)
    out["seed"] = seed
    out["passed"] = all(passes(r) for r in res.results)
    return out


def _merge_seeds(rows: list[dict[str, Any]], seeds: tuple[int, ...]) -> dict[str, Any]:
    """One GPU's rows (one per seed, in the order of ``seeds``) as the first seed's row plus the verdicts."""
    out = {k: v for k, v in rows[0].items() if k != "passed"}
    if len(seeds) > 1:
        out["seeds"] = list(seeds)
        out["seed_passed"] = [bool(r["passed"]) for r in rows]
        out["seed_throughput_tok_s"] = [r["throughput_tok_s"] for r in rows]
        out["pass_fraction"] = sum(out["seed_passed"]) / len(rows)
    return out


def _failure(row: dict[str, Any], failed_seeds: list[int], n_seeds: int) -> str | None:
    """The failure line of a GPU (None if it passes on every seed); the row is the first failing seed's."""
    if not failed_seeds:
        return None
    on = f" (seed {failed_seeds[0]}; fails on {len(failed_seeds)} of {n_seeds} seeds)" if n_seeds > 1 else ""
    if row.get("oom"):
        return (f"GPU {row['gpu']} fails to start (memory error): max_loras "
                f"{row.get('max_loras')}, max_lora_rank {row.get('max_lora_rank')}" + on)
    return (f"GPU {row['gpu']} starves: throughput {row['throughput_tok_s']:,.0f} tok/s "
            f"< 0.9 × the {row['offered_tok_s']:,.0f} tok/s that arrived in this run "
            f"(offered load {row.get('expected_offered_tok_s', math.nan):,.0f} tok/s)" + on)


def verify(problem: Instance, plan: Result, *, seed: int = 0, workers: int | None = None,
           sample: int | None = None, progress: Callable[[int, int], None] | None = None,
           only: Sequence[int] | None = None, context: Context | None = None,
           backend: str = "local", seeds: int = 1) -> VerifyReport:
    """Re-simulate the GPUs of ``plan`` in the twin (``workers`` at a time, default 2).

    ``backend``: ``"local"`` (a process pool on this machine, at most one process per CPU; in-process for one
    worker) or ``"ray"`` (Ray tasks, one CPU each, ``workers`` in flight: the cluster named by
    ``RAY_ADDRESS``, else a local Ray with ``workers`` CPUs). The report is the same on either.
    ``sample``: simulate only that many GPUs, chosen with ``numpy.random.default_rng(seed)`` (the report says
    which); None = all. ``only``: simulate just these GPU indices (before sampling). ``context``: the twin
    profile to simulate with (default: the shipped one).
    ``seeds``: simulate every chosen GPU with seeds ``seed, …, seed + seeds − 1`` (the sample is drawn with
    ``seed``); feasible only if every GPU passes on every seed. ``progress(done, total)`` is called after each
    simulated GPU × seed. Raises
    :class:`InputError` when the plan does not fit the problem.
    """
    import time

    check_backend(backend)
    profile = (context or DEFAULT_CONTEXT).profile_for(problem)
    errors = [e for e in check_plan(problem, plan, profile) if "memory error" not in e]
    if errors:
        raise InputError(f"plan does not fit the instance: {errors[0]}" +
                         (f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""),
                         field="gpus", value=plan.num_gpus)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(f"must be a non-negative integer (got {seed!r})", field="seed", value=seed)
    all_seeds = seed_list(seed, seeds)
    start = time.perf_counter()
    chosen = list(range(plan.num_gpus)) if only is None else sorted({int(j) for j in only})
    if sample is not None and 0 < sample < len(chosen):
        rng = np.random.default_rng(seed)
        chosen = sorted(rng.choice(chosen, size=sample, replace=False).tolist())
    jobs = []
    for j in chosen:
        g = plan.gpus[j]
        sub = problem.subset(list(g.adapters))
        server = g.server(sub.server)  # the GPU's own max_num_seqs / gpu_memory_utilization, if any
        if server is not sub.server:
            sub = sub.replace(server=server)
        jobs += [(sub, j, g.max_loras, g.max_cpu_loras, g.max_lora_rank, s, profile, g.replicas)
                 for s in all_seeds]
    n_workers = DEFAULT_WORKERS if workers is None else max(1, int(workers))
    # a local pool gets no more processes than this machine has CPUs; a Ray cluster may have many more
    n_workers = min(n_workers, len(jobs), (os.cpu_count() or 1) if backend == "local" else len(jobs))
    by_job: dict[tuple[int, int], dict[str, Any]] = {}
    if progress is not None:
        progress(0, len(jobs))  # the total is known before the first GPU finishes
    for row in map_unordered(_simulate_gpu, jobs, workers=n_workers, backend=backend) if jobs else ():
        by_job[(row["gpu"], row["seed"])] = row
        if progress is not None:
            progress(len(by_job), len(jobs))
    rows = list(by_job.values())
    n = len(all_seeds)
    per_gpu = [[by_job[(j, s)] for s in all_seeds] for j in chosen]  # plan order, seeds in order
    failures = []
    for runs in per_gpu:
        bad = [k for k, r in enumerate(runs) if not r["passed"]]
        if bad:
            on = (f" (seed {all_seeds[bad[0]]}; fails on {len(bad)} of {n} seeds)" if n > 1 else "")
            failures.append(failure(runs[bad[0]], problem.slo) + on)
    seed_ok = tuple(all(runs[k]["passed"] for runs in per_gpu) for k in range(n))
    return VerifyReport(feasible=not failures and bool(rows), num_gpus=plan.num_gpus, simulated=tuple(chosen),
                        gpus=tuple(_merge_seeds(runs, all_seeds) for runs in per_gpu),
                        failures=tuple(failures), seed=int(seed), wall_s=time.perf_counter() - start,
                        criterion=problem.slo.describe(), seeds=all_seeds,
                        seed_feasible=seed_ok if rows else ())


def failure(row: dict[str, Any], slo: Slo) -> str:
    """One line naming a failing GPU and by how much it misses the criterion."""
    if row.get("oom"):
        return (f"GPU {row['gpu']} fails to start (memory error): max_loras {row.get('max_loras')}, "
                f"max_lora_rank {row.get('max_lora_rank')}")
    parts = []
    served = row.get("served_fraction")
    if served is not None and served < slo.min_served_fraction:
        rule = "starves" if slo.min_served_fraction == 0.9 else "serves too little"
        parts.append(f"{rule}: throughput {row['throughput_tok_s']:,.0f} tok/s < "
                     f"{slo.min_served_fraction:g} × the {row['offered_tok_s']:,.0f} tok/s that arrived "
                     "in this run (offered load "
                     f"{row.get('expected_offered_tok_s') or math.nan:,.0f} tok/s)")
    parts += [f for f in row.get("criterion_failures", []) if not f.startswith("served fraction")]
    queue = f"; queue {row.get('queue_trend')}, {row.get('waiting_end')} waiting at the end" if parts else ""
    return f"GPU {row['gpu']} " + "; ".join(parts or ["fails the criterion"]) + queue
