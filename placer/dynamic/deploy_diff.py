"""Going from one deployed plan to the next: the actions, as a bash script of ``curl`` calls and launches.

vLLM loads and unloads LoRA adapters at run time through ``POST /v1/load_lora_adapter``
(``{"lora_name", "lora_path"}``) and ``POST /v1/unload_lora_adapter`` (``{"lora_name"}``) when the server runs
with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``. Settings (``--max-loras``, ``--max-cpu-loras``,
``--max-lora-rank``) only change with a restart. The script (GPU id j: ``CUDA_VISIBLE_DEVICES=j``, port
``base_port + j``, as :mod:`placer.deploy` numbers a first deployment) does, in this order:

1. **start** the added GPUs' servers (with their adapters) and wait for ``/health``;
2. **load** every adapter that moves to, or is new on, a kept GPU that keeps its settings;
3. **restart** the kept GPUs whose settings change, with their new adapter set (their adapters are
   unavailable while they restart);
4. run ``$ROUTES_HOOK`` (if set) so the router picks up the new ``routes.json``;
5. **unload** every adapter that moved away from, or was retired on, a kept GPU that was not restarted;
6. **stop** the drained GPUs' servers — every adapter they served is served elsewhere by now.

So an adapter that moves between running servers is loaded on its target before it is unloaded from its
source. :func:`diff_actions` lists the actions (for tests and ``--json``); :func:`diff_script` renders them.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from placer import deploy_formats as fmt
from placer.deploy import GpuLaunch, launch_commands
from placer.dynamic.diff import PlanDiff, gpu_ids, plan_diff
from placer.result import Result
from twin.errors import InputError
from twin.spec import Instance

ENV_RUNTIME_LORA = "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"


@dataclass(frozen=True)
class Action:
    """One step: ``start`` | ``load`` | ``restart`` | ``routes`` | ``unload`` | ``stop`` on GPU id ``gpu``."""

    kind: str
    gpu: int
    adapter: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "gpu": self.gpu, **({"adapter": self.adapter} if self.adapter else {})}


@dataclass(frozen=True)
class DiffDeployment:
    """The script, its actions, the diff and the new routing map."""

    text: str
    actions: tuple[Action, ...]
    diff: PlanDiff
    routes: dict[str, str]

    def to_dict(self, files: list[str] | None = None) -> dict[str, Any]:
        return {"format": "diff-shell", "files": list(files or []),
                "actions": [a.to_dict() for a in self.actions], "diff": self.diff.to_dict(),
                "routes": dict(self.routes)}


def diff_actions(old: Result, new: Result) -> tuple[PlanDiff, list[Action]]:
    """The diff and the ordered actions that take a deployment of ``old`` to ``new``."""
    d = plan_diff(old, new)
    restart = set(d.restart)
    runtime = [j for j in d.kept if j not in restart]
    acts = [Action("start", j) for j in d.added]
    incoming = [(a, t) for a, _, t in d.moved] + list(d.placed)
    acts += [Action("load", t, a) for a, t in incoming if t in runtime]
    acts += [Action("restart", j) for j in d.restart]
    acts.append(Action("routes", -1))
    outgoing = [(a, f) for a, f, _ in d.moved] + list(d.retired)
    acts += [Action("unload", f, a) for a, f in outgoing if f in runtime]
    acts += [Action("stop", j) for j in d.drained]
    return d, acts


def _launches(problem: Instance, plan: Result, base_port: int, adapter_dir: str) -> dict[int, GpuLaunch]:
    """Per GPU id: its launch, on device id and port base + id."""
    out = {}
    for gid, launch in zip(gpu_ids(plan), launch_commands(problem, plan, adapter_dir=adapter_dir),
                           strict=True):
        port = base_port + gid
        out[gid] = GpuLaunch(gid, port, ("vllm", "serve", *fmt.serve_args(launch, port)))
    return out


_HEAD = r"""set -euo pipefail
command -v curl >/dev/null || { echo "diff: curl is needed" >&2; exit 2; }
HOST="${HOST:-%(host)s}"
HEALTH_TIMEOUT_S="${HEALTH_TIMEOUT_S:-1800}"
export %(env)s  # runtime LoRA loading; the running servers need it too

