"""Calibration: run records, memory fit, step pre-fit and refinement, datasheet profiles, CLI."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from external_data import external_file
from typer.testing import CliRunner

from placer.cli.app import app
from twin.calibration.fit import (
    FitLog,
    Outcome,
    _state,
    effective_step_ms,
    fit_memory,
    fit_output_exponent,
    fit_output_scale,
    fit_profile,
    kv_per_running_request,
    kv_tokens,
    load_kv_table,
    memory_error,
    oom_accuracy,
    prefit_step,
    refine_step,
    scaled_step,
    step_ms,
)
from twin.calibration.runs import RunRecord, format_composition, load_runs, parse_composition
from twin.catalogue import check_model_gpu, list_profiles, load_profile
from twin.errors import InputError
from twin.hardware import MODELS, derived_profile
from twin.profile import StepModel
from twin.spec import Instance

LLAMA = "llama-3.1-8b-instruct"
HEADER = ("source,model,gpu,workload,status,rates_composition,ranks_composition,max_loras,max_cpu_loras,"
          "max_lora_rank,throughput_total,starved\n")


def _csv(tmp_path: Path, rows: list[str]) -> Path:
    p = tmp_path / "runs.csv"
    p.write_text(HEADER + "".join(r + "\n" for r in rows))
    return p


# --------------------------------------------------------------------------------------------- run records
def test_composition_round_trip_and_errors() -> None:
    assert parse_composition("0.025x2|0.1x1") == ((0.025, 2), (0.1, 1))
    assert parse_composition("8x3|16x1", kind=int, field="ranks_composition") == ((8, 3), (16, 1))
    assert format_composition([16, 8, 8, 8]) == "8x3|16x1"
    with pytest.raises(InputError, match="rates_composition"):
        parse_composition("0.1y3")


def test_load_runs_filters_and_builds_exact_instances(tmp_path: Path) -> None:
    p = _csv(tmp_path, [
        f"dt_real,{LLAMA},NVIDIA H100 64GB (x),w,ok,0.1x2|0.05x1,8x2|16x1,2,3,16,100.0,False",
        f"dt_real,{LLAMA},NVIDIA H100 64GB (x),w,oom,0.1x2|0.05x1,8x2|16x1,3,3,16,,",
        f"dt_real,{LLAMA},NVIDIA H100 64GB (x),w,cancelled,0.1x2|0.05x1,8x2|16x1,1,3,16,,",
        f"perf,{LLAMA},h100-64gb,w,ok,0.1x2|0.05x1,8x2|16x1,1,3,16,1.0,False",
    ])
    runs = load_runs(p)
    assert [(r.status, r.max_loras, r.gpu) for r in runs] == [("ok", 2, "h100-64gb"), ("oom", 3, "h100-64gb")]
    assert runs[1].oom and not runs[0].oom and not runs[0].starved
    inst = runs[0].instance(seed=3)
    assert isinstance(inst, Instance) and inst.n_adapters == 3
    assert sorted(a.rate_rps for a in inst.adapters) == [0.05, 0.1, 0.1]
    assert sorted(a.rank for a in inst.adapters) == [8, 8, 16]
    assert inst.workload.duration_s == 3600.0
    assert runs[0].instance(seed=3) == inst  # same seed, same pairing
    pairings = {tuple((a.rank, a.rate_rps) for a in runs[0].instance(seed=s).adapters) for s in range(20)}
    assert len(pairings) > 1  # rank and rate are paired at random


def test_load_runs_rejects_inconsistent_compositions(tmp_path: Path) -> None:
    p = _csv(tmp_path, [f"dt_real,{LLAMA},h100-64gb,w,ok,0.1x2,8x3,2,2,8,1.0,False"])
    with pytest.raises(InputError, match="ranks_composition"):
        load_runs(p)


# --------------------------------------------------------------------------------------------- memory
def test_fit_memory_recovers_a_line_and_keeps_the_table() -> None:
    base = load_profile(LLAMA, "h100-64gb").memory
    rows = [(s, r, int(300_000 - 40 * s * r - 50 * s)) for s in (8, 32, 128) for r in (8, 16, 32)]
    rows.append((256, 32, None))
    mem = fit_memory(rows, base)
    assert mem.kv_base_tokens == pytest.approx(300_000, abs=1)
    assert mem.kv_per_slot_rank == pytest.approx(40, abs=1e-3)
    assert mem.kv_per_slot == pytest.approx(50, abs=1e-3)
    assert kv_tokens(mem, 256, 32) is None  # measured failure wins over the line
    assert kv_tokens(mem, 64, 16) == pytest.approx(300_000 - 40 * 1024 - 50 * 64, abs=2)
    prof = load_profile(LLAMA, "h100-64gb").replace(memory=mem)
    assert memory_error(prof, 256, 32)
    assert not memory_error(prof, 8, 8)
    assert memory_error(prof, 8, 8, max_model_len=400_000)


@pytest.mark.parametrize("model", [LLAMA, "qwen-2.5-7b-instruct"])
def test_memory_fit_is_exact_on_the_measured_kv_table(model: str) -> None:
    rows = load_kv_table(external_file("calibration", "kv_cache.csv"), model)
    prof = load_profile(model, "h100-64gb")
    prof = prof.replace(memory=fit_memory(rows, prof.memory))
    assert oom_accuracy(prof, rows) == (len(rows), len(rows))
    assert oom_accuracy(prof, rows, use_table=False) == (len(rows), len(rows))  # the line alone too


# --------------------------------------------------------------------------------------------- step model
def _synthetic_runs(true: StepModel, n: int = 30) -> list[RunRecord]:
    rng = np.random.default_rng(0)
    runs = []
    for i in range(n):
        B = float(rng.uniform(1, 600))
        slots = int(rng.choice([8, 32, 128]))
        rank = int(rng.choice([16, 32]))
        tin = 10.0 * B
        # the ITL must satisfy ITL = step(B, P = tin * ITL / 1000, ...): fixed point
        itl = 20.0
        for _ in range(50):
            A = min(slots, 64 * (1 - math.exp(-B / 64)))
            itl = float(step_ms(true, B, tin * itl / 1000, B * 420.0, A, rank))
        runs.append(RunRecord(model=LLAMA, gpu="h100-64gb", workload="w", status="ok",
                              rates_composition="0.1x64", ranks_composition="8x64", max_loras=slots,
                              max_cpu_loras=64, max_lora_rank=rank, duration_s=3600.0, tokens_in=tin * 3600,
                              mean_running=B, mean_waiting=0.0 if i % 2 else 1.0, mean_itl_ms=itl,
                              mean_ttft_ms=math.nan, throughput_total=2 * tin))
    return runs


def test_prefit_recovers_the_step_model_that_generated_the_itls() -> None:
    true = StepModel(base_ms=14.0, per_seq_ms=0.1, per_prefill_token_ms=0.03, lora_per_adapter=0.004,
                     lora_ms_per_adapter_rank=0.01)
    runs = _synthetic_runs(true)
    start = StepModel(base_ms=20.0, per_seq_ms=0.05, per_prefill_token_ms=0.01, lora_per_adapter=0.01,
                      lora_per_rank=0.003)
    fitted, rms = prefit_step(runs, start)
    assert rms < 0.01
    assert fitted.lora_per_rank == 0.0  # the additive weight read carries the rank cost
    for name in ("base_ms", "per_seq_ms", "lora_per_adapter", "lora_ms_per_adapter_rank"):
        assert getattr(fitted, name) == pytest.approx(getattr(true, name), rel=0.05), name
    for r in runs[:5]:
        A = min(r.max_loras, 64 * (1 - math.exp(-r.mean_running / 64)))
        P = r.tokens_in / 3600 * r.mean_itl_ms / 1000
        pred = step_ms(fitted, r.mean_running, P, r.mean_running * 420, A, r.max_lora_rank)
        assert pred == pytest.approx(r.mean_itl_ms, rel=0.02)


def test_prefit_with_adapter_sq_recovers_the_square_term_and_profiles_omit_it_when_zero() -> None:
    true = StepModel(base_ms=14.0, per_seq_ms=0.1, per_prefill_token_ms=0.03, lora_per_adapter=0.004,
                     lora_ms_per_adapter_rank=0.01, lora_ms_per_adapter_sq=0.003)
    runs = _synthetic_runs(true)
    start = StepModel(base_ms=20.0, per_seq_ms=0.05)
    fitted, rms = prefit_step(runs, start, adapter_sq=True)
    assert rms < 0.01
    for name in ("base_ms", "lora_per_adapter", "lora_ms_per_adapter_sq"):
        assert getattr(fitted, name) == pytest.approx(getattr(true, name), rel=0.1), name
    plain, rms_plain = prefit_step(runs, replace(start, lora_ms_per_adapter_sq=1.0))
    assert plain.lora_ms_per_adapter_sq == 0.0 and rms_plain > 2 * rms  # off: the term is not fitted
    prof = load_profile(LLAMA, "h100-64gb")
    assert "lora_ms_per_adapter_sq" not in prof.to_dict()["step"]  # v1.2 files and fingerprints unchanged
    with_sq = prof.replace(step=fitted)
    assert type(prof).from_dict(with_sq.to_dict()).step == fitted
    assert scaled_step(fitted, 1.0, 2.0).lora_ms_per_adapter_sq == pytest.approx(0.006, rel=0.1)


def test_prefit_targets_the_effective_step_time_where_tokens_were_counted() -> None:
    # 100 running requests, 4,000 output tokens/s -> 25 ms per step, whatever the clients' mean ITL says
    run = RunRecord(model=LLAMA, gpu="h100-64gb", workload="w", status="ok", rates_composition="1x8",
                    ranks_composition="8x8", max_loras=8, max_cpu_loras=8, max_lora_rank=8, duration_s=100.0,
                    tokens_out=400_000.0, tokens_in=450_000.0, mean_running=100.0, mean_itl_ms=30.0)
    assert effective_step_ms(run) == pytest.approx(25.0)
    assert _state([run])["step"][0] == pytest.approx(25.0)
    assert _state([run], target="itl")["step"][0] == pytest.approx(30.0)
    no_count = replace(run, tokens_out=math.nan)
    assert math.isnan(effective_step_ms(no_count)) and _state([no_count])["step"][0] == pytest.approx(30.0)


def _saturated_runs(n: int) -> list[RunRecord]:
    return [RunRecord(model=LLAMA, gpu="h100-64gb", workload="w", status="ok", rates_composition="1x8",
                      ranks_composition="8x8", max_loras=8, max_cpu_loras=8, max_lora_rank=8,
                      throughput_total=1000.0 * (1 + i / 10), ideal_throughput=5000.0, starved_real=1.0,
                      mean_itl_ms=50.0, run_name=f"r{i}") for i in range(n)]


def test_refine_finds_the_step_scale_that_matches_throughput() -> None:
    prof = load_profile(LLAMA, "h100-64gb")
    runs = _saturated_runs(6)
    base_ms = prof.step.base_ms

    def fake(run: RunRecord, p: object, seed: int, window: float | None) -> Outcome:
        scale = p.step.base_ms / base_ms  # type: ignore[attr-defined]
        thr = run.throughput_total * 1.2 / scale  # the twin is 20 % fast at scale 1: best scale is 1.2
        return Outcome(thr, 5000.0, True, False, itl_ms=50.0 * scale / 1.2)

    log = FitLog()
    out = refine_step(prof, runs, fake, n_runs=6, max_evals=30, log=log)
    assert out.step.base_ms / base_ms == pytest.approx(1.2, rel=0.01)
    assert 0 < len(log.evaluations) <= 30
    assert scaled_step(prof.step, 2.0, 1.0).per_seq_ms == pytest.approx(2 * prof.step.per_seq_ms)


def test_refine_batch_also_finds_the_per_sequence_scale() -> None:
    # a fake twin whose throughput is right only when per_seq_ms is 1.5× the profile's and the rest unchanged
    prof = load_profile(LLAMA, "h100-64gb")
    runs = _saturated_runs(6)
    s0 = prof.step

    def fake(run: RunRecord, p: object, seed: int, window: float | None) -> Outcome:
        st = p.step  # type: ignore[attr-defined]
        i = int(run.run_name[1:])  # even runs see the step scale, odd runs the per-sequence share
        share = (st.per_seq_ms / st.base_ms) / (s0.per_seq_ms / s0.base_ms)
        miss = st.base_ms / s0.base_ms if i % 2 == 0 else share / 1.5
        return Outcome(run.throughput_total * miss, 5000.0, True, False)

    plain = refine_step(prof, runs, fake, n_runs=6, max_evals=40)
    batch = refine_step(prof, runs, fake, n_runs=6, max_evals=40, refine_batch=True)
    assert plain.step.per_seq_ms / plain.step.base_ms == pytest.approx(s0.per_seq_ms / s0.base_ms, rel=1e-4)
    assert batch.step.per_seq_ms / s0.per_seq_ms == pytest.approx(1.5, rel=0.03)
    assert batch.step.base_ms / s0.base_ms == pytest.approx(1.0, rel=0.03)


def test_output_scale_is_the_median_eos_shortfall_of_unsaturated_runs() -> None:
    def run(tokens_out: float, completed: float, waiting: float) -> RunRecord:
        return RunRecord(model=LLAMA, gpu="h100-64gb", workload="w", status="ok", rates_composition="1x8",
                         ranks_composition="8x8", max_loras=8, max_cpu_loras=8, max_lora_rank=8,
                         completed=completed, tokens_out=tokens_out, mean_waiting=waiting)

    ref = 196.5  # the ShareGPT law's reference output mean for Llama
    runs = [run(0.95 * ref * 1000, 1000, 0.0), run(0.97 * ref * 1000, 1000, 0.5),
            run(0.96 * ref * 500, 500, 0.0), run(0.5 * ref * 1000, 1000, 300.0),  # saturated: ignored
            run(0.5 * ref * 50, 50, 0.0)]                                         # too few requests
    assert fit_output_scale(runs, LLAMA) == pytest.approx(0.96)
    assert fit_output_scale(runs[:2], LLAMA) == 1.0  # fewer than 3 usable runs: no shortfall


def test_output_exponent_is_recovered_from_the_kv_cache_held_per_running_request() -> None:
    from twin.engine import kv_capacity_tokens

    prof = load_profile(LLAMA, "h100-64gb")
    truth = prof.replace(output_exponent=0.7)
    held = kv_per_running_request(truth)
    assert held < kv_per_running_request(prof) - 30  # a thinner tail holds less KV per request

    def run(slots: int, running: float, waiting: float) -> RunRecord:
        kv = kv_capacity_tokens(prof, slots, 16)
        return RunRecord(model=LLAMA, gpu="h100-64gb", workload="w", status="ok", rates_composition="1x8",
                         ranks_composition="16x8", max_loras=slots, max_cpu_loras=slots, max_lora_rank=16,
                         mean_running=running, mean_waiting=waiting, mean_kv_usage=held * running / kv)

    runs = [run(8, 40.0, 0.0), run(16, 80.0, 0.2), run(32, 120.0, 0.0), run(8, 900.0, 5000.0)]
    assert fit_output_exponent(runs, prof) == pytest.approx(0.7, abs=0.005)
    assert fit_output_exponent(runs[:2], prof) == 1.0  # too few unsaturated runs


def test_profile_output_scale_round_trips_and_defaults_to_one() -> None:
    prof = load_profile(LLAMA, "h100-64gb").replace(output_scale=0.9)
    d = prof.to_dict()
    assert type(prof).from_dict(d).output_scale == 0.9
    del d["output_scale"]  # profiles written before the field existed
    assert type(prof).from_dict(d).output_scale == 1.0


# --------------------------------------------------------------------------------------------- datasheets
def test_datasheet_profiles_are_flagged_and_resolvable() -> None:
    assert MODELS[LLAMA].kv_bytes_per_token == 131072
    assert MODELS["qwen-2.5-7b-instruct"].kv_bytes_per_token == 57344
    qwen = derived_profile("qwen-2.5-7b-instruct", "h100-64gb", reference=load_profile(LLAMA, "h100-64gb"))
    assert qwen.memory.kv_per_slot_rank == pytest.approx(88.0, abs=0.5)  # measured: 88 tokens per slot·rank
    from twin.catalogue import UncalibratedProfileWarning

    load_profile.cache_clear()  # the warning is emitted once per process and pair
    with pytest.warns(UncalibratedProfileWarning, match="UNCALIBRATED"):
        prof = load_profile("mistral-7b-instruct-v0.3", "h100-80gb")
    assert prof.calibrated is False and prof.notes.startswith("UNCALIBRATED")
    assert prof.memory.kv_base_tokens > load_profile(LLAMA, "h100-64gb").memory.kv_base_tokens
    check_model_gpu("qwen-2.5-14b-instruct", "l40s-48gb")
    with pytest.raises(InputError, match="unknown GPU profile"):
        check_model_gpu(LLAMA, "tpu-v5")
    flags = {(r["model"], r["gpu"]): r["calibrated"] for r in list_profiles()}
    assert flags[("gemma-2-9b-it", "h200-141gb")] is False


def test_cli_profiles_and_calibrate_without_refinement(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["twin", "profiles", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert any(not r["calibrated"] and r["gpu"] == "h200-141gb" for r in rows)
    runs = _synthetic_runs(StepModel(base_ms=14.0, per_seq_ms=0.1, per_prefill_token_ms=0.03), n=8)
    import pandas as pd

    from twin.calibration.runs import runs_frame

    runs = [replace(r, run_name=f"r{i}", max_loras=8, max_lora_rank=16) for i, r in enumerate(runs)]
    df = runs_frame(runs).drop(columns=["starved"])
    df["source"] = "collected"
    df.to_csv(tmp_path / "runs.csv", index=False)
    pd.DataFrame({"model": [LLAMA] * 3, "max_loras": [8, 64, 512], "max_lora_rank": [16, 16, 64],
                  "kv_cache_tokens": [300000, 250000, None]}).to_csv(tmp_path / "kv_cache.csv", index=False)
    out = tmp_path / "p.json"
    res = runner.invoke(app, ["twin", "calibrate", str(tmp_path / "runs.csv"), "--model", LLAMA, "--gpu",
                              "h100-64gb", "--out", str(out), "--no-refine", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["oom_accuracy"].split("/")[0] == summary["oom_accuracy"].split("/")[1]
    saved = json.loads(out.read_text())
    assert saved["calibrated"] is True and saved["memory"]["table"][-1] == [512, 64, None]
    assert "in_batch_eviction" not in saved["step"] and "lora_ms_per_adapter_sq" not in saved["step"]
    res = runner.invoke(app, ["twin", "calibrate", str(tmp_path / "runs.csv"), "--model", LLAMA, "--gpu",
                              "h100-64gb", "--out", str(out), "--no-refine", "--in-batch-eviction",
                              "--adapter-sq", "--json"])
    assert res.exit_code == 0, res.output
    step = json.loads(out.read_text())["step"]
    assert step["in_batch_eviction"] is True  # --adapter-sq's fit itself: the pre-fit test above
    res = runner.invoke(app, ["twin", "calibrate", str(tmp_path / "runs.csv"), "--model", LLAMA, "--gpu",
                              "h100-64gb", "--out", str(out), "--w-tail", "-1"])
    assert isinstance(res.exception, InputError) and res.exception.field == "w_tail"


@pytest.mark.slow
@pytest.mark.parametrize("model", [LLAMA, "qwen-2.5-7b-instruct"])
def test_shipped_profile_is_what_calibrate_fits_on_the_real_runs(model: str, tmp_path: Path) -> None:
    # the shipped profile is reproducible: `placer twin calibrate real_runs.csv` (seed 0) gives its numbers
    out = tmp_path / "p.json"
    runs = external_file("calibration", "real_runs.csv")
    res = CliRunner().invoke(app, ["twin", "calibrate", str(runs), "--model", model, "--gpu", "h100-64gb",
                                   "--out", str(out), "--fit-scrape", "--scrape-intake-only", "--json"])
    assert res.exit_code == 0, res.output
    fitted, shipped = json.loads(out.read_text()), load_profile(model, "h100-64gb").to_dict()
    assert fitted["step"] == pytest.approx(shipped["step"], rel=1e-6)
    assert fitted["memory"] == shipped["memory"]
    assert fitted["output_scale"] == shipped["output_scale"]
    assert fitted["output_exponent"] == shipped["output_exponent"]


# ------------------------------------------------------------------------ metrics scraper, prefill spread
def test_fit_scrape_recovers_the_stall_line_from_poller_intervals() -> None:
    # Three unstarved runs whose twin label sets / names are given by a stub re-simulation, and whose poller
    # intervals are 2 s + (5 ms + 12 µs/series + 0.2 µs/name): the fit recovers the three costs; a starved
    # run and a run without poller samples are not used.
    from twin.calibration.fit import METRICS_POLL_PAUSE_S, fit_scrape, measured_scrape_ms

    state = {"a": (1000.0, 20_000.0), "b": (8000.0, 60_000.0), "c": (3000.0, 900_000.0), "d": (1.0, 1.0)}

    def run(name: str, starved: float = 0.0, samples: float = 0.0) -> RunRecord:
        series, names = state[name]
        ms = 5.0 + 0.012 * series + 0.0002 * names
        n = samples or 1001.0
        return RunRecord(model=LLAMA, gpu="h100-64gb", workload=name, status="ok", rates_composition="0.1x8",
                         ranks_composition="16x8", max_loras=8, max_cpu_loras=8, max_lora_rank=16,
                         starved_real=starved, npy_samples=n, npy_span_s=(n - 1) * (2.0 + ms / 1000))

    def stub(r: RunRecord, prof, seed, window):  # type: ignore[no-untyped-def]
        assert prof.step.metrics_scrape_interval_s == METRICS_POLL_PAUSE_S
        assert prof.step.metrics_scrape_base_ms == 0.0  # a zero-cost probe
        series, names = state[r.workload]
        return Outcome(throughput=1.0, offered=1.0, starved=False, oom=False, scrapes=10,
                       scrape_series_mean=series, scrape_names_mean=names)

    runs = [run("a"), run("b"), run("c"), run("d", starved=1.0), replace(run("d"), npy_samples=math.nan)]
    assert measured_scrape_ms(runs[0]) == pytest.approx(5.0 + 12.0 + 4.0)
    assert math.isnan(measured_scrape_ms(runs[-1]))
    fit = fit_scrape(load_profile(LLAMA, "h100-64gb"), runs, stub)
    assert fit.keys == [r.key for r in runs[:3]]
    assert fit.step.metrics_scrape_interval_s == 2.0
    assert fit.step.metrics_scrape_base_ms == pytest.approx(5.0, abs=1e-3)
    assert fit.step.metrics_scrape_us_per_series == pytest.approx(12.0, abs=1e-3)
    assert fit.step.metrics_scrape_us_per_name == pytest.approx(0.2, abs=1e-4)
    assert fit.predicted_ms() == pytest.approx(fit.measured_ms, rel=1e-4)
    with pytest.raises(InputError, match="needs ≥ 3"):
        fit_scrape(load_profile(LLAMA, "h100-64gb"), runs[:2], stub)


def test_prefill_cost_from_the_ttft_spread_of_light_runs_with_few_adapters() -> None:
    # the ShareGPT law's prompts: median 161, p99 1024+ tokens (864 apart); spreads of 30, 36 and 33 ms over
    # light runs with ≤ 16 adapters -> median 33/864 ms per token; a 64-adapter run (scraper stalls in its
    # p99) and a loaded one are left out; fewer than 3 usable runs -> None.
    from twin.calibration.fit import prefill_cost_from_ttft_spread

    def run(n: int, spread: float, running: float = 2.0) -> RunRecord:
        return RunRecord(model=LLAMA, gpu="h100-64gb", workload="w", status="ok",
                         rates_composition=f"0.1x{n}", ranks_composition=f"16x{n}", max_loras=8,
                         max_cpu_loras=n, max_lora_rank=16, median_ttft_ms=30.0, p99_ttft_ms=30.0 + spread,
                         mean_running=running, mean_waiting=0.0)

    runs = [run(8, 30.0), run(16, 36.0), run(8, 33.0), run(64, 300.0), run(8, 200.0, running=40.0)]
    assert prefill_cost_from_ttft_spread(runs, LLAMA) == pytest.approx(33.0 / 864)
    assert prefill_cost_from_ttft_spread(runs[:2], LLAMA) is None


def test_replay_adds_the_clients_poller_only_where_the_profile_prices_scrapes() -> None:
    # A calibration run with poller samples is replayed with its client's 2 s poller when the profile
    # carries fitted scrape costs and no scraper of its own; otherwise the profile is used as it is.
    from twin.calibration.replay import METRICS_POLL_PAUSE_S, harness_profile

    shipped = load_profile(LLAMA, "h100-64gb")
    assert shipped.has_scrape_costs and shipped.step.metrics_scrape_interval_s == 0.0
    polled = RunRecord(model=LLAMA, gpu="h100-64gb", workload="w", status="ok", rates_composition="0.1x8",
                       ranks_composition="16x8", max_loras=8, max_cpu_loras=8, max_lora_rank=16,
                       npy_samples=100.0, npy_span_s=220.0)
    unpolled = replace(polled, npy_samples=math.nan, npy_span_s=math.nan)
    assert harness_profile(polled, shipped).step.metrics_scrape_interval_s == METRICS_POLL_PAUSE_S
    assert harness_profile(unpolled, shipped) is shipped
    own = shipped.with_scraper(15.0)
    assert harness_profile(polled, own) is own
    free = shipped.without_scrape_costs()
    assert harness_profile(polled, free) is free


def test_step_fit_ignores_scrape_costs_and_carries_them_over() -> None:
    # Refitting from a profile that carries scrape costs gives the step model a profile without them gives
    # (the stalls hold the frontend, not the engine); without --fit-scrape the costs are carried over.
    runs = load_runs(external_file("calibration", "real_runs.csv"), model=LLAMA, source="dt_real")
    priced = load_profile(LLAMA, "h100-64gb")
    free = priced.without_scrape_costs()
    a = fit_profile(runs, priced, rerun=None).profile.step
    b = fit_profile(runs, free, rerun=None).profile.step
    assert replace(a, metrics_scrape_base_ms=0.0, metrics_scrape_us_per_series=0.0,
                   metrics_scrape_us_per_name=0.0) == b
    assert a.metrics_scrape_us_per_series == priced.step.metrics_scrape_us_per_series > 0
    assert not b.metrics_scrape_us_per_series
