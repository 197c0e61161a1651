"""The Batching Configuration Advisor (arXiv 2503.08311, "Mind the Memory Gap"): right-size one GPU's batch.

Large-batch decoding is memory-bound: throughput plateaus long before ``max_num_seqs`` does, while the KV
cache reserved for that batch holds most of the GPU memory. :func:`advise` puts **all** adapters of an
instance on one GPU (as ``placer twin simulate`` does), sweeps ``max_num_seqs`` over a grid in the twin with
the same request stream (``seed``) at every point, and names

    B_opt = the smallest max_num_seqs whose throughput is within ``tolerance`` (5 %) of the best throughput of
            the sweep and that meets the criterion in force (the instance's SLO, or the papers' rule).

Memory, per point (every figure from the profile's :class:`~twin.profile.MemoryModel`, the one KV/OOM rule):

- ``kv_cache_tokens``: the KV cache the batch actually uses — the peak of the KV tokens in use, sampled
  every ``sample_s`` seconds of the run (block-granular; a sample can miss a shorter peak);
- ``kv_needed_tokens`` = that peak × (1 + ``kv_headroom``), never below ``max_model_len`` (vLLM refuses to
  start with a KV cache smaller than one max-length request), rounded up to whole blocks;
- ``gpu_memory_utilization``: the smallest utilisation (to 0.001) whose KV cache holds ``kv_needed_tokens``.

At B_opt the memory freed is the KV capacity at the instance's utilisation minus the capacity at B_opt's,
``freed_gib`` = freed tokens × KV bytes per token / 2^30, and :class:`FreedUses` says what it could hold:
more adapter slots at this rank, a higher ``max_lora_rank``, or (memory only) a second server of the same
model. B_opt is then simulated again at its smaller utilisation (``check``): a sampled peak is an estimate,
the re-run says whether the smaller cache still serves the load. :class:`ReplicaVerdict` says whether two
replicas at B_opt (u / 2 each, :mod:`twin.replicas`) serve more than one server at u.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from placer.context import DEFAULT_CONTEXT, Context
from placer.problem.memory import smallest_utilization
from twin.errors import InputError
from twin.hardware import GIB, MODELS
from twin.metrics import SimResult
from twin.profile import MemoryModel, Profile
from twin.replicas import simulate_replicas
from twin.simulate import simulate
from twin.spec import ALLOWED_RANKS, Instance, Slo

__all__ = ["Advice", "AdvicePoint", "FreedUses", "ReplicaVerdict", "advise", "default_grid", "parse_grid"]

DEFAULT_TOLERANCE = 0.05
DEFAULT_KV_HEADROOM = 0.10
DEFAULT_SAMPLE_S = 0.1


@dataclass(frozen=True)
class AdvicePoint:
    """One ``max_num_seqs`` of the sweep: the twin's verdict and the KV memory the batch needs."""

    max_num_seqs: int
    throughput_tok_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    tpot_p50_s: float
    tpot_p99_s: float
    served_fraction: float
    kv_cache_tokens: int  # peak KV tokens in use (sampled)
    kv_needed_tokens: int  # with the headroom, at least max_model_len, whole blocks
    gpu_memory_utilization: float  # the smallest that holds kv_needed_tokens
    meets_criterion: bool
    criterion_failures: tuple[str, ...]
    oom: bool

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["criterion_failures"] = list(self.criterion_failures)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


@dataclass(frozen=True)
class FreedUses:
    """What the memory freed at B_opt could hold instead of KV cache (each alone, not all together)."""

    extra_max_loras: int  # more adapter slots at max_lora_rank
    max_lora_rank: int  # the highest vLLM rank whose buffers for max_loras slots fit (else the current)
    replica_gib: float | None  # a second server of the model: weights + overhead + LoRA buffers + its KV need
    replica_fits: bool | None  # None: no architecture for the model (weights unknown)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ReplicaVerdict:
    """Does a second replica pay at B_opt? Two servers at gpu_memory_utilization u / 2 each (the adapters
    dealt by rate, :func:`twin.replicas.split_adapters`), each at max_num_seqs B_opt, against one server at
    u: the same total memory (:mod:`twin.replicas`: memory split and shared-GPU slowdown)."""

    replicas: int
    throughput_tok_s: float  # the replicas' total
    single_tok_s: float  # one server at B_opt and the instance's utilisation
    slowdowns: tuple[float, ...]
    oom: bool
    meets_criterion: bool  # every replica
    pays: bool  # no OOM, every replica meets the criterion, total > (1 + tolerance) × single

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["slowdowns"] = list(self.slowdowns)
        return out


