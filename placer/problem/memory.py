"""The exact memory rule of one GPU (KV capacity and OOM) and the per-request token count, from the twin.

The OOM rule is never learned: it is the twin's :class:`twin.profile.MemoryModel` evaluated for the server's
``gpu_memory_utilization`` and ``max_model_len``. Offered load is the papers' definition: request rate × mean
(prompt + expected output) tokens per request of the instance's length distribution.
"""

from __future__ import annotations

from functools import lru_cache

from twin.catalogue import load_profile
from twin.profile import MemoryModel, Profile
from twin.spec import Instance


def profile_of(problem: Instance) -> Profile:
    """The shipped (model, GPU) profile of a problem."""
    return load_profile(problem.model, problem.gpu)


def max_model_len(problem: Instance) -> int:
    """The server's ``max_model_len``: the instance's setting, else the model profile's default."""
    return int(problem.server.max_model_len or profile_of(problem).max_model_len)


def kv_tokens(memory: MemoryModel, max_loras: int, max_lora_rank: int, utilization: float) -> float | None:
    """KV-cache tokens left after weights and LoRA buffers; None when a measured entry says OOM.

    Delegates to the twin's own method when the MemoryModel has one, so the rule is defined once.
    """
    method = getattr(memory, "kv_tokens", None)
    if callable(method):
        value = method(max_loras, max_lora_rank, utilization)
        return None if value is None else float(value)
    for s, r, t in memory.table:
        if s == max_loras and r == max_lora_rank:
            base: float | None = None if t is None else float(t)
            break
    else:
        base = (memory.kv_base_tokens - memory.kv_per_slot_rank * max_loras * max_lora_rank
                - memory.kv_per_slot * max_loras)
    if base is None:
        return None
    extra = (utilization - memory.ref_utilization) * memory.gpu_mem_gib * 2**30 / memory.kv_bytes_per_token
    return base + extra


@lru_cache(maxsize=65536)
def _fits(model: str, gpu: str, util: float, mml: int, max_loras: int, max_lora_rank: int) -> bool:
    profile = load_profile(model, gpu)
    try:  # the twin's own rule, the one simulate() applies
        from twin.engine import is_oom, kv_capacity_tokens
    except ImportError:  # pragma: no cover - older twin without the engine module
        kv = kv_tokens(profile.memory, max_loras, max_lora_rank, util)
        return kv is not None and kv >= mml
    return not is_oom(kv_capacity_tokens(profile, max_loras, max_lora_rank, util), mml)


def memory_fits(problem: Instance, max_loras: int, max_lora_rank: int) -> bool:
    """True when a server with these LoRA settings starts (no memory error) under the problem's settings."""
    return _fits(problem.model, problem.gpu, float(problem.server.gpu_memory_utilization),
                 max_model_len(problem), int(max_loras), int(max_lora_rank))


def max_slots(problem: Instance, max_lora_rank: int, upper: int) -> int:
    """The largest ``max_loras`` in [1, upper] that fits memory at this rank (0 when even 1 slot does not)."""
    if not memory_fits(problem, 1, max_lora_rank):
        return 0
    lo, hi = 1, max(1, int(upper))
    if memory_fits(problem, hi, max_lora_rank):
        return hi
    while hi - lo > 1:  # the KV capacity falls monotonically in the slot count
        mid = (lo + hi) // 2
        if memory_fits(problem, mid, max_lora_rank):
            lo = mid
        else:
            hi = mid
    return lo


def tokens_per_request(problem: Instance) -> float:
    """Mean prompt + expected output tokens of one request: the twin's expected tokens of the length law,
    with the profile's EOS shortfall (so that token loads add up to the twin's offered load)."""
    from twin.lengths import expected_tokens

    scale = load_profile(problem.model, problem.gpu).output_scale
    return expected_tokens(problem.workload.lengths, problem.model, scale)
