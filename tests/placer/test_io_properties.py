"""Property tests: any valid instance survives write → read unchanged, in JSON and YAML, inline or CSV."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from placer.problem.generate import FAMILIES, generate
from placer.problem.io import read_instance, write_instance
from twin.spec import ALLOWED_RANKS, Adapter, Instance, Lengths, ServerSettings, Workload

# Ids: printable text, including ones YAML/CSV would misread if unquoted ("1", "true", "a,b", " x").
ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1,
              max_size=12).filter(lambda s: s.strip() != "")
rates = st.floats(min_value=1e-9, max_value=1e4, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)

adapters = st.lists(st.tuples(ids, st.sampled_from(ALLOWED_RANKS), rates), min_size=1, max_size=40,
                    unique_by=lambda t: t[0]).map(lambda rows: tuple(Adapter(*r) for r in rows))
lengths = st.one_of(
    st.just(Lengths()),
    st.sampled_from(["azure-like-conv", "azure-like-code"]).map(lambda t: Lengths(kind="trace", trace=t)),
    st.tuples(positive, positive, positive, positive).map(
        lambda m: Lengths(kind="normal", input_mean=m[0], input_std=m[1], output_mean=m[2], output_std=m[3])),
)
workloads = st.builds(
    lambda d, kind, cv, lens: Workload(duration_s=d, arrival=kind, cv=cv if kind == "gamma" else None,
                                       trace="azure-like-code" if kind == "trace" else None, lengths=lens),
    positive, st.sampled_from(["poisson", "gamma", "unpredictable", "trace"]), positive, lengths,
)
servers = st.builds(ServerSettings, max_num_batched_tokens=st.integers(1, 1 << 20),
                    max_num_seqs=st.integers(1, 1 << 16), max_model_len=st.none() | st.integers(1, 1 << 20),
                    gpu_memory_utilization=st.floats(0.01, 1.0))
models = st.sampled_from(["llama-3.1-8b-instruct", "qwen-2.5-7b-instruct"])
instances = st.builds(Instance, name=ids, model=models, gpu=st.just("h100-64gb"), adapters=adapters,
                      server=servers, workload=workloads)


def _round_trip(inst: Instance, suffix: str, adapters_csv: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        first = Path(tmp) / f"a{suffix}"
        write_instance(inst, first, adapters_csv=adapters_csv)
        again = read_instance(first)
        assert again == inst
        second = Path(tmp) / "b" / f"a{suffix}"
        write_instance(again, second, adapters_csv=adapters_csv)
        assert second.read_bytes() == first.read_bytes()


@settings(max_examples=50, deadline=None)
@given(instances, st.sampled_from([".yaml", ".json"]), st.booleans())
def test_random_instances_round_trip(inst: Instance, suffix: str, adapters_csv: bool) -> None:
    _round_trip(inst, suffix, adapters_csv)


@settings(max_examples=15, deadline=None)
@given(st.sampled_from(FAMILIES), st.integers(1, 400), st.integers(0, 2**32 - 1),
       st.sampled_from([".yaml", ".json"]))
def test_generated_instances_round_trip(family: str, n: int, seed: int, suffix: str) -> None:
    _round_trip(generate(family, n, seed), suffix, adapters_csv=n > 200)


def test_awkward_ids_round_trip_through_csv_and_yaml() -> None:
    awkward = ("1", "true", "a,b", " x", "y ", 'q"uote', "null", "- z", "ünï")
    inst = Instance(name="awkward", model="llama-3.1-8b-instruct", gpu="h100-64gb",
                    adapters=tuple(Adapter(i, 8, 0.1) for i in awkward))
    for suffix in (".yaml", ".json"):
        for adapters_csv in (False, True):
            _round_trip(inst, suffix, adapters_csv)
