"""simulate_seeds(): per-seed verdicts and the fraction of seeds that pass (verdicts with a confidence)."""

from __future__ import annotations

import pytest

from twin import Adapter, InputError, Instance, Workload, simulate, simulate_seeds
from twin.seeds import passes, seed_list

LLAMA = "llama-3.1-8b-instruct"


def _inst(rate: float, n: int = 4, duration_s: float = 60.0) -> Instance:
    return Instance(name="edge", model=LLAMA, gpu="h100-64gb", workload=Workload(duration_s=duration_s),
                    adapters=tuple(Adapter(f"a{i}", 8, rate) for i in range(n)))


def test_each_seed_is_the_single_run_with_that_seed_and_the_fraction_counts_them() -> None:
    inst = _inst(2.0)  # 4 × 2 req/s on 4 slots for 60 s: served fraction ≈ 0.86–0.91, on the 0.9 line
    runs = simulate_seeds(inst, seeds=4, seed=0, max_loras=4)
    assert runs.seeds == (0, 1, 2, 3)
    for s, res in zip(runs.seeds, runs.results, strict=True):
        one = simulate(inst, max_loras=4, seed=s)
        assert res.seed == s and res.throughput_tok_s == one.throughput_tok_s
        assert passes(res) == (not one.oom and not one.starved)
    assert runs.pass_fraction == sum(runs.passed) / 4
    assert 0.0 < runs.pass_fraction < 1.0  # the seeds disagree here: that is what the fraction is for
    d = runs.to_dict(per_adapter=False)
    assert {k: v for k, v in d.items() if k != "wall_s"} == {
        **{k: v for k, v in runs.first.to_dict(per_adapter=False).items() if k != "wall_s"},
        "seeds": [0, 1, 2, 3], "seed_passed": list(runs.passed),
        "seed_throughput_tok_s": [r.throughput_tok_s for r in runs.results],
        "pass_fraction": runs.pass_fraction}


def test_clear_cases_pass_or_fail_on_every_seed() -> None:
    light = simulate_seeds(_inst(0.2, duration_s=300.0), seeds=2, seed=5, max_loras=4)
    assert light.seeds == (5, 6) and light.passed == (True, True) and light.pass_fraction == 1.0
    hot = simulate_seeds(_inst(20.0), seeds=2, max_loras=4)
    assert hot.passed == (False, False) and hot.pass_fraction == 0.0
    oom = simulate_seeds(_inst(0.2), seeds=3, max_loras=384, max_lora_rank=16)  # the KV cache < max_model_len
    assert all(r.oom for r in oom.results) and oom.pass_fraction == 0.0


@pytest.mark.parametrize(("seed", "seeds"), [(0, 0), (-1, 2), (0, True), (0, 1.5)])
def test_bad_seed_counts_are_input_errors(seed: object, seeds: object) -> None:
    with pytest.raises(InputError):
        seed_list(seed, seeds)  # type: ignore[arg-type]
