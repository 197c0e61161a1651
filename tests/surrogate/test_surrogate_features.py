"""The feature schema: pinned, hand-checked, order-independent, batched == single, OOM rule == the twin's."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from surrogate.bundle import oom_from_features
from surrogate.features import (
    FEATURE_NAMES,
    FEATURE_SCHEMA_VERSION,
    feature_index,
    features,
    features_for_groups,
)
from twin.catalogue import load_profile
from twin.errors import InputError
from twin.spec import Adapter, Instance

LLAMA, QWEN = "llama-3.1-8b-instruct", "qwen-2.5-7b-instruct"


def _inst(specs: list[tuple[int, float]], model: str = LLAMA) -> Instance:
    return Instance("t", model, "h100-64gb", tuple(Adapter(f"a{i}", k, r) for i, (k, r) in enumerate(specs)))


def _big(n: int = 60, seed: int = 0) -> Instance:
    rng = np.random.default_rng(seed)
    return _inst([(int(rng.choice([8, 16, 32, 64])), float(rng.uniform(0.01, 0.5))) for _ in range(n)])


def test_schema_is_pinned_to_its_version() -> None:
    # Changing names or order must come with a new FEATURE_SCHEMA_VERSION (and retrained models).
    digest = hashlib.sha256(",".join(FEATURE_NAMES).encode()).hexdigest()[:12]
    assert (FEATURE_SCHEMA_VERSION, len(FEATURE_NAMES), digest) == (2, 51, "67d467a287c5")


def test_hand_checked_values() -> None:
    x = features(_inst([(8, 0.1), (16, 0.2), (64, 0.3)]), max_loras=2)
    f = dict(zip(FEATURE_NAMES, x, strict=True))
    assert f["n_adapters"] == 3 and f["max_loras"] == 2 and f["max_lora_rank"] == 64
    assert f["max_cpu_loras"] == 3
    assert f["rate_sum"] == pytest.approx(0.6) and f["rate_max"] == 0.3 and f["rate_min"] == 0.1
    assert f["rate_topk_share"] == pytest.approx(0.5 / 0.6)  # the two hottest adapters of three
    assert (f["n_rank8"], f["n_rank16"], f["n_rank32"], f["n_rank64"]) == (1, 1, 0, 1)
    assert f["rank_mean"] == pytest.approx(88 / 3)
    # the profile's linear KV rule: base − per_slot_rank·slots·rank − per_slot·slots
    prof = load_profile(LLAMA, "h100-64gb")
    mem = prof.memory
    kv = mem.kv_base_tokens - mem.kv_per_slot_rank * 2 * 64 - mem.kv_per_slot * 2
    assert f["kv_tokens"] == pytest.approx(kv)
    # ShareGPT means of dt_real, the output shortened by the profile's EOS shortfall
    assert f["offered_tok_s"] == pytest.approx(0.6 * (222.7 + prof.output_scale * 196.5))


def test_order_independent() -> None:
    inst = _big()
    perm = np.random.default_rng(1).permutation(inst.n_adapters)
    shuffled = inst.subset(perm)
    np.testing.assert_allclose(features(shuffled, 16), features(inst, 16), rtol=1e-12)
    g = np.arange(0, 40)
    rows = features_for_groups(inst, [g, g[::-1], np.random.default_rng(2).permutation(g)], 8)
    np.testing.assert_allclose(rows[1], rows[0], rtol=1e-12)
    np.testing.assert_allclose(rows[2], rows[0], rtol=1e-12)


def test_groups_equal_single_predictions_of_subsets() -> None:
    inst = _big()
    groups = [np.array([3]), np.arange(10, 30), np.arange(0, 60, 3)]
    slots = [1, 7, 20]
    rows = features_for_groups(inst, groups, slots, max_cpu_loras=[None, 15, None])
    for row, g, s, m in zip(rows, groups, slots, (None, 15, None), strict=True):
        np.testing.assert_allclose(row, features(inst.subset(g), s, m), rtol=1e-12)


def test_bad_groups_are_input_errors() -> None:
    inst = _big(5)
    with pytest.raises(InputError):
        features_for_groups(inst, [[0, 1], []], 2)
    with pytest.raises(InputError):
        features_for_groups(inst, [[0, 1], [2]], [2, 2, 2])
    with pytest.raises(InputError):
        features_for_groups(inst, [[0, 9]], 2)


@pytest.mark.parametrize("model", [LLAMA, QWEN])
def test_oom_rule_matches_the_twin(model: str) -> None:
    from twin.engine import is_oom, kv_capacity_tokens

    inst = _inst([(8, 0.1)], model)
    prof = load_profile(model, "h100-64gb")
    for rank in (8, 16, 32, 64):
        slots = np.array([1, 16, 32, 60, 61, 64, 118, 119, 128, 233, 234, 256, 440, 441, 512, 950, 951])
        X = features_for_groups(inst, [[0]] * len(slots), slots, max_cpu_loras=slots, max_lora_rank=rank)
        ours = oom_from_features(X)
        twin = [is_oom(kv_capacity_tokens(prof, int(s), rank, 0.9), prof.max_model_len) for s in slots]
        assert ours.tolist() == twin
        kv = [kv_capacity_tokens(prof, int(s), rank, 0.9) for s in slots]
        np.testing.assert_allclose(X[:, feature_index("kv_tokens")],
                                   [np.nan if v is None else v for v in kv], rtol=1e-12)


@pytest.mark.parametrize("lengths", [
    {"kind": "sharegpt"},
    {"kind": "normal", "input_mean": 300.0, "input_std": 250.0, "output_mean": 80.0, "output_std": 100.0},
    {"kind": "trace", "trace": "azure-like-code"},
])
def test_offered_load_is_the_twins_expected_offered_load(lengths: dict[str, object]) -> None:
    from twin.simulate import simulate
    from twin.spec import Lengths, Workload

    wl = Workload(duration_s=20.0, lengths=Lengths(**lengths))  # type: ignore[arg-type]
    for model in (LLAMA, QWEN):
        inst = _inst([(8, 0.5), (16, 0.25)], model).replace(workload=wl)
        sim = simulate(inst, max_loras=2, seed=0)
        assert features(inst, 2)[feature_index("offered_tok_s")] == pytest.approx(sim.expected_offered_tok_s,
                                                                                  rel=1e-9)
