"""Oracle backends: the surrogates (default), the twin (exact w.r.t. the twin), and an analytic test double.

All three share :class:`placer.oracle.base.Oracle`'s memory rule, margin rule, slot candidates and cache; they
differ only in how one configuration's throughput and starvation are predicted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from placer.oracle.base import DEFAULT_HEADROOM, DEFAULT_SURROGATE_THRESHOLD, Oracle, Query
from twin.errors import InputError
from twin.profile import Profile
from twin.simulate import simulate
from twin.spec import Instance, Slo


class SurrogateOracle(Oracle):
    """The shipped CatBoost surrogates (``surrogate.load_default``): throughput regressor and starvation
    classifier.

    All configurations of one :meth:`~Oracle.points` call go to the surrogate in one batched prediction.
    A point is starved when the classifier's starvation probability exceeds ``starved_threshold``, by
    default :data:`DEFAULT_SURROGATE_THRESHOLD` = 0.2 rather than the classifier's own 0.5: a GPU that
    starves costs more than one more GPU. On the placement benchmark (72 instances × 7 solvers, 258 GPUs of
    each solver twin-checked, 64 ffd-bisect plans simulated GPU by GPU) 0.2 left no starved GPU, where 0.5
    left 2 of 258, for +2.3 % GPUs (bench/results/placement-thr02-2026-11-22.md). ``margin=0`` also asks
    the regressor to agree; it makes hot trace-family adapters unplaceable alone, so it is not the default.
    """

    kind = "surrogate"

    def __init__(self, *, bundle: Any = None, margin: float | None = None,
                 starved_threshold: float | None = DEFAULT_SURROGATE_THRESHOLD,
                 headroom: float = DEFAULT_HEADROOM,
                 **kwargs: Any) -> None:
        super().__init__(margin=margin, starved_threshold=starved_threshold, headroom=headroom, **kwargs)
        self._bundle = bundle
        self._bundles: dict[tuple[str, str], Any] = {}
        self._output_means: dict[Any, float] = {}

    def bundle(self, problem: Instance) -> Any:
        """The surrogate bundle for the problem's (model, GPU)."""
        if self._bundle is not None:
            return self._bundle
        key = (problem.model, problem.gpu)
        if key not in self._bundles:
            try:
                self._bundles[key] = self.context.surrogate_for(problem)
            except InputError as exc:  # say what works instead: the twin needs no trained model
                raise InputError(f"{exc.detail}; or use the twin oracle (`--oracle twin`: simulates each "
                                 "candidate GPU, slower)", source=exc.source, field=exc.field,
                                 value=exc.value) from None
        return self._bundles[key]

    def batch_range(self, problem: Instance) -> tuple[float, float] | None:
        """The max_num_seqs range every model of the bundle was trained on (``Surrogate.trained_range``: the
        intersection over its throughput, starvation and latency models); None when that is unknown or one
        value (the shipped throughput and starvation models saw 2048 only), so the batch is never
        extrapolated: only the instance's is judged."""
        span = getattr(self.bundle(problem), "trained_range", lambda _: None)("max_num_seqs")
        if span is None or not float(span[0]) < float(span[1]):
            return None
        return float(span[0]), float(span[1])

    def batch_note(self, problem: Instance) -> str | None:
        if not self.tune_batch:
            return None
        span = self.batch_range(problem)
        name = getattr(self.bundle(problem), "name", "") or "these"
        if span is None:
            return (f"--tune-batch: the surrogate models {name} were not trained on varying "
                    "max_num_seqs (not all of them: Surrogate.trained_range): placement keeps the instance's "
                    "batch (--oracle twin searches it); the advisor still tunes each GPU after placement")
        return None

    def threshold(self, problem: Instance) -> float:
        """The given threshold (default 0.2), else (None) the shipped classifier's own decision threshold."""
        if self.starved_threshold is not None:
            return self.starved_threshold
        model = getattr(self.bundle(problem), "starvation", None)
        return float(getattr(model, "threshold", 0.5))

    def check_criterion(self, problem: Instance) -> None:
        """Raise a clear :class:`InputError` when the bundle cannot judge the problem's latency bounds."""
        bundle = self.bundle(problem)
        keys = [metric for _, metric, _ in problem.slo.limits()]
        can = getattr(bundle, "latency_targets", lambda: ())()
        missing = [k for k in keys if k not in can]
        if missing:
            name = getattr(bundle, "name", "") or "these"
            raise InputError(f"the surrogate models {name} cannot judge a latency SLO (no latency model for "
                             f"{', '.join(missing)}); use --criterion paper for the papers' rule, or "
                             "--oracle twin (simulates each candidate GPU, slower), or models trained with "
                             "latency targets (--models)", field="slo", value=problem.slo.describe())

    def _slot_guard(self, problem: Instance, bundle: Any) -> bool:
        """Whether the slot-occupancy guard applies: a TTFT bound in force and the models to estimate it."""
        ttft = any(metric.startswith("ttft") for _, metric, _ in problem.slo.limits())
        can = getattr(bundle, "latency_targets", lambda: ())()
        return ttft and all(t in can for t in SLOT_GUARD_TARGETS)

    def _output_mean(self, problem: Instance, bundle: Any) -> float:
        """The workload's mean output tokens per request, as the surrogates' features see it (memoised)."""
        key = ("output_mean", problem.model, problem.gpu, problem.workload)
        hit = self._output_means.get(key)
        if hit is None:
            from surrogate.features import feature_index, features_for_groups

            x = features_for_groups(problem, [np.array([0])], 1, profile=getattr(bundle, "profile", None))
            hit = self._output_means[key] = float(x[0, feature_index("output_mean")])
        return hit

    def _predict(self, problem: Instance, queries: Sequence[Query]) -> tuple[Any, ...]:
        bundle = self.bundle(problem)
        self.check_criterion(problem)
        latency = tuple(metric for _, metric, _ in problem.slo.limits())
        batch = getattr(bundle, "predict_groups", None)
        if callable(batch):
            guard = self._slot_guard(problem, bundle)
            asked = tuple(dict.fromkeys(latency + (SLOT_GUARD_TARGETS if guard else ())))
            kw = {"latency": asked} if asked else {}
            pred = batch(problem, [q[0] for q in queries], max_loras=[q[1] for q in queries],
                         max_lora_rank=[q[2] for q in queries], max_cpu_loras=[q[3] for q in queries], **kw)
            thr = np.asarray(pred.throughput_tok_s, dtype=float)
            prob = np.asarray(pred.starved_probability, dtype=float)
            ratio = np.zeros(len(queries))
            for _, metric, bound in problem.slo.limits():
                ratio = np.maximum(ratio, np.asarray(pred.latency[metric], dtype=float) / bound)
            if guard:
                tpot, ttft = (np.asarray(pred.latency[t], dtype=float) for t in ("tpot_p50_s", "ttft_p50_s"))
                hold = self._output_mean(problem, bundle) * tpot + ttft
                occ = slot_occupancy(problem.rates, [q[0] for q in queries], [q[1] for q in queries], hold)
                ratio = np.maximum(ratio, occ / SLOT_OCCUPANCY_MAX)
            return thr, prob, np.zeros(len(queries), dtype=bool), None, ratio  # starved: p > threshold()
        thr, prob, flag = (np.empty(len(queries)), np.empty(len(queries)), np.zeros(len(queries), bool))
        for j, (idx, s, r, m) in enumerate(queries):
            p = bundle.predict(problem.subset(idx), max_loras=s, max_cpu_loras=m, max_lora_rank=r)
            thr[j], prob[j] = p.throughput_tok_s, p.starved_probability
        return thr, prob, flag, None