@dataclass(frozen=True)
class Advice:
    """The sweep, B_opt (None when no point is within tolerance and meets the criterion) and freed memory."""

    instance: str
    profile: str
    profile_calibrated: bool
    criterion: str
    max_loras: int
    max_cpu_loras: int
    max_lora_rank: int
    seed: int
    gpu_memory_utilization: float  # the instance's
    kv_capacity_tokens: float | None  # at the instance's utilisation; None: measured OOM
    tolerance: float
    kv_headroom: float
    points: tuple[AdvicePoint, ...]
    b_opt: AdvicePoint | None
    freed_tokens: int | None
    freed_gib: float | None
    uses: FreedUses | None
    check: AdvicePoint | None  # B_opt simulated again at its own gpu_memory_utilization
    note: str
    slo: Slo = dataclasses.field(default_factory=Slo)  # the criterion in force
    replica: ReplicaVerdict | None = None  # None: no B_opt, or a single adapter

    @property
    def best_throughput_tok_s(self) -> float:
        thr = [p.throughput_tok_s for p in self.points if not p.oom]
        return max(thr) if thr else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``placer advise --json``: ``points``, ``b_opt`` (one of them), ``freed_gib``, ..."""
        return {
            "instance": self.instance, "profile": self.profile, "profile_calibrated": self.profile_calibrated,
            "criterion": self.criterion, "slo": self.slo.to_dict(), "max_loras": self.max_loras,
            "max_cpu_loras": self.max_cpu_loras,
            "max_lora_rank": self.max_lora_rank, "seed": self.seed,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "kv_capacity_tokens": self.kv_capacity_tokens, "tolerance": self.tolerance,
            "kv_headroom": self.kv_headroom, "best_throughput_tok_s": self.best_throughput_tok_s,
            "points": [p.to_dict() for p in self.points],
            "b_opt": None if self.b_opt is None else self.b_opt.to_dict(),
            "freed_tokens": self.freed_tokens, "freed_gib": self.freed_gib,
            "freed_uses": None if self.uses is None else self.uses.to_dict(),
            "check": None if self.check is None else self.check.to_dict(),
            "replica": None if self.replica is None else self.replica.to_dict(),
            "note": self.note,
        }


# --- the grid -----------------------------------------------------------------------------------------------
def default_grid(max_num_seqs: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to ``max_num_seqs``, and ``max_num_seqs`` itself."""
    grid = [1 << i for i in range(max(int(max_num_seqs), 1).bit_length()) if 1 << i <= max_num_seqs]
    return tuple(sorted({*grid, int(max_num_seqs)}))


def parse_grid(values: str | Iterable[Any], field: str = "grid") -> tuple[int, ...]:
    """A sorted grid of distinct integers ≥ 1 from ``"1,2,4"`` or an iterable; errors name ``field``."""
    items = [v.strip() for v in values.split(",")] if isinstance(values, str) else list(values)
    out: set[int] = set()
    for v in items:
        try:
            n = int(v) if isinstance(v, (str, int)) and not isinstance(v, bool) else None
        except ValueError:
            n = None
        if n is None or n < 1:
            raise InputError(f"every max_num_seqs of the grid must be an integer ≥ 1 (got {v!r})",
                             field=field, value=values if isinstance(values, str) else list(items))
        out.add(n)
    if not out:
        raise InputError("the grid is empty", field=field, value=values)
    return tuple(sorted(out))


# --- memory -------------------------------------------------------------------------------------------------
def _capacity(mem: MemoryModel, k: int, r: int, u: float) -> float | None:
    return mem.kv_tokens(k, r, u)


