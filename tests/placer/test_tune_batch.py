"""``placer solve --tune-batch`` (issue 17 part 2, minimal version): the plan's per-GPU ``max_num_seqs`` and
``gpu_memory_utilization`` (round trip, strict validation, old plans), verify and deploy use them, and the
tuning never changes the GPUs or their adapters."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from cli_run import run_cli

from placer.check.verify import verify
from placer.context import Context
from placer.deploy import deployment
from placer.oracle import make_oracle
from placer.problem.io import read_instance
from placer.result import GpuPlan, Result
from placer.solve import solve
from placer.tune import place_with_batch, tune_batch
from twin.errors import InputError
from twin.profile import MemoryModel, Profile, StepModel
from twin.spec import Adapter, Instance, Lengths, ServerSettings, Slo, Workload

LLAMA, GPU = "llama-3.1-8b-instruct", "h100-64gb"
MIB = 2**20


def _toy_context() -> Context:
    """As in test_advise: a 10 ms step whatever the batch, so a batch of B serves B requests of 100 output
    tokens per second; 1 MiB of KV per token on a 100 GiB GPU (50,000 KV tokens at utilisation 0.9)."""
    mem = MemoryModel(kv_base_tokens=50_000, kv_per_slot_rank=2.0, kv_per_slot=4.0, kv_bytes_per_token=MIB,
                      gpu_mem_gib=100.0)
    return Context(profile=Profile(model=LLAMA, gpu=GPU, max_model_len=256, memory=mem,
                                   step=StepModel(base_ms=10.0, per_seq_ms=0.0)))


def _toy_instance(rates: tuple[float, ...] = (3.5,)) -> Instance:
    """One adapter per rate; every request 10 prompt + 100 output tokens; max_num_seqs 16."""
    lengths = Lengths(kind="normal", input_mean=10, input_std=0, output_mean=100, output_std=0)
    return Instance(name="toy", model=LLAMA, gpu=GPU,
                    adapters=tuple(Adapter(f"a{i}", 8, r) for i, r in enumerate(rates)),
                    server=ServerSettings(max_num_seqs=16, max_model_len=256),
                    workload=Workload(duration_s=300.0, lengths=lengths), slo=Slo.paper())


def _plan(*gpus: GpuPlan) -> Result:
    return Result(solver="hand", status="feasible", num_gpus=len(gpus), lower_bound=1, runtime_s=0.0,
                  gpus=gpus)


# --- the plan format ----------------------------------------------------------------------------------------
def test_round_trip_with_and_without_the_new_fields(tmp_path: Path) -> None:
    plan = _plan(GpuPlan(("a0",), 1, 1, 8, max_num_seqs=4, gpu_memory_utilization=0.575),
                 GpuPlan(("a1",), 1, 1, 8))
    path = tmp_path / "plan.json"
    plan.save(path)
    raw = json.loads(path.read_text())
    assert raw["gpus"][0]["max_num_seqs"] == 4 and raw["gpus"][0]["gpu_memory_utilization"] == 0.575
    assert "max_num_seqs" not in raw["gpus"][1] and "gpu_memory_utilization" not in raw["gpus"][1]
    back = Result.load(path)
    assert back.gpus == plan.gpus
    srv = ServerSettings(max_num_seqs=2048, gpu_memory_utilization=0.9)
    assert back.gpus[0].server(srv) == ServerSettings(max_num_seqs=4, gpu_memory_utilization=0.575)
    assert back.gpus[1].server(srv) is srv  # an old-style GPU runs the instance's settings


@pytest.mark.parametrize(("field", "value", "words"), [
    ("max_num_seqs", 0, "positive integer"),
    ("max_num_seqs", -3, "positive integer"),
    ("max_num_seqs", 2.5, "positive integer"),
    ("max_num_seqs", True, "positive integer"),
    ("max_num_seqs", "8", "positive integer"),
    ("gpu_memory_utilization", 0, "in (0, 1]"),
    ("gpu_memory_utilization", -0.1, "in (0, 1]"),
    ("gpu_memory_utilization", 1.5, "in (0, 1]"),
    ("gpu_memory_utilization", True, "in (0, 1]"),
    ("gpu_memory_utilization", "0.9", "in (0, 1]"),
    ("gpu_memory_utilization", float("nan"), "in (0, 1]"),
])
def test_broken_per_gpu_values_are_one_line_errors_naming_file_field_value(field: str, value: Any,
                                                                            words: str) -> None:
    d = _plan(GpuPlan(("a0",), 1, 1, 8)).to_dict()
    d["gpus"][0][field] = value
    with pytest.raises(InputError) as exc:
        Result.from_dict(d, source="plans/p.json")
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"plans/p.json: gpus[0].{field}: ") and words in msg and repr(value) in msg


def test_explicit_null_fields_load_as_absent() -> None:
    d = _plan(GpuPlan(("a0",), 1, 1, 8)).to_dict()
    d["gpus"][0].update(max_num_seqs=None, gpu_memory_utilization=None)
    g = Result.from_dict(d).gpus[0]
    assert g.max_num_seqs is None and g.gpu_memory_utilization is None


# --- deploy and verify use them -----------------------------------------------------------------------------
def test_deploy_emits_each_gpus_own_batch_and_memory_flags() -> None:
    problem = Instance(name="dep", model="qwen-2.5-7b-instruct", gpu=GPU,
                       server=ServerSettings(max_num_seqs=96, max_model_len=8192),
                       adapters=tuple(Adapter(f"a{i}", 8, 0.1) for i in range(3)))
    plan = _plan(GpuPlan(("a0", "a1"), 2, 2, 8, max_num_seqs=12, gpu_memory_utilization=0.61),
                 GpuPlan(("a2",), 1, 1, 8))
    for fmt in ("shell", "compose", "k8s"):
        dep = deployment(problem, plan, format=fmt)
        s0, s1 = dep.servers
        a0, a1 = s0["argv"], s1["argv"]
        assert a0[a0.index("--max-num-seqs") + 1] == "12"
        assert a0[a0.index("--gpu-memory-utilization") + 1] == "0.61"
        assert a1[a1.index("--max-num-seqs") + 1] == "96"  # no field: the instance's
        assert a1[a1.index("--gpu-memory-utilization") + 1] == "0.9"
        assert (s0["max_num_seqs"], s0["gpu_memory_utilization"]) == (12, 0.61)
        if fmt == "shell":
            assert "--max-num-seqs 12 --gpu-memory-utilization 0.61" in dep.text
            assert "--max-num-seqs 96 --gpu-memory-utilization 0.9" in dep.text


def test_verify_simulates_a_gpu_at_its_own_max_num_seqs() -> None:
    """3.5 req/s of 1-second requests: max_num_seqs 16 (the instance's) serves them, 1 serves 1 req/s."""
    problem, ctx = _toy_instance(), _toy_context()
    fixed = verify(problem, _plan(GpuPlan(("a0",), 1, 1, 8)), context=ctx, workers=1)
    tiny = verify(problem, _plan(GpuPlan(("a0",), 1, 1, 8, max_num_seqs=1)), context=ctx, workers=1)
    assert fixed.feasible and fixed.gpus[0]["max_num_seqs"] == 16
    assert not tiny.feasible and tiny.gpus[0]["max_num_seqs"] == 1
    assert tiny.gpus[0]["throughput_tok_s"] == pytest.approx(110.0, rel=0.02)
    assert fixed.gpus[0]["throughput_tok_s"] > 3 * tiny.gpus[0]["throughput_tok_s"]


def test_verify_reports_a_memory_error_at_a_gpus_own_tiny_utilization() -> None:
    problem, ctx = _toy_instance(), _toy_context()
    report = verify(problem, _plan(GpuPlan(("a0",), 1, 1, 8, gpu_memory_utilization=0.05)), context=ctx,
                    workers=1)
    assert not report.feasible and report.gpus[0]["oom"]


# --- tune_batch ---------------------------------------------------------------------------------------------
def test_tune_batch_picks_the_hand_computed_b_opt_and_keeps_the_placement() -> None:
    """Two GPUs at 3.5 and 1.5 req/s: B_opt = 4 and 2 (a batch of B serves B req/s), memory freed."""
    problem, ctx = _toy_instance((3.5, 1.5)), _toy_context()
    plan = _plan(GpuPlan(("a0",), 1, 1, 8), GpuPlan(("a1",), 1, 1, 8))
    tuned, rows = tune_batch(problem, plan, context=ctx)
    assert tuned.num_gpus == plan.num_gpus and [g.adapters for g in tuned.gpus] == [("a0",), ("a1",)]
    assert [(g.max_loras, g.max_cpu_loras, g.max_lora_rank) for g in tuned.gpus] == [(1, 1, 8)] * 2
    assert [g.max_num_seqs for g in tuned.gpus] == [4, 2]
    assert all(r.tuned and r.freed_gib > 0 for r in rows)
    assert all(g.gpu_memory_utilization is not None and g.gpu_memory_utilization < 0.9 for g in tuned.gpus)
    assert verify(problem, tuned, context=ctx, workers=1).feasible


def test_tune_batch_keeps_the_instance_settings_when_there_is_no_b_opt() -> None:
    """30 req/s of 1-second requests: even max_num_seqs 16 starves, so no batch meets the criterion."""
    problem, ctx = _toy_instance((30.0,)), _toy_context()
    tuned, rows = tune_batch(problem, _plan(GpuPlan(("a0",), 1, 1, 8)), context=ctx)
    assert not rows[0].tuned and rows[0].freed_gib == 0.0 and "no B_opt" in rows[0].note
    assert (tuned.gpus[0].max_num_seqs, tuned.gpus[0].gpu_memory_utilization) == (16, 0.9)


def test_tune_batch_never_changes_the_gpu_count_with_the_analytic_oracle(tiny_yaml: Path) -> None:
    """tiny.yaml (1.2 req/s in all) at 0.5 req/s per GPU for the analytic oracle: 3 GPUs, with or without."""
    problem = read_instance(tiny_yaml)
    oracle = make_oracle(problem, "analytic", capacity_rps=0.5)
    plan = solve(problem, "ffd-bisect", oracle=oracle, time_limit=10)
    assert plan.num_gpus == 3
    tuned, rows = tune_batch(problem, plan)
    assert tuned.num_gpus == plan.num_gpus == len(rows)
    assert [g.adapters for g in tuned.gpus] == [g.adapters for g in plan.gpus]
    for g, r in zip(tuned.gpus, rows, strict=True):
        assert g.max_num_seqs is not None and 1 <= g.max_num_seqs <= problem.server.max_num_seqs
        assert g.gpu_memory_utilization is not None
        assert 0 < g.gpu_memory_utilization <= problem.server.gpu_memory_utilization
        assert r.tuned or (g.max_num_seqs, g.gpu_memory_utilization) == (2048, 0.9)


def test_cli_tune_batch_writes_the_fields_and_deploy_emits_them(tiny_yaml: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    code, stdout, err = run_cli("solve", str(tiny_yaml), "--oracle", "analytic", "--tune-batch", "--workers",
                                "1", "--out", str(out), "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["num_gpus"] == 1 and len(doc["tune_batch"]) == 1
    g = Result.load(out).gpus[0]
    assert g.max_num_seqs == doc["tune_batch"][0]["max_num_seqs"]
    code, stdout, err = run_cli("deploy", str(tiny_yaml), str(out), "--json")
    assert code == 0, err
    argv = json.loads(stdout)["servers"][0]["argv"]
    assert argv[argv.index("--max-num-seqs") + 1] == str(g.max_num_seqs)
    assert argv[argv.index("--gpu-memory-utilization") + 1] == f"{g.gpu_memory_utilization:g}"
    code, stdout, err = run_cli("verify", str(tiny_yaml), str(out), "--json")
    assert code == 0, err
    assert json.loads(stdout)["gpus"][0]["max_num_seqs"] == g.max_num_seqs


# --- the batch as a decision variable of the oracle -------------------------------------------------------
TPOT20 = Slo(tpot_p99_ms=20.0)  # TTFT p99 ≤ 2 s and served ≥ 0.9 as by default


def _tpot_context() -> Context:
    """The toy with a step of 10 ms + 1 ms per running sequence: a batch of B decodes at ≤ 10 + B ms/token."""
    prof = _toy_context().profile
    assert prof is not None
    return Context(profile=dataclasses.replace(prof, step=StepModel(base_ms=10.0, per_seq_ms=1.0)))


def test_the_twin_oracle_chooses_a_smaller_batch_where_the_default_fails_tpot() -> None:
    """3 req/s of 100-token answers, TPOT p99 ≤ 20 ms. At the instance's cap of 16 the Poisson bursts push the
    batch past 10 sequences (TPOT > 20 ms). A cap of 8 keeps TPOT ≤ 10 + 8 = 18 ms and serves up to
    8 / (100 × 18 ms) = 4.4 req/s > 3; a cap of 4 serves at most 4 / (100 × 14 ms) = 2.9 req/s < 3 (the
    queue grows: TTFT fails). So the oracle must pick 8, at the smallest utilisation holding 8 requests of 110
    tokens (+10 %): 976 KV tokens (61 blocks of 16); 50,000 − 2·8 − 4 + (u − 0.9)·102,400 ≥ 976 gives
    u = 0.422."""
    problem, ctx = _toy_instance((3.0,)).replace(slo=TPOT20), _tpot_context()
    plain = make_oracle(problem, "twin", context=ctx, batch_floor=2).evaluate(problem, [0])
    assert not plain.feasible and plain.max_num_seqs is None and "worst latency" in plain.reason
    oracle = make_oracle(problem, "twin", context=ctx, tune_batch=True, batch_floor=2)
    assert oracle.batch_grid(problem) == (16, 8, 4, 2)
    verdict = oracle.evaluate(problem, [0])
    assert verdict.feasible and verdict.batch == (8, 0.422)
    gpu = verdict.gpu_plan(["a0"])
    assert (gpu.max_num_seqs, gpu.gpu_memory_utilization) == (8, 0.422)
    assert verify(problem, _plan(gpu), context=ctx, workers=1).feasible


def test_a_set_feasible_at_the_instance_batch_keeps_the_verdict_without_the_flag() -> None:
    problem, ctx = _toy_instance((1.5,)).replace(slo=TPOT20), _tpot_context()
    off = make_oracle(problem, "twin", context=ctx).evaluate(problem, [0])
    on = make_oracle(problem, "twin", context=ctx, tune_batch=True, batch_floor=2).evaluate(problem, [0])
    assert off.feasible and on == off and on.batch is None


def test_a_set_that_starves_is_not_searched_at_smaller_caps() -> None:
    """30 req/s cannot be served at the instance's cap: a smaller cap only serves less, so no cap is tried."""
    problem, ctx = _toy_instance((30.0,)).replace(slo=TPOT20), _tpot_context()
    oracle = make_oracle(problem, "twin", context=ctx, tune_batch=True, batch_floor=2)
    verdict = oracle.evaluate(problem, [0])
    assert not verdict.feasible and oracle.predictions == 1


def test_place_with_batch_saves_a_gpu_where_a_smaller_batch_holds_the_tpot_bound() -> None:
    """Two adapters at 1.5 req/s: alone each passes at the cap of 16, together they fail TPOT as above; with
    the batch searched they share one GPU at a cap of 8 (twin-verified), then the advisor refines it."""
    problem, ctx = _toy_instance((1.5, 1.5)).replace(slo=TPOT20), _tpot_context()
    oracle = make_oracle(problem, "twin", context=ctx, batch_floor=2)
    plan = solve(problem, "ffd-bisect", oracle=oracle, time_limit=60)
    assert plan.num_gpus == 2
    out = place_with_batch(problem, plan, oracle, context=ctx, time_limit=60)
    assert (out.gpus_fixed, out.gpus_searched, out.adopted) == (2, 1, True)
    g = out.plan.gpus[0]
    assert out.plan.num_gpus == 1 and g.max_num_seqs is not None and g.max_num_seqs <= 8
    assert g.gpu_memory_utilization is not None and g.gpu_memory_utilization < 0.9
    assert verify(problem, out.plan, context=ctx, workers=1).feasible


def test_place_with_batch_keeps_the_plan_without_the_flag_when_it_saves_nothing(tiny_yaml: Path) -> None:
    """The analytic oracle has no latency model: the batch changes nothing, so the plan stays (3 GPUs)."""
    problem = read_instance(tiny_yaml)
    oracle = make_oracle(problem, "analytic", capacity_rps=0.5)
    plan = solve(problem, "ffd-bisect", oracle=oracle, time_limit=10)
    out = place_with_batch(problem, plan, oracle, time_limit=10)
    assert (out.gpus_fixed, out.gpus_searched, out.adopted) == (3, 3, False)
    assert [g.adapters for g in out.plan.gpus] == [g.adapters for g in plan.gpus]
    assert "kept" in out.note


class _Bundle:
    name = "fake"

    def __init__(self, span: tuple[float, float] | None) -> None:
        self.span = span

    def trained_range(self, feature: str) -> tuple[float, float] | None:
        return self.span if feature == "max_num_seqs" else None


def test_the_surrogate_oracle_searches_the_batch_only_within_the_trained_range() -> None:
    problem = _toy_instance().replace(server=ServerSettings(max_num_seqs=2048, max_model_len=256))
    inside = make_oracle(problem, "surrogate", bundle=_Bundle((256.0, 1024.0)), tune_batch=True)
    assert inside.batch_grid(problem) == (2048, 1024, 512, 256) and inside.batch_note(problem) is None
    untrained = make_oracle(problem, "surrogate", bundle=_Bundle(None), tune_batch=True)
    assert untrained.batch_grid(problem) == (2048,)
    note = untrained.batch_note(problem)
    assert note is not None and "\n" not in note and "not trained" in note
    off = make_oracle(problem, "surrogate", bundle=_Bundle((256.0, 1024.0)))
    assert off.batch_grid(problem) == (2048,) and off.batch_note(problem) is None


@pytest.mark.parametrize("floor", [0, -1, 2.5, True])
def test_a_bad_batch_floor_is_an_input_error_naming_the_field(floor: Any) -> None:
    with pytest.raises(InputError) as exc:
        make_oracle(None, "analytic", batch_floor=floor)
    assert "batch_floor" in str(exc.value) and repr(floor) in str(exc.value)


def test_cli_tune_batch_with_the_untrained_surrogates_says_so_in_one_line(tiny_yaml: Path) -> None:
    code, stdout, err = run_cli("solve", str(tiny_yaml), "--tune-batch", "--workers", "1", "--json")
    assert code == 0, err
    search = json.loads(stdout)["batch_search"]
    assert search["gpus_searched"] is None and not search["adopted"]
    assert "not trained" in search["note"] and "\n" not in search["note"]


def test_cli_deploy_of_a_plan_with_a_broken_per_gpu_field_is_a_one_line_error(tiny_yaml: Path,
                                                                               tmp_path: Path) -> None:
    problem = read_instance(tiny_yaml)
    d = _plan(GpuPlan(tuple(problem.ids), len(problem.ids), len(problem.ids), 64)).to_dict()
    d["gpus"][0]["max_num_seqs"] = 0
    bad = tmp_path / "plan.json"
    bad.write_text(json.dumps(d))
    code, _, err = run_cli("deploy", str(tiny_yaml), str(bad))
    assert code == 2
    line = err.strip()
    assert "\n" not in line and "plan.json" in line and "gpus[0].max_num_seqs" in line and "0" in line