#: Latency predictions the slot-occupancy guard needs (how long a request holds its adapter's slot).
SLOT_GUARD_TARGETS: tuple[str, ...] = ("ttft_p50_s", "tpot_p50_s")
#: Highest expected share of the GPU's LoRA slots held by adapters with a request in flight, on a GPU with
#: more adapters than slots, that the surrogate oracle accepts under a TTFT bound. Measured on 80 twin runs
#: of such GPUs from the placer's own plans (``placer.oracle.decisions``; paper/zipf/dirichlet/trace families,
#: 60–1,000 adapters): no TTFT p99 above 1 s below 0.7 (71 runs), 5 of 9 above 1 s from 0.7 up (to 35 s at
#: 1.8), where the latency regressors still predicted ~2 s. 0.6 keeps a margin.
SLOT_OCCUPANCY_MAX = 0.6


def slot_occupancy(rates: np.ndarray, groups: Sequence[np.ndarray], slots: Sequence[int],
                   hold_s: np.ndarray) -> np.ndarray:
    """Expected LoRA slots busy / slots, per group with more adapters than slots (0 for the others).

    vLLM runs at most ``max_loras`` distinct adapters in a batch; a request holds its adapter's slot from its
    first scheduling to its last token, about ``hold_s`` (TTFT p50 + output tokens × TPOT p50). With Poisson
    arrivals at ``rate_i``, adapter i has a request in flight with probability 1 − exp(−rate_i · hold), so
    Σ_i of that is the expected number of slots in use; a request for an adapter without a free slot waits
    for one however idle the GPU is. The regressors' features see slot contention only through fixed windows
    (1, 10 and 60 s), so they miss it when requests are long; this is the check they lack.
    """
    sizes = np.fromiter((len(idx) for idx in groups), dtype=np.int64, count=len(groups))
    cap = np.asarray(slots, dtype=np.int64)
    hold = np.asarray(hold_s, dtype=np.float64)
    out = np.zeros(len(groups))
    sel = np.flatnonzero((sizes > cap) & np.isfinite(hold))
    if sel.size:  # one vectorised pass over the contended groups' adapters (this runs on every oracle batch)
        idx = np.concatenate([np.asarray(groups[int(j)], dtype=np.int64) for j in sel])
        busy = -np.expm1(-np.asarray(rates, dtype=np.float64)[idx] * np.repeat(hold[sel], sizes[sel]))
        starts = np.concatenate(([0], np.cumsum(sizes[sel])[:-1]))
        out[sel] = np.add.reduceat(busy, starts) / np.maximum(cap[sel], 1)
    return out


