"""Replicas per GPU in plans: the JSON round trip (with and without replicas), the twin-checked merge of
``placer solve --replicas-per-gpu``, verification and deployment of a replicated GPU, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from placer.check.evaluate import check_plan
from placer.check.verify import verify
from placer.context import Context
from placer.deploy import deployment
from placer.replicas import merge_replicas
from placer.result import GpuPlan, ReplicaPlan, Result
from twin.errors import InputError
from twin.profile import MemoryModel, Profile, StepModel
from twin.spec import Adapter, Instance, Lengths, ServerSettings, Slo, Workload

LLAMA, GPU = "llama-3.1-8b-instruct", "h100-64gb"
MIB = 2**20


def _context(host_ms: float) -> Context:
    """A 10 ms forward pass per step whatever the batch, plus ``host_ms`` of host time; 1 MiB of KV per
    token on a 100 GiB GPU: 50,000 KV tokens at 0.9, 3,920 at 0.45 (room for 16 requests of 110 tokens)."""
    mem = MemoryModel(kv_base_tokens=50_000, kv_per_slot_rank=2.0, kv_per_slot=4.0, kv_bytes_per_token=MIB,
                      gpu_mem_gib=100.0)
    return Context(profile=Profile(model=LLAMA, gpu=GPU, max_model_len=256, memory=mem,
                                   step=StepModel(base_ms=10.0, per_seq_ms=0.0, sched_base_ms=host_ms)))


def _problem(rate_each: float, max_num_seqs: int = 16, max_model_len: int = 256) -> Instance:
    lengths = Lengths(kind="normal", input_mean=10, input_std=0, output_mean=100, output_std=0)
    return Instance(name="rep", model=LLAMA, gpu=GPU, adapters=(Adapter("a", 8, rate_each), Adapter("b", 8,
                                                                                                    rate_each)),
                    server=ServerSettings(max_num_seqs=max_num_seqs, max_model_len=max_model_len),
                    workload=Workload(duration_s=300.0, lengths=lengths),
                    slo=Slo(ttft_p99_s=None, tpot_p99_ms=None))


TWO = Result(solver="hand", status="optimal", num_gpus=2, lower_bound=2, runtime_s=0.0, gpus=(
    GpuPlan(("a",), max_loras=1, max_cpu_loras=1, max_lora_rank=8, offered_tok_s=220.0),
    GpuPlan(("b",), max_loras=1, max_cpu_loras=1, max_lora_rank=8, offered_tok_s=220.0)))


def test_plan_round_trip_with_and_without_replicas() -> None:
    plain = TWO.to_dict()
    assert all("replicas" not in g for g in plain["gpus"])  # old format unchanged without replicas
    assert Result.from_dict(json.loads(json.dumps(plain))) == TWO
    rep = TWO.replace(num_gpus=1, gpus=(GpuPlan(("a", "b"), 2, 2, 8, replicas=(
        ReplicaPlan(("a",), 1, 1, 8, 0.45), ReplicaPlan(("b",), 1, 1, 8, 0.45, max_num_seqs=8))),))
    doc = json.loads(json.dumps(rep.to_dict()))
    assert doc["gpus"][0]["replicas"][1] == {"adapters": ["b"], "max_loras": 1, "max_cpu_loras": 1,
                                             "max_lora_rank": 8, "gpu_memory_utilization": 0.45,
                                             "max_num_seqs": 8}
    assert "max_num_seqs" not in doc["gpus"][0]["replicas"][0]
    assert Result.from_dict(doc) == rep


@pytest.mark.parametrize(("change", "field"), [
    ({"replicas": [{"adapters": ["a"], "max_loras": 1, "max_cpu_loras": 1, "max_lora_rank": 8,
                    "gpu_memory_utilization": 0.45}]}, "gpus[0].replicas"),  # one server is no replica list
    ({"replicas": [{"adapters": ["a"], "max_loras": 1, "max_cpu_loras": 1, "max_lora_rank": 8,
                    "gpu_memory_utilization": 0.6}, {"adapters": ["b"], "max_loras": 1, "max_cpu_loras": 1,
                                                     "max_lora_rank": 8, "gpu_memory_utilization": 0.6}]},
     "gpus[0].replicas"),  # 1.2 of the GPU
    ({"replicas": [{"adapters": ["a"], "max_loras": 0, "max_cpu_loras": 1, "max_lora_rank": 8,
                    "gpu_memory_utilization": 0.4}, {"adapters": ["b"], "max_loras": 1, "max_cpu_loras": 1,
                                                     "max_lora_rank": 8, "gpu_memory_utilization": 0.4}]},
     "gpus[0].replicas[0].max_loras"),
    ({"replicas": [{"adapters": ["a"], "max_loras": 1, "max_cpu_loras": 1, "max_lora_rank": 8,
                    "gpu_memory_utilization": 0.4}, {"adapters": ["a"], "max_loras": 1, "max_cpu_loras": 1,
                                                     "max_lora_rank": 8, "gpu_memory_utilization": 0.4}]},
     "gpus[0].replicas"),  # b on no server, a on two
])
def test_bad_replica_lists_name_the_field(change: dict, field: str) -> None:
    doc = {"solver": "hand", "status": "feasible", "num_gpus": 1,
           "gpus": [{"adapters": ["a", "b"], "max_loras": 2, "max_cpu_loras": 2, "max_lora_rank": 8,
                     **change}]}
    with pytest.raises(InputError) as info:
        Result.from_dict(doc, source="p.json")
    assert info.value.field == field and str(info.value).startswith("p.json: ")


def test_merge_accepted_where_host_time_leaves_the_gpu_idle() -> None:
    """2 rps per GPU; one server does 16 requests per (30 + 10) ms × 100 steps = 4 rps. As two replicas the
    forward passes stretch by s < 1.31 (step ≤ 43.1 ms, ≥ 3.7 rps each): both meet the criterion."""
    problem, ctx = _problem(2.0), _context(30.0)
    merged = merge_replicas(problem, TWO, 2, context=ctx)
    assert merged.num_gpus == 1 and merged.status == "feasible" and merged.lower_bound <= 1
    g = merged.gpus[0]
    assert [r.adapters for r in g.replicas] == [("a",), ("b",)]
    assert [r.gpu_memory_utilization for r in g.replicas] == [0.45, 0.45]
    assert g.offered_tok_s == 440.0 and (g.max_loras, g.max_cpu_loras, g.max_lora_rank) == (2, 2, 8)
    assert merged.extra["replicas"] == {"per_gpu": 2, "gpus_saved": 1, "twin_checks": 1,
                                        "gpus_with_replicas": 1}
    assert check_plan(problem, merged, ctx.profile) == []
    report = verify(problem, merged, context=ctx, workers=1)
    assert report.feasible and len(report.gpus[0]["replicas"]) == 2
    row = report.gpus[0]  # totals over the replicas: the load that arrived (Poisson, ~440 tok/s), served
    assert row["offered_tok_s"] == pytest.approx(440.0, rel=0.1)
    assert row["throughput_tok_s"] >= 0.9 * row["offered_tok_s"]
    # --replicas-per-gpu 1 changes nothing
    assert merge_replicas(problem, TWO, 1, context=ctx) is TWO


def test_merge_refused_when_the_gpu_is_the_bottleneck_or_memory_is_short() -> None:
    # forward time only, B = 4: one server does 4 rps; at 3 rps each, two replicas would need s ≈ 4 > 2
    saturated = merge_replicas(_problem(3.0, max_num_seqs=4), TWO, 2, context=_context(0.0))
    assert saturated.gpus == TWO.gpus and saturated.extra["replicas"]["twin_checks"] == 1
    # max_model_len 4,096 > the 3,920 tokens of a half GPU: refused by the memory rule
    short = merge_replicas(_problem(2.0, max_model_len=4096), TWO, 2, context=_context(30.0))
    assert short.num_gpus == 2 and short.extra["replicas"]["gpus_saved"] == 0


def test_deploy_runs_one_server_per_replica() -> None:
    problem = _problem(2.0)
    plan = merge_replicas(problem, TWO, 2, context=_context(30.0))
    dep = deployment(problem, plan, format="compose")
    assert [(s["gpu"], s["replica"], s["port"], s["adapters"]) for s in dep.servers] == [
        (0, 0, 8000, ["a"]), (0, 1, 8001, ["b"])]
    assert all(s["gpu_memory_utilization"] == 0.45 for s in dep.servers)
    services = yaml.safe_load(dep.text)["services"]
    assert sorted(services) == ["gpu-0-r0", "gpu-0-r1"]
    assert dep.routes == {"a": "http://localhost:8000", "b": "http://localhost:8001"}
    shell = deployment(problem, plan, format="shell").text
    assert shell.count("CUDA_VISIBLE_DEVICES=0 vllm serve") == 2
    with pytest.raises(InputError, match="shell or compose") as info:
        deployment(problem, plan, format="k8s")
    assert info.value.field == "--format"


def test_cli_rejects_replicas_per_gpu_zero(cli, tiny_yaml: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, err = cli("solve", str(tiny_yaml), "--replicas-per-gpu", "0")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["error: --replicas-per-gpu: must be an integer ≥ 1 (got 0)"]
