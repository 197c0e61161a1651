"""Uncalibrated profiles derived from a model's architecture and a GPU's datasheet.

For a (model, GPU) pair without a shipped, fitted profile, :func:`derived_profile` builds one from first
principles, anchored on a calibrated reference profile (the same model on the H100 64 GB when shipped, else
Llama-3.1-8B-Instruct on the H100 64 GB):

- KV bytes per token = 2 (K and V) · layers · kv_heads · head_dim · 2 bytes (bf16);
- LoRA buffer bytes per slot and unit of rank = 2 bytes · layers · Σ over the 7 target projections
  (q, k, v, o, gate, up, down) of (in + out) features — vLLM's stacked A/B buffers;
- KV tokens at utilisation 0.9 = (0.9 · GPU memory − weights − activation/graph overhead) / KV bytes per
  token, the overhead taken from the reference profile (what its fitted KV base leaves unexplained);
- decode step terms scale with weight bytes / HBM bandwidth (memory-bound), per-sequence and prefill terms
  with 2 · parameters / dense bf16 FLOP/s (compute-bound); LoRA factors are kept; adapter loads scale with
  the adapter's size.

Such a profile has ``calibrated = False``, a version ``derived-...`` and a note starting with
``UNCALIBRATED``; fit it with ``placer twin calibrate`` on runs collected with ``placer twin collect``
before trusting it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from twin.errors import InputError
from twin.profile import MemoryModel, Profile, StepModel

REFERENCE_GPU = "h100-64gb"
REFERENCE_MODEL = "llama-3.1-8b-instruct"
GIB = 2**30


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a decoder-only transformer (bf16 weights)."""

    name: str
    params_b: float  # billions of parameters
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    max_model_len: int

    @property
    def weight_bytes(self) -> float:
        return self.params_b * 1e9 * 2

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * 2

    @property
    def lora_bytes_per_slot_rank(self) -> int:
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, m = self.hidden, self.intermediate
        features = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + m) + (m + h)
        return 2 * self.layers * features


@dataclass(frozen=True)
class GpuSpec:
    """Datasheet figures of one GPU: memory visible to CUDA, HBM bandwidth, dense bf16 throughput."""

    name: str
    mem_gib: float
    hbm_tb_s: float
    bf16_tflops: float
    note: str = ""


MODELS: dict[str, ModelSpec] = {m.name: m for m in (
    ModelSpec("llama-3.1-8b-instruct", 8.03, 32, 4096, 32, 8, 128, 14336, 128256, 131072),
    ModelSpec("qwen-2.5-7b-instruct", 7.62, 28, 3584, 28, 4, 128, 18944, 152064, 32768),
    ModelSpec("mistral-7b-instruct-v0.3", 7.25, 32, 4096, 32, 8, 128, 14336, 32768, 32768),
    ModelSpec("llama-2-7b-chat", 6.74, 32, 4096, 32, 32, 128, 11008, 32000, 4096),
    ModelSpec("llama-2-13b-chat", 13.02, 40, 5120, 40, 40, 128, 13824, 32000, 4096),
    ModelSpec("gemma-2-9b-it", 9.24, 42, 3584, 16, 8, 256, 14336, 256000, 8192),
    ModelSpec("qwen-2.5-14b-instruct", 14.77, 48, 5120, 40, 8, 128, 13824, 152064, 32768),
    ModelSpec("phi-3-medium-4k-instruct", 13.96, 40, 5120, 40, 10, 128, 17920, 32064, 4096),
    # OPT (facebook/opt-1.3b, opt-2.7b; public configs): full multi-head attention, a ReLU MLP of two
    # projections (fc1, fc2: no gate) and learned positions (2,048). The catalogue's LoRA buffer formula
    # counts a gated MLP (gate, up, down), so an OPT LoRA buffer is overstated by one (h + ffn) projection.
    # Here for the replication runs of "Mind the Memory Gap" (bench/replicas.md).
    ModelSpec("opt-1.3b", 1.316, 24, 2048, 32, 32, 64, 8192, 50272, 2048),
    ModelSpec("opt-2.7b", 2.652, 32, 2560, 32, 32, 80, 10240, 50272, 2048),
)}

GPUS: dict[str, GpuSpec] = {g.name: g for g in (
    GpuSpec("h100-64gb", 63.43, 1.64, 989.0, "MareNostrum 5 H100 64 GB (HBM2e); bandwidth approximate"),
    GpuSpec("h100-80gb", 79.2, 3.35, 989.0, "H100 SXM5 80 GB"),
    GpuSpec("h100-pcie-80gb", 79.2, 2.0, 756.0, "H100 PCIe 80 GB"),
    GpuSpec("h200-141gb", 139.8, 4.8, 989.0, "H200 SXM 141 GB"),
    GpuSpec("a100-80gb", 79.2, 2.039, 312.0, "A100 SXM4 80 GB"),
    GpuSpec("l40s-48gb", 44.4, 0.864, 362.0, "L40S 48 GB (GDDR6)"),
)}


