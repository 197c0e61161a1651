"""The one evaluator catches broken plans; plans round-trip through files; the oracle's rules hold."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from placer.check.evaluate import check_plan, evaluate
from placer.oracle import AnalyticOracle
from placer.problem.memory import max_slots, memory_fits
from placer.result import GpuPlan, Result
from placer.solve import solve
from twin.errors import InputError
from twin.spec import Adapter, Instance, Slo


@pytest.fixture()
def problem() -> Instance:
    return Instance(name="tiny", model="llama-3.1-8b-instruct", gpu="h100-64gb",
                    adapters=(Adapter("a", 8, 4.0), Adapter("b", 16, 3.0), Adapter("c", 8, 2.0),
                              Adapter("d", 32, 1.0)))


def plan_of(*gpus: GpuPlan) -> Result:
    return Result(solver="hand", status="feasible", num_gpus=len(gpus), lower_bound=1, runtime_s=0.0,
                  gpus=tuple(gpus))


def gpu(ids: str, slots: int = 1, rank: int = 32, cpu: int | None = None) -> GpuPlan:
    return GpuPlan(adapters=tuple(ids), max_loras=slots, max_cpu_loras=cpu or len(ids), max_lora_rank=rank)


def test_a_good_plan_passes(problem: Instance) -> None:
    ev = evaluate(problem, plan_of(gpu("ab", 2, 16), gpu("cd", 2, 32)), AnalyticOracle(capacity_rps=7))
    assert ev.valid and ev.feasible and not ev.errors and ev.failing_gpus == ()


@pytest.mark.parametrize("gpus,message", [
    ((gpu("ab", 2, 16), gpu("c", 1, 8)), "1 adapters not placed: ['d']"),
    ((gpu("ab", 2, 16), gpu("cda", 2, 32)), "placed more than once: ['a']"),
    ((gpu("ab", 2, 16), gpu("cdx", 2, 32)), "unknown adapter ids ['x']"),
    ((gpu("ab", 3, 16), gpu("cd", 2, 32)), "max_loras 3 outside [1, 2 adapters]"),
    ((gpu("ab", 2, 8), gpu("cd", 2, 32)), "max_lora_rank 8 below rank 16"),
    ((gpu("ab", 2, 24), gpu("cd", 2, 32)), "max_lora_rank 24 is not one of"),
    ((gpu("ab", 2, 16, cpu=1), gpu("cd", 2, 32)), "max_cpu_loras 1 below max_loras 2"),
])
def test_broken_plans_are_caught(problem: Instance, gpus: tuple[GpuPlan, ...], message: str) -> None:
    ev = evaluate(problem, plan_of(*gpus), AnalyticOracle(capacity_rps=100))
    assert not ev.valid and not ev.feasible
    assert any(message in e for e in ev.errors), ev.errors


def test_memory_error_and_overload_are_caught() -> None:
    many = Instance(name="m", model="llama-3.1-8b-instruct", gpu="h100-64gb",
                    adapters=tuple(Adapter(f"x{i}", 512, 0.1) for i in range(8)))
    ev = evaluate(many, plan_of(gpu([f"x{i}" for i in range(8)], 8, 512)),  # type: ignore[arg-type]
                  AnalyticOracle(capacity_rps=100))
    assert not ev.feasible and any("memory error" in e for e in ev.errors)
    # overloaded: 4 + 3 + 2 + 1 = 10 req/s on one GPU that carries 7
    ev = evaluate(Instance(name="o", model="llama-3.1-8b-instruct", gpu="h100-64gb",
                           adapters=(Adapter("a", 8, 4.0), Adapter("b", 8, 6.0))),
                  plan_of(gpu("ab", 2, 8)), AnalyticOracle(capacity_rps=7))
    assert ev.valid and not ev.feasible and ev.failing_gpus == (0,)
    assert ev.gpus[0].starved


def test_num_gpus_must_match(problem: Instance) -> None:
    bad = dataclasses.replace(plan_of(gpu("abcd", 4, 32)), num_gpus=2)
    assert any("num_gpus is 2" in e for e in check_plan(problem, bad))


def test_plan_round_trips_through_a_file(problem: Instance, tmp_path) -> None:
    oracle = AnalyticOracle(capacity_rps=7)
    result = solve(problem, "ffd-bisect", time_limit=10, oracle=oracle)
    path = tmp_path / "plan.json"
    result.save(path)
    again = Result.load(path)
    assert again.to_dict() == json.loads(path.read_text())
    assert again.gpus == tuple(dataclasses.replace(g) for g in result.gpus)
    assert evaluate(problem, again, AnalyticOracle(capacity_rps=7)).feasible


@pytest.mark.parametrize("model", ["llama-3.1-8b-instruct", "qwen-2.5-7b-instruct"])
def test_memory_rule_is_the_twins(model: str) -> None:
    from twin.catalogue import load_profile
    from twin.engine import is_oom, kv_capacity_tokens

    p = Instance(name="m", model=model, gpu="h100-64gb", adapters=(Adapter("a", 8, 1.0),))
    prof = load_profile(model, "h100-64gb")
    for rank in (8, 64, 512):
        s = max_slots(p, rank, 10_000)
        assert 1 <= s < 10_000 and memory_fits(p, s, rank) and not memory_fits(p, s + 1, rank)
        assert not is_oom(kv_capacity_tokens(prof, s, rank, 0.9), prof.max_model_len)
        assert is_oom(kv_capacity_tokens(prof, s + 1, rank, 0.9), prof.max_model_len)
    assert max_slots(p, 8, 10_000) > max_slots(p, 64, 10_000) > max_slots(p, 512, 10_000)


def test_oracle_picks_the_best_slot_count_and_caches(problem: Instance) -> None:
    oracle = AnalyticOracle(capacity_rps=100, slot_cost=0.01, min_slot_fraction=0.5)
    v = oracle.evaluate(problem, [0, 1, 2, 3])
    assert v.feasible and v.best_max_loras == 4 and v.max_lora_rank == 32 and v.max_cpu_loras == 4
    calls = oracle.calls
    assert oracle.evaluate(problem, [3, 2, 1, 0]) == v and oracle.calls == calls  # cached, order-free
    assert oracle.slot_candidates(problem, 20, 8) == [8, 16, 20]
    assert oracle.slot_candidates(problem, 700, 64) == [8, 16, 32, 61]  # memory allows 61 slots at rank 64
    big = problem.replace(adapters=tuple(Adapter(f"x{i}", 8, 0.1) for i in range(40)))
    v = oracle.evaluate(big, range(40))  # slots ≥ 20 needed; fewer slots cost less: 32 beats 40
    assert v.feasible and v.best_max_loras == 32


def test_margin_makes_the_oracle_stricter() -> None:
    p = Instance(name="m", model="llama-3.1-8b-instruct", gpu="h100-64gb", adapters=(Adapter("a", 8, 1.0),))
    with pytest.raises(InputError):
        AnalyticOracle(margin=0.5)
    assert AnalyticOracle().name != AnalyticOracle(margin=0.05).name
    assert AnalyticOracle(capacity_rps=1.0).evaluate(p, [0]).feasible


class _Fixed(AnalyticOracle):
    """Predicts a fixed served fraction and starvation probability for every configuration."""

    def __init__(self, fraction: float, prob: float, **kw: float) -> None:
        super().__init__(**kw)
        self.fraction, self.prob = fraction, prob

    def _predict(self, problem, queries):  # type: ignore[no-untyped-def]
        off = np.array([problem.rates[q[0]].sum() for q in queries]) * self.tokens_per_request(problem)
        n = len(queries)
        return off * self.fraction, np.full(n, self.prob), np.zeros(n, bool), None


@pytest.mark.parametrize("fraction,prob,margin,threshold,feasible", [
    (0.89, 0.1, None, None, True),    # the classifier decides (papers' rule); throughput only picks slots
    (0.89, 0.1, 0.0, None, False),    # with a margin the throughput must reach (0.9 + margin) × offered
    (0.93, 0.1, 0.02, None, True),
    (0.93, 0.1, 0.05, None, False),
    (0.99, 0.6, None, None, False),   # p > 0.5
    (0.99, 0.3, None, 0.25, False),   # a stricter threshold
])
def test_starvation_rule(fraction: float, prob: float, margin: float | None, threshold: float | None,
                         feasible: bool) -> None:
    p = Instance(name="m", model="llama-3.1-8b-instruct", gpu="h100-64gb", adapters=(Adapter("a", 8, 1.0),))
    oracle = _Fixed(fraction, prob, margin=margin, starved_threshold=threshold)
    assert oracle.evaluate(p, [0]).feasible is feasible


def test_headroom_judges_at_a_higher_load() -> None:
    p = Instance(name="m", model="llama-3.1-8b-instruct", gpu="h100-64gb",
                 adapters=(Adapter("a", 8, 1.0), Adapter("b", 8, 0.95)))
    assert AnalyticOracle(capacity_rps=2.0).evaluate(p, [0, 1]).feasible          # 1.95 ≤ 2
    tight = AnalyticOracle(capacity_rps=2.0, headroom=0.1)                          # 2.145 > 2
    v = tight.evaluate(p, [0, 1])
    assert not v.feasible and "headroom=0.1" in tight.name
    assert v.offered_tok_s == pytest.approx(1.95 * tight.tokens_per_request(p))     # reported at nominal load


class _TableBundle:
    """A stand-in surrogate: per slot count, a fixed served fraction (of the offered load) and p(starved)."""

    def __init__(self, table: dict[int, tuple[float, float]]) -> None:
        self.table = table

    def predict_groups(self, problem: Instance, groups, max_loras, max_lora_rank, max_cpu_loras):  # type: ignore[no-untyped-def]
        from placer.problem.memory import tokens_per_request

        tpr = tokens_per_request(problem)
        thr = [self.table[int(s)][0] * float(problem.rates[g].sum()) * tpr
               for g, s in zip(groups, max_loras, strict=True)]
        prob = [self.table[int(s)][1] for s in max_loras]
        return dataclasses.make_dataclass("P", ["throughput_tok_s", "starved_probability"])(thr, prob)


def _eight() -> Instance:
    return Instance("t", "llama-3.1-8b-instruct", "h100-64gb",
                    tuple(Adapter(f"a{i}", 8, 0.1) for i in range(12)))


def test_surrogate_oracle_margin_zero_needs_both_models_to_agree() -> None:
    from placer.oracle.backends import SurrogateOracle

    prob = _eight().replace(slo=Slo.paper())  # the fake bundle predicts no latency: the papers' rule
    idx = list(range(12))
    cands = SurrogateOracle(bundle=_TableBundle({}), headroom=0.0).slot_candidates(prob, 12, 8)
    disagree = _TableBundle({s: (0.85, 0.1) for s in cands})  # classifier: fine; regressor: starved
    assert SurrogateOracle(bundle=disagree, headroom=0.0).evaluate(prob, idx).feasible  # the papers' rule
    assert not SurrogateOracle(bundle=disagree, headroom=0.0, margin=0.0).evaluate(prob, idx).feasible
    agree = _TableBundle({s: (0.97, 0.1) for s in cands})
    assert SurrogateOracle(bundle=agree, headroom=0.0, margin=0.0).evaluate(prob, idx).feasible


def test_surrogate_oracle_is_stricter_than_the_classifier_by_default() -> None:
    from placer.oracle.backends import SurrogateOracle

    prob = _eight().replace(slo=Slo.paper())  # the fake bundle predicts no latency
    cands = SurrogateOracle(bundle=_TableBundle({}), headroom=0.0).slot_candidates(prob, 12, 8)
    unsure = _TableBundle({s: (0.97, 0.3) for s in cands})  # p 0.3: not starved at the classifier's 0.5
    assert not SurrogateOracle(bundle=unsure, headroom=0.0).evaluate(prob, range(12)).feasible
    papers = SurrogateOracle(bundle=unsure, headroom=0.0, starved_threshold=None)
    assert "p_starved<=0.2" in SurrogateOracle(bundle=unsure).name
    assert papers.evaluate(prob, range(12)).feasible  # the classifier's own threshold (the papers' rule)


def test_near_equal_throughputs_pick_the_safest_slot_count() -> None:
    from placer.oracle.backends import SurrogateOracle

    prob = _eight().replace(slo=Slo.paper())  # the fake bundle predicts no latency
    cands = SurrogateOracle(bundle=_TableBundle({}), headroom=0.0).slot_candidates(prob, 12, 8)
    assert len(cands) >= 2
    lo, hi = cands[0], cands[-1]
    table = {s: (0.95, 0.18) for s in cands} | {lo: (1.0, 0.15), hi: (0.995, 0.05)}  # within 1 %: safest wins
    v = SurrogateOracle(bundle=_TableBundle(table), headroom=0.0).evaluate(prob, range(12))
    assert v.best_max_loras == hi
    table[hi] = (0.97, 0.05)  # 3 % less throughput: the best throughput wins
    v = SurrogateOracle(bundle=_TableBundle(table), headroom=0.0).evaluate(prob, range(12))
    assert v.best_max_loras == lo