post() {  # post PORT ENDPOINT JSON
  curl -fsS -X POST "http://$HOST:$1$2" -H 'Content-Type: application/json' -d "$3" >/dev/null
}
load() { echo "diff: GPU $1: load $2" >&2; post "$((BASE_PORT + $1))" /v1/load_lora_adapter "$3"; }
unload() { echo "diff: GPU $1: unload $2" >&2; post "$((BASE_PORT + $1))" /v1/unload_lora_adapter "$3"; }
healthy() {  # healthy GPU: wait for the server's /health
  local deadline=$((SECONDS + HEALTH_TIMEOUT_S))
  until curl -fsS --max-time 2 -o /dev/null "http://$HOST:$((BASE_PORT + $1))/health" 2>/dev/null; do
    ((SECONDS < deadline)) || { echo "diff: GPU $1: no answer on /health" >&2; exit 1; }
    sleep 1
  done
  echo "diff: GPU $1: healthy" >&2
}
stop_server() {  # stop_server GPU: $STOP_SERVER_CMD (given the port) or TERM the process listening there
  local port=$((BASE_PORT + $1))
  if [ -n "${STOP_SERVER_CMD:-}" ]; then $STOP_SERVER_CMD "$port"; return; fi
  local pid
  pid=$(lsof -t -i "tcp:$port" -s tcp:LISTEN 2>/dev/null || true)
  [ -n "$pid" ] && kill -TERM $pid
  while curl -fsS --max-time 2 -o /dev/null "http://$HOST:$port/health" 2>/dev/null; do sleep 1; done
  echo "diff: GPU $1: stopped" >&2
}
"""


def diff_script(problem: Instance, old: Result, new: Result, *, base_port: int = 8000,
                adapter_dir: str = "adapters", host: str = "localhost") -> DiffDeployment:
    """The bash script that takes the deployment of ``old`` to ``new`` (see the module docstring).
    :class:`InputError` when ``new`` does not fit ``problem``."""
    if isinstance(base_port, bool) or not 1 <= base_port <= 65535 - max(gpu_ids(new) + gpu_ids(old) + [0]):
        raise InputError(f"must leave room for the GPU ids (got {base_port!r})", field="--base-port",
                         value=base_port)
    d, acts = diff_actions(old, new)
    launches = _launches(problem, new, base_port, adapter_dir)
    base = adapter_dir.rstrip("/") or "/"
    lines = ["#!/usr/bin/env bash",
             f"# {problem.name}: {old.num_gpus} -> {new.num_gpus} GPUs; {len(d.moved)} adapter moves, "
             f"{len(d.placed)} new, {len(d.retired)} retired; added {list(d.added)}, drained "
             f"{list(d.drained)}, restarted {list(d.restart)} (written by placer deploy --diff)",
             _HEAD % {"host": host, "env": ENV_RUNTIME_LORA}, f'BASE_PORT="${{BASE_PORT:-{base_port}}}"', ""]
    for a in acts:
        if a.kind == "start" or a.kind == "restart":
            if a.kind == "restart":
                lines.append(f"stop_server {a.gpu}  # restart: settings change")
            lines.append(f"nohup env {ENV_RUNTIME_LORA} {launches[a.gpu].command} "
                         f">gpu-{a.gpu}.log 2>&1 &")
            lines.append(f"healthy {a.gpu}")
        elif a.kind == "load":
            body = json.dumps({"lora_name": a.adapter, "lora_path": f"{base}/{a.adapter}"})
            lines.append(f"load {a.gpu} {shlex.quote(str(a.adapter))} {shlex.quote(body)}")
        elif a.kind == "unload":
            body = json.dumps({"lora_name": a.adapter})
            lines.append(f"unload {a.gpu} {shlex.quote(str(a.adapter))} {shlex.quote(body)}")
        elif a.kind == "routes":
            lines.append('echo "diff: every adapter is served at its new place; routes.json is current" >&2')
            lines.append('if [ -n "${ROUTES_HOOK:-}" ]; then $ROUTES_HOOK; fi')
        elif a.kind == "stop":
            lines.append(f"stop_server {a.gpu}  # drained")
    lines.append('echo "diff: done" >&2')
    routes = {a: f"http://{host}:{base_port + gid}" for gid, g in zip(gpu_ids(new), new.gpus, strict=True)
              for a in g.adapters}
    return DiffDeployment("\n".join(lines) + "\n", tuple(acts), d, routes)
