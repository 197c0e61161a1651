"""Real-serving harness: drive a vLLM server with an instance's workload and record a calibration run.

``placer twin collect`` either launches ``vllm serve MODEL --enable-lora --max-loras K --max-cpu-loras M
--max-lora-rank R --lora-modules id=path ...`` (needs the optional ``vllm`` extra on a GPU host) or attaches
to a running OpenAI-compatible server (``--url``). It then

1. draws the instance's requests with the twin's own generator (:func:`twin.workload.generate_requests`:
   per-adapter arrivals and prompt/output lengths, seeded), so twin and server see the same workload;
2. sends each request at its arrival time as a streamed ``POST /v1/completions`` to the adapter's LoRA name
   with ``max_tokens`` = its output length (``ignore_eos`` by default, so the output length is exact), and
   records send, first-token and finish times; requests unfinished at the end of the window count zero;
3. scrapes ``/metrics`` every ``scrape_s`` seconds: ``vllm:num_requests_running``,
   ``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc`` (falling back to
   ``vllm:gpu_cache_usage_perc``), the preemption counter, ``vllm:lora_requests_info`` and
   ``vllm:cache_config_info`` (KV blocks);
4. returns one record with the column names of ``real_runs.csv`` (:data:`RECORD_COLUMNS`), which
   :func:`write_records` appends to a CSV that ``placer twin calibrate`` reads.

HTTP is done with a tiny stdlib client (:mod:`twin.calibration.http`); vLLM itself is only needed to launch a
server.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twin.calibration.drive import _Req, drive
from twin.calibration.http import get_text
from twin.calibration.runs import format_composition
from twin.errors import InputError
from twin.spec import Instance

HF_MODELS: dict[str, str] = {
    "llama-3.1-8b-instruct": "meta-llama/Llama-3.1-8B-Instruct",
    "qwen-2.5-7b-instruct": "Qwen/Qwen2.5-7B-Instruct",
    "mistral-7b-instruct-v0.3": "mistralai/Mistral-7B-Instruct-v0.3",
    "qwen-2.5-14b-instruct": "Qwen/Qwen2.5-14B-Instruct",
}
RECORD_COLUMNS: tuple[str, ...] = (
    "source", "run_name", "model", "gpu", "workload", "status", "n_adapters", "rates_composition",
    "ranks_composition", "total_rate_rps", "max_loras", "max_cpu_loras", "max_lora_rank", "max_num_seqs",
    "max_num_batched_tokens", "duration_s", "completed", "tokens_in", "tokens_out", "throughput_total",
    "throughput_out", "throughput_in", "ideal_throughput", "starvation_gap", "starved", "dt_arrivals",
    "mean_itl_ms", "median_itl_ms", "p99_itl_ms", "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms",
    "mean_running", "max_running", "mean_waiting", "max_waiting", "mean_kv_usage", "preemptions",
    "kv_cache_tokens", "mean_loras_by_batch", "mean_tokens_per_request", "failed_requests", "client_cap",
)
OOM_SIGNS = ("out of memory", "no available memory for the cache blocks",
             "larger than the maximum number of tokens", "insufficient memory", "cuda error: out of memory")


@dataclass(frozen=True)
class Collect:
    """One collection run: the instance (adapters, window, lengths), the server configuration, the client."""

    instance: Instance
    max_loras: int
    max_cpu_loras: int | None = None
    max_lora_rank: int | None = None
    seed: int = 0
    window_s: float | None = None
    scrape_s: float = 1.0
    ignore_eos: bool = True
    client_cap: int | None = None  # most requests in flight (None: as many as file descriptors allow)
    run_name: str = ""
    workload_label: str = ""

    @property
    def cpu_loras(self) -> int:
        return self.max_cpu_loras or self.instance.n_adapters

    @property
    def rank(self) -> int:
        return self.max_lora_rank or int(self.instance.ranks.max())

    @property
    def window(self) -> float:
        return float(self.window_s or self.instance.workload.duration_s)


# ------------------------------------------------------------------------------------------------ launching
def vllm_command(c: Collect, *, model_path: str | None, lora_paths: Mapping[int, str], port: int = 8000,
                 extra: Sequence[str] = ()) -> list[str]:
    """The ``vllm serve`` command line of a collection run (one LoRA module per adapter, path by rank)."""
    inst = c.instance
    missing = sorted({int(r) for r in inst.ranks} - set(lora_paths))
    if missing:
        raise InputError(f"no LoRA adapter path for ranks {missing} (give --lora-path RANK=PATH)",
                         field="lora_paths", value=missing)
    path = model_path or HF_MODELS.get(inst.model, inst.model)
    cmd = ["vllm", "serve", path, "--served-model-name", inst.model, "--port", str(port), "--enable-lora",
           "--max-loras", str(c.max_loras), "--max-cpu-loras", str(c.cpu_loras),
           "--max-lora-rank", str(c.rank),
           "--max-num-batched-tokens", str(inst.server.max_num_batched_tokens),
           "--max-num-seqs", str(inst.server.max_num_seqs),
           "--gpu-memory-utilization", str(inst.server.gpu_memory_utilization),
           "--enable-chunked-prefill", "--no-enable-prefix-caching", "--disable-log-requests"]
    if inst.server.max_model_len:
        cmd += ["--max-model-len", str(inst.server.max_model_len)]
    cmd += ["--lora-modules", *[f"{a.id}={lora_paths[a.rank]}" for a in inst.adapters]]
    return cmd + list(extra)


def launch(cmd: Sequence[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``vllm serve`` (the optional ``vllm`` extra must be installed), logging to ``log_path``."""
    if shutil.which(cmd[0]) is None:
        raise InputError("vLLM is not installed here: `pip install 'lora-placer[vllm]'` on a GPU host, "
                         "or attach to a running server with --url", field="vllm", value=cmd[0])
    log = open(log_path, "wb")  # noqa: SIM115 - owned by the process for its lifetime
    return subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT)


