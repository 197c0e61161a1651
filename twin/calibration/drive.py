"""Driving an OpenAI-compatible server for one window and scraping its metrics (for
:mod:`twin.calibration.harness`)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from twin.calibration.http import get_text, metric_sum, parse_prometheus, post_stream

if TYPE_CHECKING:
    from twin.calibration.harness import Collect


@dataclass
class _Req:
    sent: float = math.nan
    first: float = math.nan
    finish: float = math.nan
    prompt_tokens: int = 0
    output_tokens: int = 0
    failed: bool = False
    gaps: list[float] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ driving
def _fd_cap() -> int:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        return max(16, int(soft) - 64)
    except ImportError:  # pragma: no cover - not POSIX
        return 1000


async def _one(url: str, model: str, prompt_tokens: int, max_tokens: int, rec: _Req, t0: float,
               ignore_eos: bool) -> None:
    payload = {"model": model, "prompt": "hi " * max(1, prompt_tokens - 1), "max_tokens": int(max_tokens),
               "stream": True, "temperature": 0.0, "ignore_eos": ignore_eos,
               "stream_options": {"include_usage": True}}
    rec.sent = time.perf_counter() - t0
    last = rec.sent
    try:
        async for event in post_stream(url, "/v1/completions", payload):
            now = time.perf_counter() - t0
            choices = event.get("choices") or []
            if any(ch.get("text") for ch in choices):
                if math.isnan(rec.first):
                    rec.first = now
                else:
                    rec.gaps.append(now - last)
                last = now
                rec.output_tokens += 1
            usage = event.get("usage")
            if usage:
                rec.prompt_tokens = int(usage.get("prompt_tokens") or rec.prompt_tokens)
                rec.output_tokens = int(usage.get("completion_tokens") or rec.output_tokens)
        rec.finish = time.perf_counter() - t0
        if not rec.prompt_tokens:
            rec.prompt_tokens = prompt_tokens
    except Exception:  # a refused or broken request counts as failed (never completed)
        rec.failed = True


async def _scrape(url: str, period: float, t0: float, end: float, out: list[dict[str, float]]) -> None:
    while time.perf_counter() - t0 < end:
        with contextlib.suppress(Exception):
            s = parse_prometheus(await get_text(url, "/metrics", timeout=max(2.0, period)))
            loras = [lab for n, lab, _ in s if n == "vllm:lora_requests_info"]
            running_loras = (len([x for x in loras[-1].get("running_lora_adapters", "").split(",") if x])
                             if loras else math.nan)
            blocks = [(lab.get("num_gpu_blocks"), lab.get("block_size")) for n, lab, _ in s
                      if n == "vllm:cache_config_info"]
            kv_tokens = math.nan
            if blocks and blocks[0][0] and blocks[0][1]:
                kv_tokens = float(blocks[0][0]) * float(blocks[0][1])  # type: ignore[arg-type]
            usage = metric_sum(s, "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
            out.append({"t": time.perf_counter() - t0,
                        "running": metric_sum(s, "vllm:num_requests_running"),
                        "waiting": metric_sum(s, "vllm:num_requests_waiting"),
                        "kv_usage": usage, "preemptions": metric_sum(s, "vllm:num_preemptions_total"),
                        "lora_running": running_loras, "kv_tokens": kv_tokens,
                        "max_lora": float(loras[-1].get("max_lora", "nan")) if loras else math.nan})
        await asyncio.sleep(period)


async def drive(url: str, c: Collect) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Send the instance's requests for one window and scrape metrics; returns (request log, scrapes)."""
    from twin.workload import generate_requests

    inst = c.instance
    if c.window_s:
        inst = inst.replace(workload=replace(inst.workload, duration_s=c.window))
    reqs = generate_requests(inst, c.seed)
    keep = reqs.arrival_s < c.window
    arr, adp = reqs.arrival_s[keep], reqs.adapter[keep]
    pin, pout = reqs.input_tokens[keep], reqs.output_tokens[keep]
    recs = [_Req() for _ in range(arr.size)]
    cap = c.client_cap or _fd_cap()
    scrapes: list[dict[str, float]] = []
    t0 = time.perf_counter()
    scraper = asyncio.create_task(_scrape(url, c.scrape_s, t0, c.window, scrapes))
    tasks: set[asyncio.Task[None]] = set()
    for i in range(arr.size):
        delay = float(arr[i]) - (time.perf_counter() - t0)
        if delay > 0:
            await asyncio.sleep(delay)
        if len(tasks) >= cap:  # the client is out of connections: this request fails
            recs[i].failed = True
            continue
        task = asyncio.create_task(_one(url, inst.ids[int(adp[i])], int(pin[i]), int(pout[i]), recs[i], t0,
                                        c.ignore_eos))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    remaining = c.window - (time.perf_counter() - t0)
    if remaining > 0:
        await asyncio.sleep(remaining)
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    scraper.cancel()
    await asyncio.gather(scraper, return_exceptions=True)
    log = {"arrival": arr, "adapter": adp, "input": pin, "output": pout, "recs": recs,
           "expected_tokens": reqs.expected_tokens, "cap": cap}
    return log, scrapes
