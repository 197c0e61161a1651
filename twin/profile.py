"""Model/GPU profiles: the calibrated parameters of the twin for one (model, GPU) pair.

A profile is a JSON file shipped in ``twin/profiles/`` named ``<model>@<gpu>.json``. It holds

- ``memory``: the KV-cache capacity model (tokens left after the weights and the LoRA buffers) and the OOM
  rule;
- ``step``: the step-time model (a forward step's duration from what it does), scheduler overhead and adapter
  load costs.

The profile is data, not code: :mod:`twin.calibrate` fits it from run records and writes a new file.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class StepModel:
    """Duration of one engine step, in milliseconds.

    forward = (base_ms + per_seq_ms·S + per_prefill_token_ms·P + per_ctx_ktoken_ms·C/1000)
              × (1 + lora_per_adapter·A + lora_per_rank·R·[A > 0]) + lora_ms_per_adapter_rank·A·R
    step = forward + sched_base_ms + sched_per_running_ms·B + sched_per_waiting_ms·W + loads
    with S sequences in the batch, P prefill tokens scheduled, C context tokens read by attention, A distinct
    adapters in the batch, R = max_lora_rank, B running and W waiting requests. The additive A·R term is
    the LoRA weights the step reads (A adapters' A/B matrices, padded to R, whatever the batch size): on
    dt_real a larger ``max_lora_rank`` costs ~10 % at small batches but ~2 % at saturated ones, which a
    rank factor on the whole forward cannot express (fitted profiles ≥ v1.2 use the additive term and
    leave ``lora_per_rank`` at 0). Each adapter load from host
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
    #: before ``max_tokens`` (the reference completion length). Fitted by :mod:`twin.calibrate` from the runs'
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
        from twin._io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read profile ({exc})", source=str(p)) from None
        return cls.from_dict(data, source=str(p))


def _shipped_files() -> dict[tuple[str, str], Any]:
    out = {}
    for entry in resources.files("twin").joinpath(PROFILE_DIR).iterdir():
        name = entry.name
        if name.endswith(".json") and "@" in name:
            model, gpu = name[: -len(".json")].split("@", 1)
            out[(model, gpu)] = entry
    return out


@cache
def shipped_profiles() -> tuple[tuple[str, str], ...]:
    """The (model, gpu) pairs with a profile shipped inside the package."""
    return tuple(sorted(_shipped_files()))


@cache
def known_models() -> tuple[str, ...]:
    """Models with a shipped profile or an architecture in :mod:`twin.hardware` (uncalibrated)."""
    from twin.hardware import catalogue_models

    return tuple(sorted({m for m, _ in shipped_profiles()} | set(catalogue_models())))


@cache
def known_gpus() -> tuple[str, ...]:
    """GPUs with a shipped profile or a datasheet in :mod:`twin.hardware` (uncalibrated)."""
    from twin.hardware import catalogue_gpus

    return tuple(sorted({g for _, g in shipped_profiles()} | set(catalogue_gpus())))


def is_calibrated(model: str, gpu: str) -> bool:
    """True when a fitted profile ships for (model, gpu); False for a profile derived from datasheets."""
    return (model, gpu) in shipped_profiles() and load_profile(model, gpu).calibrated


def check_model_gpu(model: Any, gpu: Any) -> None:
    """Raise :class:`InputError` unless a profile exists (shipped, or derivable by :mod:`twin.hardware`).

    The message lists every accepted name (shipped and uncalibrated); ``placer twin profiles`` says which is
    which.
    """
    from twin.hardware import in_catalogue

    if model not in known_models():
        names = ", ".join(known_models())
        raise InputError(f"unknown model profile (got {model!r}; accepted: {names})", field="model",
                         value=model)
    if gpu not in known_gpus():
        names = ", ".join(known_gpus())
        raise InputError(f"unknown GPU profile (got {gpu!r}; accepted: {names})", field="gpu", value=gpu)
    if (model, gpu) not in shipped_profiles() and not in_catalogue(model, gpu):
        raise InputError(f"no profile for model {model!r} on GPU {gpu!r}", field="gpu", value=gpu)


@cache
def load_shipped_profile(model: str, gpu: str) -> Profile:
    """The profile file shipped in ``twin/profiles/`` for (model, gpu)."""
    files = _shipped_files()
    if (model, gpu) not in files:
        raise InputError(f"no shipped profile for model {model!r} on GPU {gpu!r}", field="gpu", value=gpu)
    entry = files[(model, gpu)]
    return Profile.from_dict(json.loads(entry.read_text()), source=f"twin/profiles/{entry.name}")


@cache
def load_profile(model: str, gpu: str) -> Profile:
    """The profile for (model, gpu): the shipped one, else an uncalibrated one derived by :mod:`twin.hardware`
    (``calibrated`` False)."""
    check_model_gpu(model, gpu)
    if (model, gpu) in shipped_profiles():
        return load_shipped_profile(model, gpu)
    import warnings

    from twin.hardware import derived_profile

    warnings.warn(f"{model}@{gpu}: UNCALIBRATED profile derived from architecture and datasheet; its "
                  "predictions are unvalidated (fit it with `placer twin calibrate`)",
                  UncalibratedProfileWarning, stacklevel=2)
    return derived_profile(model, gpu)


class UncalibratedProfileWarning(UserWarning):
    """Emitted (once per process and pair) when a profile is derived from datasheets rather than fitted."""
