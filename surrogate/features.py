"""The one feature schema of the surrogates: named, ordered, versioned.

A *group* is a set of adapters of one instance placed on one GPU, with that GPU's configuration
(``max_loras``, ``max_cpu_loras``, ``max_lora_rank``). :func:`features_for_groups` turns many groups of one
instance into a 2-D array in one vectorised pass (placement calls it thousands of times); :func:`features`
is the same computation for a single group. Both training (twin sweeps) and prediction use these functions,
so the schema cannot drift. Features depend on the multiset of adapters only, never on their order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from surrogate._numba import N_COLS, group_features
from surrogate._workload import context
from twin.catalogue import load_profile
from twin.errors import InputError
from twin.profile import Profile
from twin.spec import Instance, ServerSettings, Workload

FEATURE_SCHEMA_VERSION = 2
RANK_BINS: tuple[int, ...] = (8, 16, 32, 64)
ACTIVE_WINDOW_S = 10.0  # horizon for "adapters with a request in flight" (typical request residence)

FEATURE_NAMES: tuple[str, ...] = (
    "n_adapters", "max_loras", "max_lora_rank", "max_cpu_loras", "slots_per_adapter", "cpu_per_adapter",
    "rate_sum", "rate_mean", "rate_std", "rate_max", "rate_min", "rate_cv", "rate_eff_n",
    "rate_topk_share", "rate_outside_slots", "active_adapters", "active_per_slot",
    "rank_mean", "rank_std", "rank_max_present", "rank_rate_weighted",
    *(f"n_rank{r}" for r in RANK_BINS), "n_rank_other",
    "input_mean", "input_std", "output_mean", "output_std", "tokens_per_request",
    "arrival_code", "arrival_cv", "lengths_code",
    "offered_tok_s", "kv_tokens", "kv_requests", "capacity_est_tok_s", "load_ratio",
    "duration_s", "max_num_batched_tokens", "max_num_seqs", "max_model_len", "model_code",
    # version 2
    "active_adapters_1s", "active_adapters_60s", "active_per_slot_1s", "active_per_slot_60s",
    "rate_per_active_adapter", "capacity_slots_est_tok_s", "load_ratio_slots",
)
N_FEATURES = len(FEATURE_NAMES)
assert N_FEATURES == N_COLS, "surrogate._numba.group_features writes a different number of columns"
_COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


def feature_index(name: str) -> int:
    """Column of a feature in the schema."""
    return _COL[name]


def _per_group(value: object, n_groups: int, name: str, default: float = -1.0) -> np.ndarray:
    if value is None:
        return np.full(n_groups, default)
    if isinstance(value, (list, tuple)) and any(v is None for v in value):  # None entries = the default
        value = [default if v is None else v for v in value]
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(n_groups, float(arr))
    if arr.shape != (n_groups,):
        raise InputError(f"needs one value per group ({n_groups}), got shape {arr.shape}", field=name)
    return arr


Packed = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def packed_inputs(profile: Profile, server: ServerSettings, workload: Workload) -> Packed:
    """Context, step-model, memory-model and KV-table arrays handed to the kernel (read-only)."""
    c = context(profile, server, workload)
    ctx = np.array([c.model_code, c.input_mean, c.input_std, c.output_mean, c.output_std, c.arrival_code,
                    c.arrival_cv, c.lengths_code, c.duration_s, c.max_num_batched_tokens, c.max_num_seqs,
                    c.max_model_len])
    st = c.profile.step
    step = np.array([st.base_ms, st.per_seq_ms, st.per_prefill_token_ms, st.per_ctx_ktoken_ms,
                     st.lora_per_adapter, st.lora_per_rank, st.sched_base_ms, st.sched_per_running_ms,
                     st.lora_ms_per_adapter_rank])
    memv, tab = c.profile.memory.packed(c.utilization)
    for a in (ctx, step, memv, tab):
        a.setflags(write=False)
    return ctx, step, memv, tab


def capacity_estimate(X: np.ndarray) -> np.ndarray:
    """The rough analytic saturation throughput (tok/s) of feature rows, from the profile's step model.

    At saturation the batch holds B = min(max_num_seqs, KV tokens / mean context) sequences; each decode step
    emits B output tokens and prefills B·in/out prompt tokens. A feature, not a prediction.
    """
    return np.asarray(X[:, _COL["capacity_est_tok_s"]])


def features_for_groups(instance: Instance, groups: Sequence[Sequence[int] | np.ndarray],
                        max_loras: int | Sequence[int] | np.ndarray,
                        max_cpu_loras: int | Sequence[int] | np.ndarray | None = None,
                        max_lora_rank: int | Sequence[int] | np.ndarray | None = None, *,
                        profile: Profile | None = None, packed: Packed | None = None) -> np.ndarray:
    """Feature rows (``len(groups)`` × :data:`N_FEATURES`, float64) for groups of one instance's adapters.

    ``groups``: adapter positions (indices into ``instance.adapters``), one non-empty sequence per GPU.
    ``max_loras``, ``max_cpu_loras``, ``max_lora_rank``: a scalar for all groups or one value per group;
    ``max_cpu_loras`` None = the group's size, ``max_lora_rank`` None = the largest rank in the group.
    ``profile``: the twin profile of the instance's (model, GPU) (None: the shipped one); ``packed``: its
    :func:`packed_inputs` for this instance, when the caller keeps them.
    """
    n_groups = len(groups)
    if n_groups == 0:
        return np.empty((0, N_FEATURES))
    sizes = np.fromiter((len(g) for g in groups), dtype=np.int64, count=n_groups)
    if (sizes == 0).any():
        raise InputError("every group needs at least one adapter", field="groups",
                         value=int(np.argmin(sizes)))
    idx = np.concatenate([np.asarray(g, dtype=np.int64) for g in groups])
    if idx.size and (idx.min() < 0 or idx.max() >= instance.n_adapters):
        raise InputError("adapter position out of range", field="groups", value=int(idx.max()))
    return _features(instance, idx, sizes, max_loras, max_cpu_loras, max_lora_rank,
                     packed or _packed_for(instance, profile))


def _packed_for(instance: Instance, profile: Profile | None) -> Packed:
    prof = profile if profile is not None else load_profile(instance.model, instance.gpu)
    return packed_inputs(prof, instance.server, instance.workload)


def _features(instance: Instance, idx: np.ndarray, sizes: np.ndarray, max_loras: object,
              max_cpu_loras: object, max_lora_rank: object, packed: Packed) -> np.ndarray:
    n_groups = sizes.shape[0]
    ctx, step, mem, tab = packed
    slots = _per_group(max_loras, n_groups, "max_loras")
    if (slots < 1).any():
        raise InputError("must be at least 1", field="max_loras", value=float(slots.min()))
    return group_features(instance.rates, instance.ranks, idx, sizes, slots,
                          _per_group(max_cpu_loras, n_groups, "max_cpu_loras"),
                          _per_group(max_lora_rank, n_groups, "max_lora_rank"),
                          ctx, step, mem, tab, ACTIVE_WINDOW_S)


def features(instance: Instance, max_loras: int, max_cpu_loras: int | None = None,
             max_lora_rank: int | None = None, *, profile: Profile | None = None,
             packed: Packed | None = None) -> np.ndarray:
    """The feature row (1-D, :data:`N_FEATURES`) of all the instance's adapters on one GPU."""
    n = instance.n_adapters
    return _features(instance, np.arange(n), np.array([n]), max_loras, max_cpu_loras, max_lora_rank,
                     packed or _packed_for(instance, profile))[0]


def offered_tok_s(X: np.ndarray) -> np.ndarray:
    """Expected offered load (tok/s) of feature rows: total rate × mean tokens per request."""
    return np.asarray(X[:, _COL["offered_tok_s"]])


RANGED_FEATURES: tuple[str, ...] = ("max_num_seqs",)  # recorded in model meta as "trained_ranges"


def trained_ranges(X: np.ndarray) -> dict[str, list[float]]:
    """``{feature: [lo, hi]}`` over the training rows ``X`` of the features in :data:`RANGED_FEATURES`
    (what model sidecars record as ``meta.trained_ranges``: the range a model has seen)."""
    X = np.asarray(X, dtype=np.float64)
    if X.shape[0] == 0:
        return {}
    return {name: [float(X[:, _COL[name]].min()), float(X[:, _COL[name]].max())] for name in RANGED_FEATURES}


def schema() -> dict[str, object]:
    """The schema as stored in model sidecars: version and ordered names."""
    return {"version": FEATURE_SCHEMA_VERSION, "names": list(FEATURE_NAMES)}
