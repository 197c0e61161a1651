"""The shared data model: validated on construction, immutable, varied with replace/subset."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from twin.errors import InputError
from twin.spec import Adapter, Instance, Lengths, ServerSettings, Workload

MODEL, GPU = "llama-3.1-8b-instruct", "h100-64gb"


def _inst(**changes: object) -> Instance:
    adapters = (Adapter("a", 8, 0.5), Adapter("b", 16, 0.25), Adapter("c", 32, 1.0))
    base: dict[str, object] = {"name": "t", "model": MODEL, "gpu": GPU, "adapters": adapters}
    base.update(changes)
    return Instance(**base)  # type: ignore[arg-type]


def test_derived_views_are_consistent_and_read_only() -> None:
    inst = _inst()
    assert inst.ids == ("a", "b", "c")
    assert inst.ranks.tolist() == [8, 16, 32]
    assert inst.rates.tolist() == [0.5, 0.25, 1.0]
    assert inst.total_rate_rps == 1.75
    assert inst.index == {"a": 0, "b": 1, "c": 2}
    with pytest.raises(ValueError):
        inst.rates[0] = 3.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        inst.name = "u"  # type: ignore[misc]


def test_equal_instances_hash_equal_and_lists_become_tuples() -> None:
    a = _inst()
    b = _inst(adapters=[Adapter("a", 8, 0.5), Adapter("b", 16, 0.25), Adapter("c", 32, 1.0)])
    assert a == b and hash(a) == hash(b)
    assert isinstance(b.adapters, tuple)


def test_replace_and_subset_validate_again() -> None:
    inst = _inst()
    assert inst.subset(["c", "a"]).ids == ("c", "a")
    assert inst.subset(np.array([1])).ids == ("b",)
    assert inst.replace(name="u").name == "u"
    with pytest.raises(InputError, match="adapters: unknown adapter id"):
        inst.subset(["zz"])
    with pytest.raises(InputError, match="gpu: unknown GPU profile"):
        inst.replace(gpu="a100")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Adapter("", 8, 1.0), "id: must be a non-empty string"),
        (lambda: Adapter("a", 12, 1.0), "rank: must be one of vLLM's ranks"),
        (lambda: Adapter("a", True, 1.0), "rank: must be one of vLLM's ranks"),
        (lambda: Adapter("a", 8, 0.0), "rate_rps: must be positive (got 0.0)"),
        (lambda: Adapter("a", 8, float("inf")), "rate_rps: must be finite"),
        (lambda: ServerSettings(max_num_seqs=0), "server.max_num_seqs: must be positive"),
        (lambda: ServerSettings(gpu_memory_utilization=1.2), "must be in (0, 1]"),
        (lambda: Workload(duration_s=-1.0), "workload.duration_s: must be positive"),
        (lambda: Workload(arrival="gamma"), "workload.cv: is required with arrival: gamma"),
        (lambda: Workload(cv=2.0), "workload.cv: is only allowed with arrival: gamma"),
        (lambda: Workload(arrival="trace"), "workload.trace: is required with arrival: trace"),
        (lambda: Lengths(kind="normal", input_mean=10.0), "workload.lengths.input_std: is required"),
        (lambda: Lengths(kind="trace"), "workload.lengths.trace: is required"),
        (lambda: Lengths(kind="sharegpt", input_mean=3.0), "takes no mean/std"),
        (lambda: _inst(adapters=()), "adapters: must list at least one adapter"),
        (lambda: _inst(adapters=(Adapter("a", 8, 1.0), Adapter("a", 8, 2.0))),
         "adapters[1].id: is a duplicate adapter id (got 'a')"),
        (lambda: _inst(model="gpt-5"), "model: unknown model profile"),
        (lambda: _inst(format_version=2), "format_version: must be 1"),
    ],
)
def test_invalid_data_is_rejected_with_field_and_value(make: object, message: str) -> None:
    with pytest.raises(InputError) as info:
        make()  # type: ignore[operator]
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_error_with_source_names_the_file() -> None:
    with pytest.raises(InputError) as info:
        Adapter("a", 8, -1.0)
    assert str(info.value.with_source("x.yaml")) == "x.yaml: rate_rps: must be positive (got -1.0)"