def _uses(problem: Instance, prof: Profile, k: int, r: int, freed: float, needed: int) -> FreedUses:
    mem = prof.memory
    slot = mem.kv_per_slot_rank * r + mem.kv_per_slot
    extra = int(freed // slot) if slot > 0 else 0
    rank = r
    for cand in ALLOWED_RANKS:
        if cand > r and mem.kv_per_slot_rank * k * (cand - r) <= freed:
            rank = cand
    spec = MODELS.get(problem.model)
    if spec is None:
        return FreedUses(extra, rank, None, None)
    overhead = max(mem.ref_utilization * mem.gpu_mem_gib * GIB - spec.weight_bytes
                   - mem.kv_base_tokens * mem.kv_bytes_per_token, 0.0)
    replica = spec.weight_bytes + overhead + (slot * k + needed) * mem.kv_bytes_per_token
    return FreedUses(extra, rank, round(replica / GIB, 3), freed * mem.kv_bytes_per_token >= replica)


def _point(b: int, sim: SimResult, prof: Profile, k: int, r: int, u: float, max_len: int,
           headroom: float) -> AdvicePoint:
    mem, block = prof.memory, prof.memory.block_size
    if sim.oom or sim.kv_cache_tokens is None:
        nan = math.nan
        return AdvicePoint(b, 0.0, nan, nan, nan, nan, nan, 0, 0, u, False, tuple(sim.slo_failures()), True)
    kv_blocks = int(sim.kv_cache_tokens // block)
    usage = sim.timeseries["kv_usage"] if sim.timeseries is not None else None
    peak = 0 if usage is None or usage.size == 0 else int(round(float(usage.max()) * kv_blocks)) * block
    needed = max(peak * (1.0 + headroom), float(max_len))
    needed_tokens = int(math.ceil(needed / block - 1e-9)) * block
    return AdvicePoint(
        max_num_seqs=b, throughput_tok_s=float(sim.throughput_tok_s), ttft_p50_s=float(sim.ttft_p50_s),
        ttft_p99_s=float(sim.ttft_p99_s), tpot_p50_s=float(sim.tpot_p50_s), tpot_p99_s=float(sim.tpot_p99_s),
        served_fraction=float(sim.served_fraction), kv_cache_tokens=peak, kv_needed_tokens=needed_tokens,
        gpu_memory_utilization=smallest_utilization(mem, k, r, u, needed_tokens),
        meets_criterion=sim.meets(), criterion_failures=tuple(sim.slo_failures()), oom=False)


def choose_b_opt(points: Sequence[AdvicePoint], tolerance: float) -> AdvicePoint | None:
    """The smallest max_num_seqs within ``tolerance`` of the best throughput that meets the criterion."""
    ok = [p for p in points if not p.oom]
    if not ok:
        return None
    best = max(p.throughput_tok_s for p in ok)
    near = [p for p in ok if p.throughput_tok_s >= (1.0 - tolerance) * best and p.meets_criterion]
    return min(near, key=lambda p: p.max_num_seqs) if near else None


# --- the advisor --------------------------------------------------------------------------------------------
def advise(problem: Instance, *, max_loras: int, max_cpu_loras: int | None = None,
           max_lora_rank: int | None = None, grid: str | Iterable[int] | None = None, seed: int = 0,
           context: Context | None = None, tolerance: float = DEFAULT_TOLERANCE,
           kv_headroom: float = DEFAULT_KV_HEADROOM, sample_s: float = DEFAULT_SAMPLE_S) -> Advice:
    """Sweep ``max_num_seqs`` over ``grid`` (default :func:`default_grid` of the instance's server
    ``max_num_seqs``) for all adapters of ``problem`` on one GPU and name B_opt (see the module doc)."""
    n = problem.n_adapters
    if isinstance(max_loras, bool) or not isinstance(max_loras, int) or not 1 <= max_loras <= n:
        raise InputError(f"must be an integer in [1, {n}] (the instance's adapters, as in a "
                         f"plan) (got {max_loras!r})", field="--max-loras", value=max_loras)
    if not 0.0 <= tolerance < 1.0:
        raise InputError(f"must be in [0, 1) (got {tolerance!r})", field="--tolerance", value=tolerance)
    if not (0.0 <= kv_headroom <= 10.0):
        raise InputError(f"must be in [0, 10] (got {kv_headroom!r})", field="--kv-headroom",
                         value=kv_headroom)
    if not (sample_s > 0 and math.isfinite(sample_s)):
        raise InputError(f"must be positive (got {sample_s!r})", field="sample_s", value=sample_s)
    points_grid = default_grid(problem.server.max_num_seqs) if grid is None else parse_grid(grid, "--grid")
    prof = (context or DEFAULT_CONTEXT).profile_for(problem)
    u = float(problem.server.gpu_memory_utilization)
    max_len = int(problem.server.max_model_len or prof.max_model_len)

    def run(b: int, util: float) -> SimResult:
        server = dataclasses.replace(problem.server, max_num_seqs=b, gpu_memory_utilization=util)
        return simulate(problem.replace(server=server), max_loras=max_loras, max_cpu_loras=max_cpu_loras,
                        max_lora_rank=max_lora_rank, seed=seed, profile=prof, timeseries=sample_s)

    sims = [run(b, u) for b in points_grid]
    k, r = sims[0].max_loras, sims[0].max_lora_rank
    points = tuple(_point(b, s, prof, k, r, u, max_len, kv_headroom) for b, s in zip(points_grid, sims,
                                                                                      strict=True))
    b_opt = choose_b_opt(points, tolerance)
    base = dict(instance=problem.name, profile=prof.name, profile_calibrated=prof.calibrated,
                criterion=problem.slo.describe(), max_loras=k, max_cpu_loras=sims[0].max_cpu_loras,
                max_lora_rank=r, seed=seed, gpu_memory_utilization=u,
                kv_capacity_tokens=sims[0].kv_cache_tokens, tolerance=tolerance, kv_headroom=kv_headroom,
                points=points, b_opt=b_opt, slo=problem.slo)
    if b_opt is None:
        why = ("the configuration cannot start (memory error)" if all(p.oom for p in points) else
               f"no max_num_seqs of the grid is within {tolerance:.0%} of the best throughput and meets the "
               "criterion")
        return Advice(**base, freed_tokens=None, freed_gib=None, uses=None, check=None,  # type: ignore[arg-type]
                      note=f"no B_opt: {why}")
    cap_now = _capacity(prof.memory, k, r, u) or 0.0
    cap_opt = _capacity(prof.memory, k, r, b_opt.gpu_memory_utilization) or 0.0
    freed = max(int(cap_now - cap_opt), 0)
    freed_gib = round(freed * prof.memory.kv_bytes_per_token / GIB, 3)
    check = _point(b_opt.max_num_seqs, run(b_opt.max_num_seqs, b_opt.gpu_memory_utilization), prof, k, r,
                   b_opt.gpu_memory_utilization, max_len, kv_headroom)
    held = (abs(check.throughput_tok_s - b_opt.throughput_tok_s)
            <= tolerance * max(b_opt.throughput_tok_s, 1e-9))
    note = (f"B_opt = {b_opt.max_num_seqs}: at gpu_memory_utilization {b_opt.gpu_memory_utilization:g} the "
            f"twin {'confirms it' if check.meets_criterion and held else 'does NOT confirm it'} "
            f"({check.throughput_tok_s:.0f} tok/s, "
            f"{'meets' if check.meets_criterion else 'fails'} the criterion)")
    if b_opt.kv_needed_tokens <= max_len:
        note += f"; the KV floor is max_model_len = {max_len:,} tokens, not the batch"
    return Advice(**base, freed_tokens=freed, freed_gib=freed_gib,  # type: ignore[arg-type]
                  uses=_uses(problem, prof, k, r, float(freed), b_opt.kv_needed_tokens), check=check,
                  note=note, replica=_replica(problem, prof, b_opt, k, r, seed, tolerance))


def _replica(problem: Instance, prof: Profile, b_opt: AdvicePoint, k: int, r: int, seed: int,
             tolerance: float) -> ReplicaVerdict | None:
    """Two replicas at B_opt against one server, the same total memory (:class:`ReplicaVerdict`)."""
    if problem.n_adapters < 2:
        return None
    inst = problem.replace(server=dataclasses.replace(problem.server, max_num_seqs=b_opt.max_num_seqs))
    # each replica caches all its own adapters in host memory (max_cpu_loras default)
    res = simulate_replicas(inst, 2, max_loras=k, max_lora_rank=r, seed=seed, profile=prof)
    total = sum(x.throughput_tok_s for x in res.results)
    oom = any(x.oom for x in res.results)
    meets = not oom and all(x.meets() for x in res.results)
    return ReplicaVerdict(2, total, b_opt.throughput_tok_s, res.slowdowns, oom, meets,
                          meets and total > (1.0 + tolerance) * b_opt.throughput_tok_s)