def latency_ratio(values: dict[str, float], slo: Slo) -> float:
    """The worst latency / bound over the bounds in force (0 when none; a NaN value — no request — is 0)."""
    worst = 0.0
    for _, metric, bound in slo.limits():
        v = float(values[metric])
        if math.isfinite(v):
            worst = max(worst, v / bound)
    return worst


def _simulate_one(args: tuple[Instance, int, int, int, int, Profile]) -> tuple[float, float, bool, float]:
    inst, s, r, m, seed, profile = args
    sim = simulate(inst, max_loras=s, max_cpu_loras=m, max_lora_rank=r, seed=seed, profile=profile)
    ratio = latency_ratio({metric: getattr(sim, metric) for _, metric, _ in inst.slo.limits()}, inst.slo)
    return float(sim.throughput_tok_s), float(sim.offered_tok_s), not sim.meets(inst.slo), ratio


class TwinOracle(Oracle):
    """Each configuration simulated in the twin (seeded): slow, but exact with respect to the twin.

    A configuration is feasible when the twin run meets the problem's criterion (``SimResult.meets``:
    served fraction and, under ``criterion: slo``, the censored latency percentiles) and starts.

    ``workers`` > 1 simulates the configurations of one batch in a process pool.
    """

    kind = "twin"
    expensive = True

    def __init__(self, *, seed: int = 0, workers: int = 1, margin: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(margin=margin, **kwargs)
        self.seed = int(seed)
        self.workers = max(1, int(workers))

    def _settings(self) -> tuple[Any, ...]:
        return (("seed", self.seed),)

    def _predict(self, problem: Instance, queries: Sequence[Query]) -> tuple[Any, ...]:
        profile = self.profile(problem)
        jobs = [(problem.subset(idx.tolist()), s, r, m, self.seed, profile) for idx, s, r, m in queries]
        if self.workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=min(self.workers, len(jobs))) as pool:
                rows = list(pool.map(_simulate_one, jobs))
        else:
            rows = [_simulate_one(j) for j in jobs]
        thr = np.array([r[0] for r in rows])
        off = np.array([r[1] for r in rows])
        flag = np.array([r[2] for r in rows], dtype=bool)  # fails the criterion (or OOM) in the twin
        return thr, flag.astype(float), flag, off, np.array([r[3] for r in rows])


class AnalyticOracle(Oracle):
    """A deterministic capacity model for tests and examples — NOT a performance model of vLLM.

    A GPU with ``s`` slots serves a total rate up to ``capacity_rps / (1 + slot_cost · s)`` req/s and needs at
    least ``ceil(min_slot_fraction · n)`` slots for ``n`` adapters; beyond either it starves (throughput =
    offered × capacity / rate). Memory (OOM) is the twin's exact rule, as in every oracle. It has no latency
    model: its capacity *is* the criterion (whatever ``problem.slo`` says), which is what tests of the
    solvers need; never use it to judge a real SLO.
    """

    kind = "analytic"

    def __init__(self, *, capacity_rps: float = 10.0, slot_cost: float = 0.0, min_slot_fraction: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.capacity_rps = float(capacity_rps)
        self.slot_cost = float(slot_cost)
        self.min_slot_fraction = float(min_slot_fraction)

    def _settings(self) -> tuple[Any, ...]:
        return (("capacity_rps", self.capacity_rps), ("slot_cost", self.slot_cost),
                ("min_slot_fraction", self.min_slot_fraction))

    def _predict(self, problem: Instance, queries: Sequence[Query]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        tpr = self.tokens_per_request(problem)
        sizes = np.array([len(q[0]) for q in queries])
        slots = np.array([q[1] for q in queries], dtype=float)
        flat = np.concatenate([q[0] for q in queries])
        rate = np.add.reduceat(problem.rates[flat], np.concatenate([[0], np.cumsum(sizes)[:-1]]))
        cap = self.capacity_rps / (1.0 + self.slot_cost * slots)
        need = np.ceil(self.min_slot_fraction * sizes - 1e-9)
        starved = (rate > cap * (1 + 1e-12)) | (slots < need)
        thr = rate * tpr * np.where(rate > cap, cap / rate, 1.0) * np.where(starved, 0.5, 1.0)
        return thr, starved.astype(float), starved, None
