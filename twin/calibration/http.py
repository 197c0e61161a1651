"""A tiny asyncio HTTP/1.1 client (stdlib only) and a Prometheus text parser, for the real-serving harness.

The harness needs two things from an OpenAI-compatible vLLM server: streamed ``POST /v1/completions`` and
``GET /metrics``. One connection per request (``Connection: close``), bodies read by Content-Length, chunked
transfer encoding, or until EOF. No third-party client is required, so the harness runs (and is tested
against a loopback server) without the optional ``vllm`` extra.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    base_path: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        u = urlsplit(url if "://" in url else f"http://{url}")
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"only http://host:port URLs are supported (got {url!r})")
        return cls(u.hostname, u.port or 80, u.path.rstrip("/"))


class HttpError(Exception):
    """A non-2xx answer or a broken connection."""


async def _open(ep: Endpoint, method: str, path: str, body: bytes | None,
                timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, dict[str, str]]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(ep.host, ep.port), timeout)
    head = [f"{method} {ep.base_path}{path} HTTP/1.1", f"Host: {ep.host}:{ep.port}", "Connection: close",
            "Accept: */*"]
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (body or b""))
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout)
    parts = status_line.decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        writer.close()
        raise HttpError(f"bad HTTP status line {status_line!r}")
    headers: dict[str, str] = {}
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return reader, writer, int(parts[1]), headers


async def _body_chunks(reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size_line = await reader.readline()
            if not size_line:
                return
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return
            data = await reader.readexactly(size)
            await reader.readline()
            yield data
    elif "content-length" in headers:
        yield await reader.readexactly(int(headers["content-length"]))
    else:
        while chunk := await reader.read(65536):
            yield chunk


async def get_text(url: str, path: str, *, timeout: float = 10.0) -> str:
    """GET ``path`` and return the body as text (HttpError on a non-2xx status)."""
    reader, writer, status, headers = await _open(Endpoint.parse(url), "GET", path, None, timeout)
    try:
        body = b"".join([c async for c in _body_chunks(reader, headers)])
    finally:
        writer.close()
    if not 200 <= status < 300:
        raise HttpError(f"GET {path}: HTTP {status}: {body[:200]!r}")
    return body.decode("utf-8", "replace")


async def post_stream(url: str, path: str, payload: dict[str, Any], *,
                      timeout: float = 30.0) -> AsyncIterator[dict[str, Any]]:
    """POST JSON and yield the server-sent events (``data: {...}``) as dicts until ``[DONE]``.

    A non-streaming JSON answer is yielded once.
    """
    body = json.dumps(payload).encode()
    reader, writer, status, headers = await _open(Endpoint.parse(url), "POST", path, body, timeout)
    try:
        if not 200 <= status < 300:
            text = b"".join([c async for c in _body_chunks(reader, headers)])
            raise HttpError(f"POST {path}: HTTP {status}: {text[:200]!r}")
        if "text/event-stream" not in headers.get("content-type", ""):
            text = b"".join([c async for c in _body_chunks(reader, headers)])
            yield json.loads(text)
            return
        buf = b""
        async for chunk in _body_chunks(reader, headers):
            buf += chunk
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                for line in event.splitlines():
                    if line.startswith(b"data:"):
                        data = line[5:].strip()
                        if data == b"[DONE]":
                            return
                        yield json.loads(data)
    finally:
        writer.close()


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) for every sample line of a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group(2) or ""))
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out.append((m.group(1), labels, value))
    return out


def metric_sum(samples: list[tuple[str, dict[str, str], float]], *names: str) -> float:
    """Sum of the samples of the first of ``names`` present (NaN when none is)."""
    for name in names:
        vals = [v for n, _, v in samples if n == name]
        if vals:
            return float(sum(vals))
    return math.nan
