"""The exact memory rule of one GPU (KV capacity and OOM) and the per-request token count, from the twin.

The OOM rule is never learned: it is the twin's :class:`twin.profile.MemoryModel` evaluated for the server's
``gpu_memory_utilization`` and ``max_model_len``. Offered load is the papers' definition: request rate × mean
(prompt + expected output) tokens per request of the instance's length distribution. Every function takes the
twin ``profile`` explicitly (a :class:`placer.Context` supplies it); None means the shipped profile of the
problem's model and GPU.
"""

from __future__ import annotations

import math

from twin.catalogue import load_profile
from twin.hardware import GIB
from twin.lengths import expected_tokens
from twin.profile import MemoryModel, Profile
from twin.spec import Instance


def profile_of(problem: Instance, profile: Profile | None = None) -> Profile:
    """``profile``, or the shipped (model, GPU) profile of the problem when None."""
    return profile if profile is not None else load_profile(problem.model, problem.gpu)


def max_model_len(problem: Instance, profile: Profile | None = None) -> int:
    """The server's ``max_model_len``: the instance's setting, else the model profile's default."""
    return int(problem.server.max_model_len or profile_of(problem, profile).max_model_len)


def memory_fits(problem: Instance, max_loras: int, max_lora_rank: int,
                profile: Profile | None = None, utilization: float | None = None) -> bool:
    """True when a server with these LoRA settings starts (no memory error) under the problem's settings
    (``utilization``: a GPU's own gpu_memory_utilization instead of the instance's)."""
    prof = profile_of(problem, profile)
    u = problem.server.gpu_memory_utilization if utilization is None else utilization
    return not prof.memory.oom(int(max_loras), int(max_lora_rank), max_model_len(problem, prof), float(u))


def max_slots(problem: Instance, max_lora_rank: int, upper: int, profile: Profile | None = None) -> int:
    """The largest ``max_loras`` in [1, upper] that fits memory at this rank (0 when even 1 slot does not)."""
    prof = profile_of(problem, profile)
    if not memory_fits(problem, 1, max_lora_rank, prof):
        return 0
    lo, hi = 1, max(1, int(upper))
    if memory_fits(problem, hi, max_lora_rank, prof):
        return hi
    while hi - lo > 1:  # the KV capacity falls monotonically in the slot count
        mid = (lo + hi) // 2
        if memory_fits(problem, mid, max_lora_rank, prof):
            lo = mid
        else:
            hi = mid
    return lo


def tokens_per_request(problem: Instance, profile: Profile | None = None) -> float:
    """Mean prompt + expected output tokens of one request: the twin's expected tokens of the length law,
    with the profile's EOS shortfall (so that token loads add up to the twin's offered load)."""
    scale = profile_of(problem, profile).output_scale
    return expected_tokens(problem.workload.lengths, problem.model, scale)


def smallest_utilization(mem: MemoryModel, max_loras: int, max_lora_rank: int, utilization: float,
                         needed_tokens: float) -> float:
    """The smallest gpu_memory_utilization, to 0.001 and at most ``utilization``, whose KV cache holds
    ``needed_tokens`` with these LoRA settings (``utilization`` itself when even that does not)."""
    cap = mem.kv_tokens(max_loras, max_lora_rank, utilization)
    if cap is None or cap <= needed_tokens:
        return utilization
    lower = utilization - (cap - needed_tokens) * mem.kv_bytes_per_token / (mem.gpu_mem_gib * GIB)
    v = math.ceil(lower * 1000 - 1e-9) / 1000
    while v < utilization and (mem.kv_tokens(max_loras, max_lora_rank, v) or 0.0) < needed_tokens:
        v = round(v + 0.001, 3)  # a measured table entry is not linear
    return min(v, utilization)