def catalogue_models() -> tuple[str, ...]:
    return tuple(sorted(MODELS))


def catalogue_gpus() -> tuple[str, ...]:
    return tuple(sorted(GPUS))


def in_catalogue(model: str, gpu: str) -> bool:
    return model in MODELS and gpu in GPUS


def derived_profile(model: str, gpu: str, *, reference: Profile) -> Profile:
    """An uncalibrated profile for (model, gpu) from the catalogue (see the module doc), scaled from the
    fitted
    ``reference`` (:func:`twin.catalogue.load_profile` passes the shipped one)."""
    if model not in MODELS:
        raise InputError(f"no architecture for model (got {model!r}; known: {', '.join(catalogue_models())})",
                         field="model", value=model)
    if gpu not in GPUS:
        raise InputError(f"no datasheet for GPU (got {gpu!r}; known: {', '.join(catalogue_gpus())})",
                         field="gpu", value=gpu)
    ref = reference
    m, g = MODELS[model], GPUS[gpu]
    rm, rg = MODELS[ref.model], GPUS[ref.gpu]
    rmem = ref.memory

    # memory: the overhead the reference's KV base leaves unexplained, reused for the target
    overhead = (rmem.ref_utilization * rg.mem_gib * GIB - rm.weight_bytes
                - rmem.kv_base_tokens * rm.kv_bytes_per_token)
    kv_bytes = m.kv_bytes_per_token
    kv_base = (0.9 * g.mem_gib * GIB - m.weight_bytes - overhead) / kv_bytes
    per_slot_bytes = rmem.kv_per_slot * rm.kv_bytes_per_token * (m.hidden / rm.hidden)
    memory = MemoryModel(
        kv_base_tokens=round(max(kv_base, 0.0), 1),
        kv_per_slot_rank=round(m.lora_bytes_per_slot_rank / kv_bytes, 4),
        kv_per_slot=round(per_slot_bytes / kv_bytes, 4),
        kv_bytes_per_token=kv_bytes, gpu_mem_gib=g.mem_gib, ref_utilization=0.9, block_size=rmem.block_size,
    )

    # step: memory-bound terms ∝ bytes / bandwidth, compute-bound terms ∝ FLOPs / FLOP/s
    s = ref.step
    mem_ratio = (m.weight_bytes / rm.weight_bytes) * (rg.hbm_tb_s / g.hbm_tb_s)
    flop_ratio = (m.params_b / rm.params_b) * (rg.bf16_tflops / g.bf16_tflops)
    ctx_ratio = (m.kv_bytes_per_token / rm.kv_bytes_per_token) * (rg.hbm_tb_s / g.hbm_tb_s)
    lora_ratio = m.lora_bytes_per_slot_rank / rm.lora_bytes_per_slot_rank
    step: StepModel = replace(
        s, base_ms=s.base_ms * mem_ratio, per_seq_ms=s.per_seq_ms * flop_ratio,
        per_prefill_token_ms=s.per_prefill_token_ms * flop_ratio,
        per_ctx_ktoken_ms=s.per_ctx_ktoken_ms * ctx_ratio,
        load_gpu_ms=s.load_gpu_ms * lora_ratio, load_gpu_ms_per_rank=s.load_gpu_ms_per_rank * lora_ratio,
        lora_ms_per_adapter_rank=s.lora_ms_per_adapter_rank * lora_ratio * (rg.hbm_tb_s / g.hbm_tb_s),
        lora_ms_per_adapter_sq=s.lora_ms_per_adapter_sq * lora_ratio * (rg.hbm_tb_s / g.hbm_tb_s),
    )
    rounded: dict[str, Any] = {k: float(f"{v:.6g}") for k, v in step.__dict__.items()
                               if not isinstance(v, bool)}
    step = replace(step, **rounded)
    return Profile(
        model=model, gpu=gpu, max_model_len=m.max_model_len, memory=memory, step=step, calibrated=False,
        version=f"derived-from-{ref.model}@{ref.gpu}-v{ref.version}",
        notes=(f"UNCALIBRATED: derived from architecture ({m.params_b} B params, {kv_bytes} KV bytes/token) "
               f"and datasheet ({g.hbm_tb_s} TB/s, {g.bf16_tflops:g} TFLOP/s bf16, {g.mem_gib} GiB; "
               f"{g.note}) "
               f"by scaling the fitted profile {ref.name}. Fit it with `placer twin calibrate` before "
               "trusting it."),
        extra={"derived": True, "reference": ref.name},
    )


