"""What a sweep asks the twin: random (workload, configuration) samples covering what placement asks.

A sample is a plain JSON-able dict (so it can cross process boundaries and be stored next to its result);
:func:`draw_sample` draws sample ``i`` of a sweep from ``numpy.random.default_rng([seed, i])`` alone, so any
subset of a sweep can be (re)computed independently and in any order. :func:`sample_instance` turns it into
the twin's input.

Coverage: both shipped profiles; 1–640 adapters; ranks 8–64 in random mixes; every ``max_loras`` the
profile's memory rule allows (OOM configurations are not sampled: OOM is an exact rule, not learned); rate
shapes from uniform to power-law, scaled so the offered load spans ~1 % to 25x of an analytic capacity
estimate (the calibration runs reach ~20x overload); Poisson, gamma, "unpredictable" and trace arrivals;
ShareGPT, normal and trace request lengths; ``max_num_seqs`` the instance's 2048 half of the time, else
32–1024.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from surrogate._workload import max_slots
from surrogate.features import feature_index, features
from twin.catalogue import load_profile
from twin.profile import Profile
from twin.spec import Adapter, Instance, Lengths, ServerSettings, Workload
from twin.traces import shipped_traces

#: How a sweep draws ``max_num_seqs`` (:func:`draw_sample`).
BATCHES = ("sampled", "default")
SAMPLER_VERSION = 6  # 6: max_num_seqs sampled (issue 17 makes it a decision variable)
RANKS: tuple[int, ...] = (8, 16, 32, 64)
SLOT_GRID: tuple[int, ...] = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 448, 512, 576,
                              640)
MAX_ADAPTERS = 640
LOAD_RANGE = (0.01, 25.0)    # offered / capacity estimate, whole range (log-uniform): idle to ~20x overload
LOAD_FOCUS = (0.2, 1.5)      # denser around the starvation boundary
FOCUSES = ("throughput", "latency")
LATENCY_LOAD_RANGE = (0.03, 1.6)  # focus "latency": below and just past saturation, where latency SLOs bind
LATENCY_LOAD_FOCUS = (0.35, 1.1)  # the knee of the TTFT curve
MAX_NUM_SEQS_GRID: tuple[int, ...] = (32, 64, 128, 256, 512, 1024)  # besides the instance's own value
MAX_NUM_SEQS_OWN_SHARE = 0.5  # share of samples with the instance's own max_num_seqs (vLLM's 2048 default)
_CAP = feature_index("capacity_est_tok_s")
_OFF = feature_index("offered_tok_s")


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _rate_shape(rng: np.random.Generator, n: int) -> np.ndarray:
    kind = rng.choice(["levels", "lognormal", "uniform", "powerlaw", "equal"], p=[0.3, 0.25, 0.15, 0.2, 0.1])
    if kind == "levels":  # like the calibration runs: a few rates, round-robin over a shuffled list
        k = int(rng.integers(1, 5))
        levels = 2.0 ** np.arange(k) * _loguniform(rng, 1.0, 2.0)
        r = levels[np.arange(n) % k]
    elif kind == "lognormal":
        r = rng.lognormal(0.0, rng.uniform(0.2, 2.0), n)
    elif kind == "uniform":
        r = rng.uniform(0.05, 1.0, n)
    elif kind == "powerlaw":
        r = 1.0 / np.arange(1, n + 1) ** rng.uniform(0.3, 1.5)
    else:
        r = np.ones(n)
    return np.asarray(rng.permutation(r), dtype=np.float64)


def _ranks(rng: np.random.Generator, n: int) -> np.ndarray:
    k = int(rng.integers(1, len(RANKS) + 1))
    chosen = np.sort(rng.choice(RANKS, size=k, replace=False))
    counts = rng.multinomial(n, rng.dirichlet(np.ones(k)))
    return np.asarray(rng.permutation(np.repeat(chosen, counts)), dtype=np.int64)


def _slots(rng: np.random.Generator, n: int, smax: int) -> int:
    cap = min(n, smax)
    u = rng.uniform()
    if u < 0.4:
        grid = [s for s in SLOT_GRID if s <= cap] or [1]
        return int(rng.choice(grid))
    if u < 0.6:
        return max(1, min(cap, int(round(_loguniform(rng, 1, cap + 0.999)))))
    if u < 0.9:  # slots close to the adapter count, as placement mostly asks
        return int(rng.integers(max(1, cap // 2), cap + 1))
    return max(1, min(smax, int(round(_loguniform(rng, 1, smax + 0.999)))))


def _workload(rng: np.random.Generator, duration_s: float) -> Workload:
    traces = shipped_traces()
    u = rng.uniform()
    if u < 0.55:
        lengths = Lengths()
    elif u < 0.8:
        im, om = _loguniform(rng, 32, 2000), _loguniform(rng, 16, 1000)
        lengths = Lengths(kind="normal", input_mean=round(im, 1), input_std=round(im * rng.uniform(0, 1), 1),
                          output_mean=round(om, 1), output_std=round(om * rng.uniform(0, 1), 1))
    else:
        lengths = Lengths(kind="trace", trace=str(rng.choice(traces)))
    u = rng.uniform()
    if u < 0.6:
        return Workload(duration_s=duration_s, lengths=lengths)
    if u < 0.77:
        return Workload(duration_s=duration_s, arrival="gamma", cv=round(_loguniform(rng, 0.5, 3.0), 3),
                        lengths=lengths)
    if u < 0.85:
        return Workload(duration_s=duration_s, arrival="unpredictable", lengths=lengths)
    return Workload(duration_s=duration_s, arrival="trace", trace=str(rng.choice(traces)), lengths=lengths)


def _max_num_seqs(seed: int, i: int) -> int:
    """``max_num_seqs`` of sample ``i``: the instance's own value half of the time, else one of
    :data:`MAX_NUM_SEQS_GRID`; from its own stream, so the other draws are those of sampler version 5."""
    rng = np.random.default_rng([seed, i, 1])
    if rng.uniform() < MAX_NUM_SEQS_OWN_SHARE:
        return ServerSettings().max_num_seqs
    return int(rng.choice(MAX_NUM_SEQS_GRID))


def draw_sample(seed: int, i: int, profiles: tuple[str, ...], duration_s: float = 3600.0,
                focus: str = "throughput", book: Mapping[str, Profile] | None = None,
                batch: str = "sampled") -> dict[str, Any]:
    """Sample ``i`` of the sweep with this ``seed`` (a JSON-able dict; see :func:`sample_instance`).

    ``focus``: ``throughput`` (the default; loads from idle to ~25x overload, denser around the starvation
    boundary) or ``latency`` (the same draws, but loads from 3 % to 1.6x of the capacity estimate, 60 % of
    them in 0.35–1.1x: where TTFT/TPOT SLOs bind, below saturation). ``book``: user profiles by name
    (``model@gpu``), used instead of the shipped/derived ones. ``batch``: ``sampled`` (``max_num_seqs``
    drawn as sampler version 6 does) or ``default`` (always the instance default: the samples of version 5;
    the other random draws are the same either way, the rates scaled to the drawn load at that batch).
    """
    if focus not in FOCUSES:
        raise ValueError(f"focus must be one of {FOCUSES} (got {focus!r})")
    if batch not in BATCHES:
        raise ValueError(f"batch must be one of {BATCHES} (got {batch!r})")
    rng = np.random.default_rng([seed, i])
    profile = str(profiles[int(rng.integers(len(profiles)))])
    prof = profile_by_name(profile, book)
    server = ServerSettings(max_num_seqs=_max_num_seqs(seed, i)) if batch == "sampled" else ServerSettings()
    n = int(rng.integers(1, 17)) if rng.uniform() < 0.15 else int(round(_loguniform(rng, 8, MAX_ADAPTERS)))
    while True:
        ranks = _ranks(rng, n)
        rmax = int(ranks.max())
        if rng.uniform() < 0.1 and rmax < RANKS[-1]:
            rmax = int(rng.choice([r for r in RANKS if r > rmax]))
        smax = max_slots(prof, rmax, server)
        if smax > 0:
            break
    slots = _slots(rng, n, smax)
    if slots > n:  # vLLM requires max_cpu_loras ≥ max_loras
        cpu: int | None = slots
    else:
        cpu = None if rng.uniform() < 0.85 or slots == n else int(rng.integers(slots, n + 1))
    workload = _workload(rng, duration_s)
    shape = _rate_shape(rng, n)
    if focus == "latency":
        load = (_loguniform(rng, *LATENCY_LOAD_FOCUS) if rng.uniform() < 0.6
                else _loguniform(rng, *LATENCY_LOAD_RANGE))
    else:
        load = (_loguniform(rng, *LOAD_FOCUS) if rng.uniform() < 0.5 else _loguniform(rng, *LOAD_RANGE))
    spec: dict[str, Any] = {
        "sample": i, "profile": profile, "n_adapters": n, "ranks": ranks.tolist(), "rates": shape.tolist(),
        "max_loras": slots, "max_cpu_loras": cpu, "max_lora_rank": rmax, "duration_s": float(duration_s),
        "arrival": workload.arrival, "cv": workload.cv, "arrival_trace": workload.trace,
        "lengths": workload.lengths.kind, "input_mean": workload.lengths.input_mean,
        "input_std": workload.lengths.input_std, "output_mean": workload.lengths.output_mean,
        "output_std": workload.lengths.output_std, "lengths_trace": workload.lengths.trace,
        "target_load": load, "seed": int(rng.integers(2**31 - 1)), "max_num_seqs": server.max_num_seqs,
    }
    inst, _ = sample_instance(spec)
    x = features(inst, slots, cpu, rmax, profile=prof)
    scale = load * x[_CAP] / x[_OFF]
    spec["rates"] = [float(f"{r * scale:.6g}") for r in shape]
    return spec


def profile_by_name(name: str, book: Mapping[str, Profile] | None = None) -> Profile:
    """The profile ``model@gpu``: the user's from ``book`` when there, else the shipped (or derived) one."""
    if book and name in book:
        return book[name]
    model, gpu = name.split("@", 1)
    return load_profile(model, gpu)