def looks_oom(log_text: str) -> bool:
    """True when a server log says it failed to start for lack of GPU memory (a memory error)."""
    low = log_text.lower()
    return any(sign in low for sign in OOM_SIGNS)


async def wait_ready(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Poll ``/v1/models`` until it answers (True), the process exits or the timeout passes (False)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            return False
        with contextlib.suppress(Exception):
            await get_text(url, "/v1/models", timeout=5.0)
            return True
        await asyncio.sleep(1.0)
    return False


# ------------------------------------------------------------------------------------------------ records
def summarize(c: Collect, log: Mapping[str, Any], scrapes: Sequence[Mapping[str, float]], *, gpu: str,
              status: str = "ok") -> dict[str, Any]:
    """One record in the calibration CSV schema (the papers' throughput over the window)."""
    inst, T = c.instance, c.window
    recs: list[_Req] = log["recs"]
    row: dict[str, Any] = {k: math.nan for k in RECORD_COLUMNS}
    row.update(source="collected", run_name=c.run_name or f"_{c.max_loras}_{c.cpu_loras}_{c.rank}_",
               model=inst.model, gpu=gpu, workload=c.workload_label or inst.name, status=status,
               n_adapters=inst.n_adapters, rates_composition=format_composition(inst.rates),
               ranks_composition=format_composition(inst.ranks), total_rate_rps=inst.total_rate_rps,
               max_loras=c.max_loras, max_cpu_loras=c.cpu_loras, max_lora_rank=c.rank,
               max_num_seqs=inst.server.max_num_seqs,
               max_num_batched_tokens=inst.server.max_num_batched_tokens,
               duration_s=T, client_cap=log.get("cap", math.nan) if log else math.nan)
    if status != "ok" or not log:
        return row
    done = [r for r in recs if not r.failed and r.finish <= T]
    tin = float(sum(r.prompt_tokens for r in done))
    tout = float(sum(r.output_tokens for r in done))
    offered = float(np.sum(log["input"]) + np.sum(log["output"])) / T
    thr = (tin + tout) / T
    gaps = np.array([g for r in done for g in r.gaps]) * 1000
    ttft = np.array([r.first - r.sent for r in done]) * 1000
    row.update(completed=len(done), tokens_in=tin, tokens_out=tout, throughput_total=thr,
               throughput_out=tout / T, throughput_in=tin / T, ideal_throughput=offered,
               starvation_gap=1 - thr / offered if offered > 0 else math.nan,
               starved=bool(offered > 0 and thr < 0.9 * offered), dt_arrivals=len(recs),
               failed_requests=sum(r.failed for r in recs),
               mean_tokens_per_request=float(log["expected_tokens"]))
    if gaps.size:
        row.update(mean_itl_ms=gaps.mean(), median_itl_ms=np.median(gaps), p99_itl_ms=np.percentile(gaps, 99))
    if ttft.size:
        row.update(mean_ttft_ms=ttft.mean(), median_ttft_ms=np.median(ttft),
                   p99_ttft_ms=np.percentile(ttft, 99))

    def col(key: str) -> np.ndarray:
        v = np.array([s.get(key, math.nan) for s in scrapes], dtype=float)
        return v[np.isfinite(v)]

    for key, mean_col, max_col in (("running", "mean_running", "max_running"),
                                   ("waiting", "mean_waiting", "max_waiting")):
        v = col(key)
        if v.size:
            row[mean_col], row[max_col] = float(v.mean()), float(v.max())
    for key, out in (("kv_usage", "mean_kv_usage"), ("lora_running", "mean_loras_by_batch")):
        v = col(key)
        if v.size:
            row[out] = float(v.mean())
    pre, kv = col("preemptions"), col("kv_tokens")
    if pre.size:
        row["preemptions"] = float(pre[-1] - pre[0])
    if kv.size:
        row["kv_cache_tokens"] = float(kv[-1])
    return row


def write_records(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Append records to a calibration CSV (created with :data:`RECORD_COLUMNS` first), atomically."""
    import pandas as pd

    from twin.files import atomic_write_text

    p = Path(path)
    new = pd.DataFrame(list(rows))
    if p.exists():
        new = pd.concat([pd.read_csv(p), new], ignore_index=True)
    cols = [c for c in RECORD_COLUMNS if c in new.columns]
    cols += [c for c in new.columns if c not in RECORD_COLUMNS]
    atomic_write_text(p, new[cols].to_csv(index=False))


async def _check_server(url: str, ids: Sequence[str], max_loras: int) -> None:
    """Every adapter must be served, and the server's max_lora (when it reports one) must be ``max_loras``."""
    import json

    from twin.calibration.http import parse_prometheus

    samples = parse_prometheus(await get_text(url, "/metrics"))
    reported = [lab.get("max_lora") for n, lab, _ in samples if n == "vllm:lora_requests_info"]
    if reported and reported[-1] and int(float(reported[-1])) != max_loras:
        raise InputError(f"the server runs with max_lora {reported[-1]}, not {max_loras}", field="max_loras",
                         value=max_loras)
    models = json.loads(await get_text(url, "/v1/models"))
    served = {m.get("id") for m in models.get("data", [])}
    missing = [a for a in ids if a not in served]
    if missing:
        raise InputError(f"the server does not serve adapters {missing[:5]} (launch it with --lora-modules "
                         "ID=PATH for every adapter of the instance)", field="url", value=url)


def collect(c: Collect, *, url: str | None = None, gpu: str = "", model_path: str | None = None,
            lora_paths: Mapping[int, str] | None = None, port: int = 8000, startup_s: float = 1200.0,
            log_dir: str | Path = ".") -> dict[str, Any]:
    """Run one collection (attach to ``url``, or launch ``vllm serve``) and return its record."""
    proc = None
    gpu = gpu or c.instance.gpu
    if url is None:
        cmd = vllm_command(c, model_path=model_path, lora_paths=lora_paths or {}, port=port)
        log_path = Path(log_dir) / f"vllm_{c.max_loras}_{c.cpu_loras}_{c.rank}.log"
        proc = launch(cmd, log_path)
        url = f"http://127.0.0.1:{port}"
    try:
        if not asyncio.run(wait_ready(url, startup_s if proc is not None else 30.0, proc)):
            if proc is not None:
                text = Path(log_path).read_text(errors="replace")
                return summarize(c, {}, [], gpu=gpu, status="oom" if looks_oom(text) else "failed")
            raise InputError("no OpenAI-compatible server answers", field="url", value=url)
        asyncio.run(_check_server(url, c.instance.ids, c.max_loras))
        log, scrapes = asyncio.run(drive(url, c))
        return summarize(c, log, scrapes, gpu=gpu)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
