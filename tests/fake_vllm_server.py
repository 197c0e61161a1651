"""A tiny loopback stand-in for a vLLM OpenAI-compatible server (stdlib asyncio), for the harness tests.

It speaks what ``placer twin collect`` uses: ``GET /v1/models`` (base model + LoRA adapters), streamed or
plain ``POST /v1/completions`` (one SSE event per token, ``token_delay_s`` apart, usage in the last event when
asked), and ``GET /metrics`` (Prometheus text with vLLM's metric names). At most ``max_loras`` adapters run at
a time; other requests wait (FCFS), so running/waiting/LoRA gauges move. It binds 127.0.0.1 on a random port,
serves at most ``max_requests`` completions and stops by itself after ``max_seconds``.

    with FakeVllm(["a0", "a1"]).running_at() as url: ...
    python tests/fake_vllm_server.py --adapters a0,a1 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any


class FakeVllm:
    def __init__(self, adapters: Sequence[str], *, model: str = "fake-model", max_loras: int = 8,
                 token_delay_s: float = 0.002, max_seconds: float = 30.0, max_requests: int = 20_000,
                 kv_blocks: int = 1000, metric_style: str = "new") -> None:
        self.adapters = list(adapters)
        self.model = model
        self.max_loras = max_loras
        self.token_delay_s = token_delay_s
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.kv_blocks = kv_blocks
        self.metric_style = metric_style  # "new": vllm:kv_cache_usage_perc; "old": vllm:gpu_cache_usage_perc
        self.running: dict[int, str] = {}
        self.waiting: list[int] = []
        self.served = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self._next = 0
        self._cond: asyncio.Condition | None = None

    # --- HTTP plumbing ---------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = (await reader.readline()).decode("latin-1").split()
            headers: dict[str, str] = {}
            while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                k, _, v = h.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            if len(line) < 2:
                return
            method, path = line[0], line[1]
            if method == "GET" and path == "/v1/models":
                ids = [self.model, *self.adapters]
                listing = {"object": "list", "data": [{"id": i} for i in ids]}
                await self._send(writer, 200, json.dumps(listing))
            elif method == "GET" and path == "/health":
                await self._send(writer, 200, "")
            elif method == "GET" and path == "/metrics":
                await self._send(writer, 200, self.metrics(), "text/plain; version=0.0.4")
            elif method == "POST" and path == "/v1/completions":
                await self._complete(json.loads(body or b"{}"), writer)
            else:
                await self._send(writer, 404, json.dumps({"error": "not found"}))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, status: int, text: str,
                    ctype: str = "application/json") -> None:
        data = text.encode()
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + data)
        await writer.drain()

    # --- the "engine" ----------------------------------------------------------------------------------
    async def _complete(self, req: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        name = req.get("model")
        if name not in self.adapters and name != self.model:
            await self._send(writer, 404, json.dumps({"error": f"model {name} not found"}))
            return
        if self.served >= self.max_requests:
            await self._send(writer, 503, json.dumps({"error": "fake server request budget spent"}))
            return
        self.served += 1
        rid, self._next = self._next, self._next + 1
        assert self._cond is not None
        async with self._cond:
            self.waiting.append(rid)
            await self._cond.wait_for(lambda: self._admissible(rid, str(name)))
            self.waiting.remove(rid)
            self.running[rid] = str(name)
        n_out = max(1, int(req.get("max_tokens") or 16))
        n_in = max(1, len(str(req.get("prompt", "")).split()))
        stream = bool(req.get("stream"))
        try:
            if stream:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            for _ in range(n_out):
                await asyncio.sleep(self.token_delay_s)
                self.generation_tokens += 1
                if stream:
                    self._chunk(writer, {"choices": [{"index": 0, "text": " tok", "finish_reason": None}]})
                    await writer.drain()
            self.prompt_tokens += n_in
            usage = {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}
            if stream:
                if (req.get("stream_options") or {}).get("include_usage"):
                    self._chunk(writer, {"choices": [], "usage": usage})
                writer.write(self._frame(b"data: [DONE]\n\n") + b"0\r\n\r\n")
                await writer.drain()
            else:
                answer = {"choices": [{"text": " tok" * n_out}], "usage": usage}
                await self._send(writer, 200, json.dumps(answer))
        finally:
            async with self._cond:
                self.running.pop(rid, None)
                self._cond.notify_all()

    def _admissible(self, rid: int, name: str) -> bool:
        active = set(self.running.values())
        return self.waiting and self.waiting[0] == rid and (name in active or len(active) < self.max_loras)

    @staticmethod
    def _frame(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    def _chunk(self, writer: asyncio.StreamWriter, event: dict[str, Any]) -> None:
        writer.write(self._frame(f"data: {json.dumps(event)}\n\n".encode()))

    def metrics(self) -> str:
        usage = min(1.0, len(self.running) / max(1, self.kv_blocks))
        kv_name = "vllm:kv_cache_usage_perc" if self.metric_style == "new" else "vllm:gpu_cache_usage_perc"
        loras = ",".join(sorted(set(self.running.values())))
        lab = f'model_name="{self.model}"'
        return "\n".join([
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{lab}}} {len(self.running)}",
            f"vllm:num_requests_waiting{{{lab}}} {len(self.waiting)}",
            f"{kv_name}{{{lab}}} {usage}",
            f"vllm:num_preemptions_total{{{lab}}} 0.0",
            f"vllm:prompt_tokens_total{{{lab}}} {float(self.prompt_tokens)}",
            f"vllm:generation_tokens_total{{{lab}}} {float(self.generation_tokens)}",
            f'vllm:lora_requests_info{{max_lora="{self.max_loras}",running_lora_adapters="{loras}",'
            f'waiting_lora_adapters=""}} {time.time()}',
            f'vllm:cache_config_info{{block_size="16",num_gpu_blocks="{self.kv_blocks}"}} 1.0',
        ]) + "\n"

    # --- lifetime --------------------------------------------------------------------------------------
    async def serve(self, port: int = 0, ready: threading.Event | None = None,
                    holder: dict[str, Any] | None = None) -> None:
        self._cond = asyncio.Condition()
        server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        if holder is not None:
            holder["port"] = server.sockets[0].getsockname()[1]
            holder["loop"] = asyncio.get_running_loop()
            holder["stop"] = stop = asyncio.Event()
        else:
            stop = asyncio.Event()
        if ready is not None:
            ready.set()
        async with server:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.max_seconds)

    @contextlib.contextmanager
    def running_at(self) -> Iterator[str]:
        """Serve in a background thread; yields the base URL; stops on exit."""
        ready, holder = threading.Event(), {}  # type: ignore[var-annotated]
        thread = threading.Thread(target=lambda: asyncio.run(self.serve(0, ready, holder)), daemon=True)
        thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake vLLM server did not start")
        try:
            yield f"http://127.0.0.1:{holder['port']}"
        finally:
            holder["loop"].call_soon_threadsafe(holder["stop"].set)
            thread.join(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapters", default="a0,a1,a2,a3")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--max-loras", type=int, default=8)
    args = ap.parse_args()
    fake = FakeVllm(args.adapters.split(","), max_loras=args.max_loras, max_seconds=args.seconds)
    ready, holder = threading.Event(), {}  # type: ignore[var-annotated]
    threading.Thread(target=lambda: (ready.wait(), print(f"http://127.0.0.1:{holder['port']}", flush=True)),
                     daemon=True).start()
    asyncio.run(fake.serve(args.port, ready, holder))


if __name__ == "__main__":
    main()
