"""Model/GPU profiles: the calibrated parameters of the twin for one (model, GPU) pair.

A profile is a JSON file shipped in ``twin/profiles/`` named ``<model>@<gpu>.json``. It holds

- ``memory``: the KV-cache capacity model (tokens left after the weights and the LoRA buffers) and the OOM
  rule;
- ``step``: the step-time model (a forward step's duration from what it does), scheduler overhead and adapter
  load costs.

The profile is data, not code: :mod:`twin.calibration.fit` fits it from run records and writes a new file.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twin.errors import InputError

PROFILE_DIR = "profiles"


@dataclass(frozen=True)
class MemoryModel:
    """KV cache left for requests, in tokens, after weights and LoRA buffers.

    kv_tokens(slots, rank, u) = table[(slots, rank)] if measured else
        kv_base_tokens − kv_per_slot_rank·slots·rank − kv_per_slot·slots,
    plus (u − ref_utilization) · gpu_mem_gib · 2^30 / kv_bytes_per_token for another memory utilisation u.
    The server fails to start (OOM) when that is below ``max_model_len`` tokens or a measured entry is None.
    """

    kv_base_tokens: float
    kv_per_slot_rank: float
    kv_per_slot: float
    kv_bytes_per_token: int
    gpu_mem_gib: float
    ref_utilization: float = 0.9
    block_size: int = 16
    table: tuple[tuple[int, int, int | None], ...] = ()  # (max_loras, max_lora_rank, kv_tokens or None=OOM)

    # The one KV/OOM rule of the toolkit: the twin, the placer's oracle and the surrogates' features all call
    # these methods (the surrogates' numba kernel reads :meth:`packed` and is parity-tested against them).
    def utilization_offset(self, utilization: float | None) -> float:
        """KV tokens gained (or lost) at memory utilisation ``utilization`` instead of ``ref_utilization``."""
        if utilization is None:
            return 0.0
        gained_bytes = (float(utilization) - self.ref_utilization) * self.gpu_mem_gib * 2**30
        return gained_bytes / self.kv_bytes_per_token

    def kv_tokens(self, max_loras: int, max_lora_rank: int, utilization: float | None = None) -> float | None:
        """KV-cache tokens left after weights and LoRA buffers; None when a measured entry says the server
        fails to start (``utilization`` None: the reference utilisation)."""
        kv: float | None = None
        for slots, rank, tokens in self.table:
            if slots == max_loras and rank == max_lora_rank:
                if tokens is None:
                    return None
                kv = float(tokens)
                break
        if kv is None:
            kv = (self.kv_base_tokens - self.kv_per_slot_rank * max_loras * max_lora_rank
                  - self.kv_per_slot * max_loras)
        return kv + self.utilization_offset(utilization)

    def kv_tokens_array(self, max_loras: Any, max_lora_rank: Any, utilization: float | None = None
                        ) -> np.ndarray:
        """:meth:`kv_tokens` element-wise over arrays of slot counts and ranks (NaN: measured OOM)."""
        slots = np.asarray(max_loras, dtype=np.float64)
        rank = np.asarray(max_lora_rank, dtype=np.float64)
        kv = np.array(self.kv_base_tokens - self.kv_per_slot_rank * slots * rank - self.kv_per_slot * slots,
                      dtype=np.float64, copy=True, ndmin=1)
        if self.table:
            table = {(int(s), int(r)): tok for s, r, tok in self.table}
            for i, (s, r) in enumerate(zip(np.broadcast_to(slots, kv.shape).ravel(),
                                           np.broadcast_to(rank, kv.shape).ravel(), strict=True)):
                hit = table.get((int(s), int(r)), False)
                if hit is not False:
                    kv.flat[i] = np.nan if hit is None else float(hit)
        return kv + self.utilization_offset(utilization)

    def oom(self, max_loras: int, max_lora_rank: int, max_model_len: int,
            utilization: float | None = None) -> bool:
        """Memory error: the server cannot start (measured OOM, or fewer KV tokens than ``max_model_len``)."""
        return is_oom(self.kv_tokens(max_loras, max_lora_rank, utilization), max_model_len)

    def packed(self, utilization: float | None) -> tuple[np.ndarray, np.ndarray]:
        """The rule as arrays for compiled code: ``[kv_base, per_slot_rank, per_slot, utilization offset]``
        and the measured table as rows ``(slots, rank, kv tokens or NaN)``."""
        memv = np.array([self.kv_base_tokens, self.kv_per_slot_rank, self.kv_per_slot,
                         self.utilization_offset(utilization)], dtype=np.float64)
        tab = np.array([[s, r, np.nan if tok is None else tok] for s, r, tok in self.table], dtype=np.float64)
        return memv, tab.reshape(-1, 3)


def is_oom(kv_tokens: float | None, max_model_len: int) -> bool:
    """Memory error ⇔ the server cannot start: a measured OOM (None) or fewer KV tokens than max_model_len."""
    return kv_tokens is None or kv_tokens < max_model_len


@dataclass(frozen=True)
class StepModel:
    """Duration of one engine step, in milliseconds.

    forward = (base_ms + per_seq_ms·S + per_prefill_token_ms·P + per_ctx_ktoken_ms·C/1000)
              × (1 + lora_per_adapter·A + lora_per_rank·R·[A > 0]) + lora_ms_per_adapter_rank·A·R
              + lora_ms_per_adapter_sq·A²
    step = forward + sched_base_ms + sched_per_running_ms·B + sched_per_waiting_ms·W + loads
    with S sequences in the batch, P prefill tokens scheduled, C context tokens read by attention, A distinct
    adapters in the batch, R = max_lora_rank, B running and W waiting requests. The additive A·R term is
    the LoRA weights the step reads (A adapters' A/B matrices, padded to R, whatever the batch size): on
    dt_real a larger ``max_lora_rank`` costs ~10 % at small batches but ~2 % at saturated ones, which a
    rank factor on the whole forward cannot express (fitted profiles ≥ v1.2 use the additive term and
    leave ``lora_per_rank`` at 0). The A² term (0 in profiles ≤ v1.2) is empirical: on dt_real the step time
    rises faster than linearly with the distinct adapters of a batch (at 128 slots / 128 adapters and ~7.5
    req/s the real median ITL is 44 ms where a linear-in-A fit gives ~25 ms). Each adapter load from host
    memory costs load_gpu_ms + load_gpu_ms_per_rank·rank, each load from disk (host-cache miss) load_disk_ms
    more. The published twin's constants map to base_ms = c2·k2/100, per_seq_ms = c1·k2/100,
    lora_per_adapter = k1/k2.
    """

    base_ms: float
    per_seq_ms: float
    per_prefill_token_ms: float = 0.0
    per_ctx_ktoken_ms: float = 0.0
    lora_per_adapter: float = 0.0
    lora_per_rank: float = 0.0
    sched_base_ms: float = 0.0
    sched_per_running_ms: float = 0.0
    sched_per_waiting_ms: float = 0.0
    load_gpu_ms: float = 0.0
    load_gpu_ms_per_rank: float = 0.0
    load_disk_ms: float = 0.0
    lora_ms_per_adapter_rank: float = 0.0
    #: vLLM 0.8.5's slot eviction: the batch's adapters are activated in hash order and a full cache evicts
    #: its least recently used adapter even when that adapter is in the current batch and not yet touched in
    #: this step (it is then loaded again). False (profiles < v1.3): never evict an adapter of the batch.
    in_batch_eviction: bool = False
    #: Additive ms per squared distinct adapter count of the batch (``fit_profile(adapter_sq=True)``).
    lora_ms_per_adapter_sq: float = 0.0
    #: A metrics scraper polling the server's Prometheus endpoint: the pause (s) between the end of one
    #: scrape and the start of the next; 0 = no scraper (the shipped profiles: planning assumes none; they
    #: carry the fitted costs below, which the replay of a calibration run, ``twin.calibration.replay``,
    #: and ``placer twin simulate --metrics-scrape-interval`` switch on). vLLM 0.8.5's V1 frontend renders
    #: ``/metrics`` inside the API server's event loop, so a scrape stalls request intake and token
    #: delivery (not the engine) for ``metrics_scrape_base_ms + (metrics_scrape_us_per_series·series +
    #: metrics_scrape_us_per_name·names)/1000`` ms, ``series`` = the distinct label sets its
    #: ``vllm:lora_requests_info`` gauge has been given so far (one per new pair of running / waiting adapter
    #: sets; never removed), ``names`` = the adapter names those label sets list. The calibration runs' client
    #: polled every 2 s (bench/twin_fidelity.md, "Tail latency: what the data says").
    metrics_scrape_interval_s: float = 0.0
    metrics_scrape_base_ms: float = 0.0
    metrics_scrape_us_per_series: float = 0.0
    metrics_scrape_us_per_name: float = 0.0
    #: Whether a scrape also holds back token delivery (first tokens and later ones, merged into one chunk);
    #: False: it holds back request intake only.
    metrics_scrape_blocks_tokens: bool = True


#: The step model's metrics-scraper fields (written only when used or fitted).
SCRAPE_FIELDS = ("metrics_scrape_interval_s", "metrics_scrape_base_ms", "metrics_scrape_us_per_series",
                 "metrics_scrape_us_per_name", "metrics_scrape_blocks_tokens")


@dataclass(frozen=True)
class Profile:
    """Everything the twin needs to know about one (model, GPU) pair."""

    model: str
    gpu: str
    max_model_len: int
    memory: MemoryModel
    step: StepModel
    calibrated: bool = True
    version: str = "0"
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: Generated output tokens per reference output token of the ShareGPT-like law: the model stops at EOS
    #: before ``max_tokens`` (the reference completion length). Fitted by :mod:`twin.calibration.fit` from
    #: the runs'
    #: tokens per completed request; 1.0 = no shortfall. Other length laws are taken as generated lengths.
    output_scale: float = 1.0
    #: The shortfall's shape: generated ∝ reference^output_exponent (below 1: long references are cut more;
    #: see :func:`twin.lengths.generated_outputs`). Fitted from the KV cache held per running request.
    output_exponent: float = 1.0

    @property
    def name(self) -> str:
        return f"{self.model}@{self.gpu}"

    def replace(self, **changes: Any) -> Profile:
        return dataclasses.replace(self, **changes)

    # --- serialisation ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["memory"]["table"] = [list(row) for row in self.memory.table]
        # Switches added after profile v1.2 are written only when on: a profile that does not use them keeps
        # its content (and the fingerprint its surrogates recorded).
        if not self.step.in_batch_eviction:
            d["step"].pop("in_batch_eviction", None)
        if not self.step.lora_ms_per_adapter_sq:
            d["step"].pop("lora_ms_per_adapter_sq", None)
        if not self.step.metrics_scrape_interval_s and not self.has_scrape_costs:
            for k in SCRAPE_FIELDS:
                d["step"].pop(k, None)
        return d

    @property
    def has_scrape_costs(self) -> bool:
        """Whether the profile carries fitted metrics-scrape stall costs (used only with a scraper)."""
        s = self.step
        return bool(s.metrics_scrape_base_ms or s.metrics_scrape_us_per_series
                    or s.metrics_scrape_us_per_name)

    def without_scrape_costs(self) -> Profile:
        """The same profile with its scrape stall costs at 0 (its scraper interval kept)."""
        return self.replace(step=dataclasses.replace(self.step, metrics_scrape_base_ms=0.0,
                                                     metrics_scrape_us_per_series=0.0,
                                                     metrics_scrape_us_per_name=0.0))

    def with_scraper(self, interval_s: float) -> Profile:
        """The same profile with a metrics scraper pausing ``interval_s`` between scrapes (0: none)."""
        if not (math.isfinite(interval_s) and interval_s >= 0):
            raise InputError(f"must be a finite number of seconds ≥ 0 (got {interval_s!r})",
                             field="metrics_scrape_interval_s", value=interval_s)
        return self.replace(step=dataclasses.replace(self.step, metrics_scrape_interval_s=float(interval_s)))

    def simulation_dict(self) -> dict[str, Any]:
        """What decides the twin's runs: :meth:`to_dict` without the descriptive fields (version, notes,
        calibrated flag) and without scrape costs that no scraper uses. Two profiles with equal
        simulation dicts give the same runs, so surrogates trained on one serve the other
        (:func:`surrogate.bundle.profile_fingerprint`)."""
        d = self.to_dict()
        for k in ("version", "notes", "calibrated"):
            d.pop(k, None)
        if not self.step.metrics_scrape_interval_s:
            for k in SCRAPE_FIELDS:
                d["step"].pop(k, None)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "<profile>") -> Profile:
        try:
            mem = dict(d["memory"])
            mem["table"] = tuple(
                (int(s), int(r), None if t is None else int(t)) for s, r, t in mem.get("table", ())
            )
            return cls(
                model=d["model"], gpu=d["gpu"], max_model_len=int(d["max_model_len"]),
                memory=MemoryModel(**mem), step=StepModel(**d["step"]),
                calibrated=bool(d.get("calibrated", True)), version=str(d.get("version", "0")),
                notes=str(d.get("notes", "")), extra=dict(d.get("extra", {})),
                output_scale=float(d.get("output_scale", 1.0)),
                output_exponent=float(d.get("output_exponent", 1.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"not a valid profile ({exc})", source=source) from None

    def save(self, path: str | Path) -> None:
        """Write the profile as JSON, atomically."""
        from twin.files import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read profile ({exc})", source=str(p)) from None
        return cls.from_dict(data, source=str(p))