def sample_instance(spec: dict[str, Any]) -> tuple[Instance, dict[str, Any]]:
    """The twin's input for a sample: the instance and the ``simulate`` keyword arguments."""
    model, gpu = str(spec["profile"]).split("@", 1)
    lengths = Lengths(kind=spec["lengths"], input_mean=_opt(spec.get("input_mean")),
                      input_std=_opt(spec.get("input_std")), output_mean=_opt(spec.get("output_mean")),
                      output_std=_opt(spec.get("output_std")), trace=_opt_str(spec.get("lengths_trace")))
    workload = Workload(duration_s=float(spec["duration_s"]), arrival=spec["arrival"],
                        cv=_opt(spec.get("cv")), trace=_opt_str(spec.get("arrival_trace")), lengths=lengths)
    adapters = tuple(Adapter(f"a{j}", int(k), float(r))
                     for j, (k, r) in enumerate(zip(spec["ranks"], spec["rates"], strict=True)))
    seqs = _opt_int(spec.get("max_num_seqs"))  # absent in sweeps of sampler version ≤ 5: the default
    server = ServerSettings() if seqs is None else ServerSettings(max_num_seqs=seqs)
    inst = Instance(name=f"sample-{spec['sample']}", model=model, gpu=gpu, adapters=adapters,
                    server=server, workload=workload)
    kwargs = {"max_loras": int(spec["max_loras"]), "max_cpu_loras": _opt_int(spec.get("max_cpu_loras")),
              "max_lora_rank": int(spec["max_lora_rank"]), "seed": int(spec["seed"])}
    return inst, kwargs


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def _opt(v: Any) -> float | None:
    return None if _is_missing(v) else float(v)


def _opt_int(v: Any) -> int | None:
    return None if _is_missing(v) else int(v)


def _opt_str(v: Any) -> str | None:
    return None if _is_missing(v) else str(v)
