"""Immutable problem data shared by the twin, the surrogates and the placer.

An :class:`Instance` is what an instance file describes: a model and GPU profile, vLLM server settings,
a workload description (window, arrival process, request lengths) and the adapters (id, rank, rate). It is
validated on construction and never mutated; vary it with :meth:`Instance.replace` or
:meth:`Instance.subset`. Field names carry their units (``rate_rps``, ``duration_s``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from twin.errors import InputError
from twin.rates import RateProfile

FORMAT_VERSION = 1
ALLOWED_RANKS: tuple[int, ...] = (1, 8, 16, 32, 64, 128, 256, 320, 512)
ARRIVALS: tuple[str, ...] = ("poisson", "gamma", "unpredictable", "trace")
LENGTH_KINDS: tuple[str, ...] = ("sharegpt", "normal", "trace")
CRITERIA: tuple[str, ...] = ("slo", "paper")
#: The latency keys of an SLO: (field, metric of a twin result in seconds, factor field unit -> seconds).
SLO_LATENCY_KEYS: tuple[tuple[str, str, float], ...] = (
    ("ttft_p50_s", "ttft_p50_s", 1.0), ("ttft_p95_s", "ttft_p95_s", 1.0), ("ttft_p99_s", "ttft_p99_s", 1.0),
    ("tpot_p50_ms", "tpot_p50_s", 1e-3), ("tpot_p95_ms", "tpot_p95_s", 1e-3),
    ("tpot_p99_ms", "tpot_p99_s", 1e-3),
)
SLO_KEYS: tuple[str, ...] = ("criterion", *(k for k, _, _ in SLO_LATENCY_KEYS), "min_served_fraction")


def _bad(field_name: str, message: str, value: Any) -> InputError:
    return InputError(f"{message} (got {value!r})", field=field_name, value=value)


def _check_number(name: str, value: Any, *, positive: bool = True, integer: bool = False,
                  allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(name, "must be a number", value)
    if integer and not (isinstance(value, int) or float(value).is_integer()):
        raise _bad(name, "must be an integer", value)
    if not math.isfinite(float(value)):
        raise _bad(name, "must be finite", value)
    if positive and (value < 0 or (value == 0 and not allow_zero)):
        raise _bad(name, "must be positive" if not allow_zero else "must be non-negative", value)


@dataclass(frozen=True, slots=True)
class Adapter:
    """One LoRA adapter: its id, its rank and its mean request rate (requests per second)."""

    id: str
    rank: int
    rate_rps: float

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id.strip():
            raise _bad("id", "must be a non-empty string", self.id)
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank not in ALLOWED_RANKS:
            raise _bad("rank", f"must be one of vLLM's ranks {list(ALLOWED_RANKS)}", self.rank)
        _check_number("rate_rps", self.rate_rps)

    @classmethod
    def trusted(cls, aid: str, rank: int, rate_rps: float) -> Adapter:
        """An adapter built without validation, for values derived from validated ones (a validated rank, a
        positive finite rate): probes and stressed copies build hundreds of thousands of them."""
        a = object.__new__(cls)
        object.__setattr__(a, "id", aid)
        object.__setattr__(a, "rank", rank)
        object.__setattr__(a, "rate_rps", rate_rps)
        return a


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """vLLM server settings that are not chosen by the placer (defaults = the calibration set-up).

    ``max_model_len`` None means the model profile's default (131,072 for Llama-3.1-8B, 32,768 for
    Qwen-2.5-7B).
    """

    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 2048
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9

    def __post_init__(self) -> None:
        _check_number("server.max_num_batched_tokens", self.max_num_batched_tokens, integer=True)
        _check_number("server.max_num_seqs", self.max_num_seqs, integer=True)
        if self.max_model_len is not None:
            _check_number("server.max_model_len", self.max_model_len, integer=True)
        _check_number("server.gpu_memory_utilization", self.gpu_memory_utilization)
        if not 0 < self.gpu_memory_utilization <= 1:
            raise _bad("server.gpu_memory_utilization", "must be in (0, 1]", self.gpu_memory_utilization)


@dataclass(frozen=True, slots=True)
class Lengths:
    """Request-length distribution.

    ``sharegpt``: the ShareGPT V3 first-turn distribution of the calibration runs (prompt 4–1024 tokens,
    prompt + output ≤ 2048). ``normal``: explicit means and standard deviations (clipped at 1 token).
    ``trace``: the empirical lengths of a trace (a shipped trace name such as ``azure_conv_2023`` or a
    trace CSV path, see :mod:`twin.traces`).
    """

    kind: str = "sharegpt"
    input_mean: float | None = None
    input_std: float | None = None
    output_mean: float | None = None
    output_std: float | None = None
    trace: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in LENGTH_KINDS:
            raise _bad("workload.lengths", f"must be one of {list(LENGTH_KINDS)} or a mapping", self.kind)
        params = ("input_mean", "input_std", "output_mean", "output_std")
        if self.kind == "normal":
            for p in params:
                value = getattr(self, p)
                if value is None:
                    raise _bad(f"workload.lengths.{p}", "is required", value)
                _check_number(f"workload.lengths.{p}", value, allow_zero=p.endswith("std"))
        elif any(getattr(self, p) is not None for p in params):
            raise _bad("workload.lengths", f"takes no mean/std with kind {self.kind!r}", self.kind)
        if self.kind == "trace" and not self.trace:
            raise _bad("workload.lengths.trace", "is required with lengths: trace", self.trace)


@dataclass(frozen=True, slots=True)
class Workload:
    """How requests arrive during the measurement window.

    ``poisson``: independent Poisson arrivals per adapter. ``gamma``: renewal process with gamma gaps of
    coefficient of variation ``cv``. ``unpredictable``: the process of arXiv 2602.24044 (rate and gap law
    switch about every 300 s). ``trace``: the arrival times of a real trace (``trace``: a shipped trace name
    or a CSV path), rescaled so the total rate equals the sum of the adapter rates, each request assigned to
    an adapter with probability proportional to its rate.
    """

    duration_s: float = 3600.0
    arrival: str = "poisson"
    cv: float | None = None
    trace: str | None = None
    lengths: Lengths = field(default_factory=Lengths)

    def __post_init__(self) -> None:
        _check_number("workload.duration_s", self.duration_s)
        if self.arrival not in ARRIVALS:
            raise _bad("workload.arrival", f"must be one of {list(ARRIVALS)}", self.arrival)
        if self.arrival == "gamma":
            if self.cv is None:
                raise _bad("workload.cv", "is required with arrival: gamma", self.cv)
            _check_number("workload.cv", self.cv)
        elif self.cv is not None:
            raise _bad("workload.cv", "is only allowed with arrival: gamma", self.cv)
        if self.arrival == "trace" and not self.trace:
            raise _bad("workload.trace", "is required with arrival: trace", self.trace)
        if self.arrival != "trace" and self.trace is not None:
            raise _bad("workload.trace", "is only allowed with arrival: trace", self.trace)
        if not isinstance(self.lengths, Lengths):
            raise _bad("workload.lengths", "must be a Lengths", self.lengths)


@dataclass(frozen=True, slots=True)
class Slo:
    """What a GPU must achieve to count as feasible: the *criterion* in force.

    ``criterion: slo`` (the default): served fraction ≥ ``min_served_fraction`` **and** every latency bound
    that is set (TTFT percentiles in seconds, TPOT percentiles in milliseconds; None = not bounded), judged
    on the twin's censored percentiles (:mod:`twin.metrics`). Default: TTFT p99 ≤ 2 s, TPOT p99 ≤ 200 ms,
    served ≥ 0.9 (MLPerf Inference's server-scenario bounds for Llama-2-70B).
    ``criterion: paper``: the papers' rule alone — served fraction ≥ ``min_served_fraction`` (0.9 = "not
    starved"); the latency bounds are ignored. A memory error (OOM) fails every criterion.
    """

    criterion: str = "slo"
    ttft_p50_s: float | None = None
    ttft_p95_s: float | None = None
    ttft_p99_s: float | None = 2.0
    tpot_p50_ms: float | None = None
    tpot_p95_ms: float | None = None
    tpot_p99_ms: float | None = 200.0
    min_served_fraction: float = 0.9

    def __post_init__(self) -> None:
        if self.criterion not in CRITERIA:
            raise _bad("slo.criterion", f"must be one of {list(CRITERIA)}", self.criterion)
        for key, _, _ in SLO_LATENCY_KEYS:
            value = getattr(self, key)
            if value is not None:
                _check_number(f"slo.{key}", value)
                if value == 0:
                    raise _bad(f"slo.{key}", "must be positive", value)
        _check_number("slo.min_served_fraction", self.min_served_fraction, allow_zero=True)
        if not 0 <= self.min_served_fraction <= 1:
            raise _bad("slo.min_served_fraction", "must be in [0, 1]", self.min_served_fraction)

    @classmethod
    def paper(cls) -> Slo:
        """The papers' rule alone: served fraction ≥ 0.9, no latency bound."""
        return cls(criterion="paper")

    def replace(self, **changes: Any) -> Slo:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def limits(self) -> tuple[tuple[str, str, float], ...]:
        """The latency bounds in force: (SLO key, twin metric key, bound in seconds); none under ``paper``."""
        if self.criterion != "slo":
            return ()
        return tuple((key, metric, float(getattr(self, key)) * unit)
                     for key, metric, unit in SLO_LATENCY_KEYS if getattr(self, key) is not None)

    def describe(self) -> str:
        """The criterion in words, as every output states it."""
        served = f"served fraction ≥ {self.min_served_fraction:g}"
        if self.criterion == "paper":
            rule = "not starved" if self.min_served_fraction == 0.9 else served
            return f"papers' rule ({rule}; no latency bound)"
        parts = []
        for key, _, _ in SLO_LATENCY_KEYS:
            v = getattr(self, key)
            if v is not None:
                what, pct = key.split("_")[:2]
                parts.append(f"{what.upper()} {pct} ≤ {v:g} {'s' if key.endswith('_s') else 'ms'}")
        return "SLO: " + ", ".join([*parts, served])

    def to_dict(self, *, compact: bool = False) -> dict[str, Any]:
        """The canonical ``slo`` section (None = not bounded). ``compact``: leave out the unbounded keys whose
        default is unbounded too (what an instance file writes; reading it back gives the same Slo)."""
        out: dict[str, Any] = {"criterion": self.criterion}
        default = Slo()
        for key, _, _ in SLO_LATENCY_KEYS:
            v = getattr(self, key)
            if v is None and compact and getattr(default, key) is None:
                continue
            out[key] = None if v is None else float(v)
        out["min_served_fraction"] = float(self.min_served_fraction)
        return out


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class Instance:
    """A validated, immutable problem: adapters to serve with one model on GPUs of one kind."""

    name: str
    model: str
    gpu: str
    adapters: tuple[Adapter, ...]
    server: ServerSettings = field(default_factory=ServerSettings)
    workload: Workload = field(default_factory=Workload)
    format_version: int = FORMAT_VERSION
    rate_profile: RateProfile | None = None  # per-period rate multipliers over a day (twin.rates)
    slo: Slo = field(default_factory=Slo)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise _bad("name", "must be a non-empty string", self.name)
        if isinstance(self.format_version, bool) or self.format_version != FORMAT_VERSION:
            raise _bad("format_version", f"must be {FORMAT_VERSION}", self.format_version)
        if not isinstance(self.adapters, tuple):
            object.__setattr__(self, "adapters", tuple(self.adapters))
        if not self.adapters:
            raise _bad("adapters", "must list at least one adapter", [])
        if self.rate_profile is not None and not isinstance(self.rate_profile, RateProfile):
            raise _bad("rate_profile", "must be a RateProfile", self.rate_profile)
        if not isinstance(self.slo, Slo):
            raise _bad("slo", "must be an Slo", self.slo)
        seen: set[str] = set()
        for i, a in enumerate(self.adapters):
            if not isinstance(a, Adapter):
                raise _bad(f"adapters[{i}]", "must be an Adapter", a)
            if a.id in seen:
                raise _bad(f"adapters[{i}].id", "is a duplicate adapter id", a.id)
            seen.add(a.id)
        # Profile names are checked here so that every way of building an instance is validated.
        from twin.catalogue import check_model_gpu

        check_model_gpu(self.model, self.gpu)

    # --- derived, read-only views -------------------------------------------------------------------
    @cached_property
    def ids(self) -> tuple[str, ...]:
        return tuple(a.id for a in self.adapters)

    @cached_property
    def ranks(self) -> np.ndarray:
        return _readonly(np.fromiter((a.rank for a in self.adapters), dtype=np.int64,
                                     count=len(self.adapters)))

    @cached_property
    def rates(self) -> np.ndarray:
        return _readonly(np.fromiter((a.rate_rps for a in self.adapters), dtype=np.float64,
                                     count=len(self.adapters)))

    @cached_property
    def index(self) -> dict[str, int]:
        return {a.id: i for i, a in enumerate(self.adapters)}

    @property
    def n_adapters(self) -> int:
        return len(self.adapters)

    @property
    def total_rate_rps(self) -> float:
        return float(self.rates.sum())

    # --- variation ------------------------------------------------------------------------------------
    def replace(self, **changes: Any) -> Instance:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def subset(self, adapters: Iterable[str] | Sequence[int] | np.ndarray) -> Instance:
        """The same instance restricted to some adapters, given by id or by position."""
        items = list(adapters)
        if items and not isinstance(items[0], str):
            chosen = tuple(self.adapters[int(i)] for i in items)
        else:
            try:
                chosen = tuple(self.adapters[self.index[str(a)]] for a in items)
            except KeyError as exc:
                raise _bad("adapters", "unknown adapter id", exc.args[0]) from None
        return dataclasses.replace(self, adapters=chosen)

    def __hash__(self) -> int:  # cached_property needs __dict__; hash by identity of content
        return hash((self.name, self.model, self.gpu, self.adapters, self.server, self.workload, self.slo,
                     self.rate_profile))
