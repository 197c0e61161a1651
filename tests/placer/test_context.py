"""One explicit context (profile + surrogate models): results depend only on the arguments.

Covers: the same ``solve`` gives the same ``Result`` whatever ran before in the process (and in a fresh
process), a profile for another model/GPU is an error, a user's profile really changes the memory rule the
oracle, the evaluator, verification and the surrogate features apply, profile files load through
``Context.load``, and the surrogates' compiled KV rule agrees with :class:`twin.profile.MemoryModel`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import placer
from placer.context import Context
from placer.oracle import AnalyticOracle, SurrogateOracle
from placer.problem.memory import max_slots, memory_fits
from surrogate._numba import _kv_tokens
from surrogate.features import feature_index, features
from twin.catalogue import load_profile
from twin.errors import InputError
from twin.profile import MemoryModel
from twin.spec import Adapter, Instance

ROOT = Path(__file__).resolve().parents[2]
MEDIUM = ROOT / "instances" / "examples" / "medium.yaml"
TINY = ROOT / "instances" / "examples" / "tiny.yaml"
LLAMA, QWEN, GPU = "llama-3.1-8b-instruct", "qwen-2.5-7b-instruct", "h100-64gb"

# Drop what measures time, keep everything a result *is*.
_TIMING_KEYS = {"runtime_s", "bound_s", "seconds", "wall_s"}


def _stable(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _stable(v) for k, v in obj.items() if k not in _TIMING_KEYS}
    if isinstance(obj, list):
        return [_stable(v) for v in obj]
    return obj


def _problem(n: int = 12, model: str = LLAMA) -> Instance:
    rates = np.linspace(0.05, 0.6, n)
    ranks = [8, 16, 32]
    return Instance(name="ctx", model=model, gpu=GPU,
                    adapters=tuple(Adapter(f"a{i}", ranks[i % 3], float(r)) for i, r in enumerate(rates)))


def test_same_solve_same_result_whatever_ran_before_in_the_process() -> None:
    problem = placer.read_instance(MEDIUM)
    first = placer.solve(problem, "ffd-bisect", time_limit=30, seed=0)
    # other work in between: an exact solver on the same problem, another problem, another oracle kind
    placer.solve(problem, "cpsat", time_limit=20, seed=0)
    placer.solve(_problem(), "greedy-paper", time_limit=20, seed=0)
    placer.solve(_problem(), "ffd-bisect", time_limit=20, seed=0, oracle=AnalyticOracle(capacity_rps=2))
    again = placer.solve(problem, "ffd-bisect", time_limit=30, seed=0)
    assert _stable(again.to_dict()) == _stable(first.to_dict())
    exact_after = placer.solve(problem, "cpsat", time_limit=20, seed=0)
    exact_alone = placer.solve(problem, "cpsat", time_limit=20, seed=0, oracle=placer.make_oracle(problem))
    assert _stable(exact_after.to_dict()) == _stable(exact_alone.to_dict())


def _in_fresh_process(order: list[str]) -> dict[str, object]:
    code = (
        "import json, sys, placer\n"
        f"p = placer.read_instance({str(MEDIUM)!r})\n"
        "out = {}\n"
        f"for s in {order!r}:\n"
        "    out[s] = placer.solve(p, s, time_limit=20, seed=0).to_dict()\n"
        "json.dump(out, sys.stdout)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_same_results_in_either_order_across_fresh_processes() -> None:
    a = _in_fresh_process(["ffd-bisect", "cpsat"])
    b = _in_fresh_process(["cpsat", "ffd-bisect"])
    for solver in ("ffd-bisect", "cpsat"):
        assert _stable(a[solver]) == _stable(b[solver]), solver


def test_lower_bound_does_not_depend_on_an_exact_solver_having_run() -> None:
    problem = placer.read_instance(MEDIUM)
    oracle = placer.make_oracle(problem)
    before = placer.lower_bound(problem, oracle)
    placer.solve(problem, "ilp", time_limit=20, seed=0, oracle=oracle)
    assert placer.lower_bound(problem, oracle) == before
    assert placer.lower_bound(problem, placer.make_oracle(problem)) == before


def test_a_profile_for_another_model_is_an_error() -> None:
    problem = _problem(model=LLAMA)
    ctx = Context(profile=load_profile(QWEN, GPU))
    with pytest.raises(InputError, match="profile is for qwen-2.5-7b-instruct@h100-64gb"):
        placer.solve(problem, "ffd-bisect", time_limit=10, context=ctx)
    with pytest.raises(InputError, match="profile is for"):
        ctx.surrogate_for(problem)


def _small_kv_profile(slots_at_rank_32: int) -> tuple[Context, int]:
    """The shipped Llama profile with a KV base that leaves room for exactly ``slots_at_rank_32`` slots of
    rank 32 (the table of measured points dropped so that the line decides)."""
    base = load_profile(LLAMA, GPU)
    mem = replace(base.memory, table=())
    per_slot = mem.kv_per_slot_rank * 32 + mem.kv_per_slot
    kv_base = base.max_model_len + per_slot * (slots_at_rank_32 + 0.5)
    return Context(profile=base.replace(memory=replace(mem, kv_base_tokens=kv_base))), slots_at_rank_32


def test_a_users_profile_changes_the_memory_rule_everywhere() -> None:
    ctx, cap = _small_kv_profile(3)
    problem = _problem(12)
    assert max_slots(problem, 32, 64, ctx.profile_for(problem)) == cap
    assert max_slots(problem, 32, 64) > cap  # the shipped profile allows more
    assert not memory_fits(problem, cap + 1, 32, ctx.profile_for(problem))
    oracle = AnalyticOracle(capacity_rps=50, context=ctx)
    result = placer.solve(problem, "ffd-bisect", time_limit=20, oracle=oracle)
    assert result.gpus and all(g.max_loras <= cap for g in result.gpus if g.max_lora_rank == 32)
    assert placer.evaluate(problem, result, AnalyticOracle(capacity_rps=50, context=ctx)).valid
    # the same plan at more slots than the user's GPU holds is rejected as a memory error
    big = replace(result, gpus=tuple(replace(g, max_loras=len(g.adapters), max_cpu_loras=len(g.adapters))
                                     for g in result.gpus))
    if any(len(g.adapters) > cap and g.max_lora_rank == 32 for g in big.gpus):
        errors = placer.evaluate(problem, big, AnalyticOracle(capacity_rps=50, context=ctx)).errors
        assert any("memory error" in e for e in errors)


# the shipped models meet a profile they were not trained on: the warning is expected here
@pytest.mark.filterwarnings("ignore::surrogate.bundle.StaleSurrogateWarning")
def test_surrogate_features_use_the_contexts_profile() -> None:
    ctx, cap = _small_kv_profile(2)
    problem = _problem(8)
    own = ctx.surrogate_for(problem)
    shipped = Context().surrogate_for(problem)
    kv = feature_index("kv_tokens")
    x_user = features(problem, 4, max_lora_rank=32, profile=ctx.profile_for(problem))
    x_ship = features(problem, 4, max_lora_rank=32)
    assert x_user[kv] < x_ship[kv]
    assert own.predict(problem, 4, max_lora_rank=32).oom
    assert not shipped.predict(problem, 4, max_lora_rank=32).oom
    verdict = SurrogateOracle(context=ctx).evaluate(problem, list(range(problem.n_adapters)))
    assert verdict.best_max_loras is None or verdict.best_max_loras <= cap


def test_context_loads_profile_and_models_from_files(tmp_path: Path) -> None:
    prof = load_profile(LLAMA, GPU)
    path = tmp_path / "mine.json"
    prof.save(path)
    ctx = Context.load(profile=path)
    assert ctx.profile == prof
    with pytest.raises(InputError, match="not a directory"):
        Context.load(models=tmp_path / "missing")
    with pytest.raises(InputError):
        Context.load(profile=tmp_path / "missing.json")


@settings(max_examples=60, deadline=None)
@given(base=st.floats(1e4, 5e5), per_sr=st.floats(0, 50), per_s=st.floats(0, 2000),
       util=st.floats(0.5, 0.95), slots=st.integers(1, 64), rank=st.sampled_from([8, 16, 32, 64]),
       table=st.lists(st.tuples(st.integers(1, 64), st.sampled_from([8, 16, 32, 64]),
                                st.one_of(st.none(), st.integers(0, 400_000))), max_size=6))
def test_compiled_kv_rule_matches_the_memory_model(base, per_sr, per_s, util, slots, rank, table  # type: ignore[no-untyped-def]
                                                   ) -> None:
    rows = tuple({(s, r): (s, r, k) for s, r, k in table}.values())  # one entry per (slots, rank)
    mem = MemoryModel(kv_base_tokens=base, kv_per_slot_rank=per_sr, kv_per_slot=per_s,
                      kv_bytes_per_token=131072, gpu_mem_gib=64.0, table=rows)
    memv, tab = mem.packed(util)
    compiled = _kv_tokens(float(slots), float(rank), memv, tab)
    exact = mem.kv_tokens(slots, rank, util)
    vector = mem.kv_tokens_array(np.array([slots]), np.array([rank]), util)[0]
    if exact is None:
        assert np.isnan(compiled) and np.isnan(vector)
    else:
        assert compiled == pytest.approx(exact, rel=1e-12, abs=1e-6)
        assert vector == pytest.approx(exact, rel=1e-12, abs=1e-6)


def test_a_metrics_scraper_changes_the_twin_runs_not_the_surrogates(tmp_path: Path) -> None:
    # The shipped profiles carry fitted scrape costs and no scraper; a context (and the twin commands'
    # --metrics-scrape-interval) adds one: twin runs then stall at each scrape, the surrogates are the same
    # bundle (trained without) and are not flagged stale; a profile without fitted costs is an error.
    import warnings

    from typer.testing import CliRunner

    from placer.cli.app import app

    problem = placer.read_instance(TINY)
    scraped = Context(metrics_scrape_interval_s=2.0)
    assert scraped.profile_for(problem).step.metrics_scrape_interval_s == 2.0
    assert Context().profile_for(problem).step.metrics_scrape_interval_s == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert scraped.surrogate_for(problem).meta == Context().surrogate_for(problem).meta
    shipped = load_profile(LLAMA, GPU)
    bare = shipped.without_scrape_costs()
    with pytest.raises(InputError, match="no fitted metrics-scrape costs"):
        Context(profile=bare, metrics_scrape_interval_s=2.0).profile_for(problem)

    def sim(*extra: str) -> dict:  # type: ignore[type-arg]
        res = CliRunner().invoke(app, ["twin", "simulate", str(TINY), "--max-loras", "4", "--json", *extra])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    off, on = sim(), sim("--metrics-scrape-interval", "2")
    assert off["scrapes"] == 0 and on["scrapes"] > 1000 and on["scrape_stall_s"] > 0
    assert on["ttft_mean_s"] > off["ttft_mean_s"]
    res = CliRunner().invoke(app, ["twin", "simulate", str(TINY), "--max-loras", "4",
                                   "--metrics-scrape-interval", "-1"])
    assert res.exit_code == 2


def test_solve_takes_the_scraper_into_its_twin_runs_only() -> None:
    # `solve --verify --metrics-scrape-interval 2`: the same plan as without (the surrogates model no
    # scraper), and its twin verification runs with the scrapes; the twin oracle sees the scraper too.
    from typer.testing import CliRunner

    from placer.cli.app import app
    from placer.oracle import make_oracle

    def solve(*extra: str) -> dict:  # type: ignore[type-arg]
        res = CliRunner().invoke(app, ["solve", str(TINY), "--verify", "--json", *extra])
        assert res.exit_code in (0, 1), res.output
        return json.loads(res.stdout)

    off, on = solve(), solve("--metrics-scrape-interval", "2")
    assert [g["adapters"] for g in on["gpus"]] == [g["adapters"] for g in off["gpus"]]
    assert all(g["scrapes"] == 0 for g in off["verification"]["gpus"])
    assert all(g["scrapes"] > 1000 for g in on["verification"]["gpus"])
    problem = placer.read_instance(TINY)
    twin = make_oracle(problem, "twin", context=Context(metrics_scrape_interval_s=2.0))
    assert twin.profile(problem).step.metrics_scrape_interval_s == 2.0
