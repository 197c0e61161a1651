"""The real-serving harness against a loopback stand-in for vLLM (tests/fake_vllm_server.py)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
from fake_vllm_server import FakeVllm

from twin.calibration.harness import (
    RECORD_COLUMNS,
    Collect,
    collect,
    launch,
    looks_oom,
    vllm_command,
    write_records,
)
from twin.calibration.http import metric_sum, parse_prometheus, post_stream
from twin.calibration.runs import load_runs
from twin.errors import InputError
from twin.spec import Adapter, Instance, Lengths, Workload

LLAMA = "llama-3.1-8b-instruct"


def _instance(window: float = 1.5, rate: float = 12.0) -> Instance:
    return Instance(
        name="loop", model=LLAMA, gpu="h100-64gb",
        adapters=(Adapter("a0", 8, rate), Adapter("a1", 16, rate / 2), Adapter("a2", 8, rate / 2)),
        workload=Workload(duration_s=window, lengths=Lengths(kind="normal", input_mean=20, input_std=5,
                                                             output_mean=12, output_std=3)),
    )


def test_prometheus_parsing_and_fallback_names() -> None:
    text = ('# HELP x\nvllm:num_requests_running{model_name="m"} 3\n'
            'vllm:gpu_cache_usage_perc{model_name="m"} 0.25\n'
            'vllm:lora_requests_info{max_lora="8",running_lora_adapters="a,b",'
            'waiting_lora_adapters=""} 1.7e9\n')
    s = parse_prometheus(text)
    assert metric_sum(s, "vllm:num_requests_running") == 3.0
    assert metric_sum(s, "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc") == 0.25
    assert math.isnan(metric_sum(s, "vllm:num_requests_waiting"))
    assert [lab["running_lora_adapters"] for n, lab, _ in s if n == "vllm:lora_requests_info"] == ["a,b"]


def test_streaming_client_reads_chunked_sse() -> None:
    async def go(url: str) -> list[dict[str, object]]:
        payload = {"model": "a0", "prompt": "hi hi", "max_tokens": 5, "stream": True,
                   "stream_options": {"include_usage": True}}
        return [e async for e in post_stream(url, "/v1/completions", payload)]

    with FakeVllm(["a0"], token_delay_s=0.001, max_seconds=10).running_at() as url:
        events = asyncio.run(go(url))
    assert sum(1 for e in events if e.get("choices")) == 5
    assert events[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}


@pytest.mark.parametrize("style", ["new", "old"])
def test_collect_against_loopback_server_writes_a_calibration_record(tmp_path: Path, style: str) -> None:
    inst = _instance()
    fake = FakeVllm(inst.ids, max_loras=2, token_delay_s=0.004, max_seconds=20, metric_style=style)
    with fake.running_at() as url:
        row = collect(Collect(inst, max_loras=2, scrape_s=0.1, seed=1, workload_label="loop"), url=url)
    assert row["status"] == "ok" and row["source"] == "collected"
    assert set(RECORD_COLUMNS) <= set(row)
    assert row["rates_composition"] == "6x2|12x1" and row["ranks_composition"] == "8x2|16x1"
    assert (row["max_loras"], row["max_cpu_loras"], row["max_lora_rank"]) == (2, 3, 16)
    assert 0 < row["completed"] <= row["dt_arrivals"]
    assert row["throughput_total"] == pytest.approx((row["tokens_in"] + row["tokens_out"]) / 1.5)
    assert row["ideal_throughput"] >= row["throughput_total"] * 0.5
    assert row["mean_itl_ms"] >= 4.0 * 0.9  # at least the server's token delay
    assert row["mean_ttft_ms"] > 0
    assert row["kv_cache_tokens"] == 16000.0
    assert 0 <= row["mean_kv_usage"] <= 1  # found under either metric name
    assert row["mean_running"] > 0 and row["mean_loras_by_batch"] <= 2
    out = tmp_path / "runs.csv"
    write_records(out, [row])
    write_records(out, [row])
    runs = load_runs(out, source=None)
    assert len(runs) == 2 and runs[0].max_loras == 2 and runs[0].instance().n_adapters == 3
    assert runs[0].instance().workload.duration_s == 1.5  # the collected window


def test_collect_refuses_a_server_without_the_adapters_or_with_other_slots() -> None:
    with FakeVllm(["other"], max_loras=2, max_seconds=10).running_at() as url, \
            pytest.raises(InputError, match="a0"):
        collect(Collect(_instance(), max_loras=2), url=url)
    with FakeVllm(["a0", "a1", "a2"], max_loras=8, max_seconds=10).running_at() as url, \
            pytest.raises(InputError, match="max_lora 8"):
        collect(Collect(_instance(), max_loras=2), url=url)


def test_vllm_command_and_launch_errors(tmp_path: Path) -> None:
    c = Collect(_instance(), max_loras=2)
    cmd = vllm_command(c, model_path=None, lora_paths={8: "/l/r8", 16: "/l/r16"})
    assert cmd[:3] == ["vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct"]
    for flag, value in (("--max-loras", "2"), ("--max-cpu-loras", "3"), ("--max-lora-rank", "16")):
        assert cmd[cmd.index(flag) + 1] == value
    assert "--enable-lora" in cmd and "a1=/l/r16" in cmd and "a0=/l/r8" in cmd
    with pytest.raises(InputError, match="ranks \\[16\\]"):
        vllm_command(c, model_path=None, lora_paths={8: "/l/r8"})
    with pytest.raises(InputError, match="not installed"):
        launch(["definitely-not-vllm-xyz", "serve"], tmp_path / "log")
    assert looks_oom("ValueError: No available memory for the cache blocks.")
    assert not looks_oom("INFO: Uvicorn running")
