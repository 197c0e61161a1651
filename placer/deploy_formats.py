"""The launch files of a deployment, one renderer per format: a supervising bash script, a Docker Compose
file, Kubernetes manifests.

Each renderer takes the per-GPU launches (:class:`placer.deploy.GpuLaunch`: GPU index, port, ``vllm serve``
argument vector) and returns text; :mod:`placer.deploy` builds the launches, the routing map and writes the
files. Nothing here reads or writes files.

- **shell**: every server in the background; a trap stops them all on Ctrl-C, TERM or exit (background
  children of a script ignore Ctrl-C, so without it they outlive the script); each server's ``/health`` is
  polled until it answers; a server that exits or does not answer in time stops the others and the script
  exits 1; then it waits, and the first server to exit stops the rest.
- **compose**: one service per GPU on the ``vllm/vllm-openai`` image, the GPU reserved by device id, host
  port ``base + j``, the adapter folder mounted read-only, a healthcheck on ``/health``.
- **k8s**: one Deployment and one Service per GPU in one multi-document YAML file, ``nvidia.com/gpu: 1``,
  probes on ``/health``, labels naming the plan and the GPU.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from placer.deploy import GpuLaunch

HEALTH_PATH = "/health"
_SLUG_BAD = re.compile(r"[^a-z0-9-]+")


def slug(name: str, *, limit: int = 40) -> str:
    """``name`` as a DNS-1035 label part: lowercase letters, digits and ``-``, starting with a letter."""
    s = _SLUG_BAD.sub("-", name.lower()).strip("-")
    s = re.sub(r"-{2,}", "-", s)
    if not s or not s[0].isalpha():
        s = ("placer-" + s).rstrip("-")
    return s[:limit].rstrip("-")


def serve_args(launch: GpuLaunch, port: int) -> list[str]:
    """The arguments after ``vllm serve``, with the server's port set to ``port``."""
    argv = list(launch.argv)
    assert argv[:2] == ["vllm", "serve"], argv
    args = argv[2:]
    i = args.index("--port")
    args[i + 1] = str(port)
    return args


class _PlainDumper(yaml.SafeDumper):
    """Safe YAML without anchors and aliases: every document is readable on its own."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False, width=1000)


# --- shell ------------------------------------------------------------------------------------------------
_SHELL_HEAD = r"""set -u
command -v curl >/dev/null || { echo "launch: curl is needed for the health checks" >&2; exit 2; }
HEALTH_TIMEOUT_S="${HEALTH_TIMEOUT_S:-1800}"  # how long a server may take to load and answer /health
STOP_TIMEOUT_S="${STOP_TIMEOUT_S:-30}"        # how long a server may take to stop on TERM before KILL
pids=() gpus=() ports=()

stop_all() {  # TERM every server, KILL those still running after STOP_TIMEOUT_S, reap them
  trap - INT TERM EXIT
  local pid alive deadline=$((SECONDS + STOP_TIMEOUT_S))
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  while ((SECONDS < deadline)); do  # wall time: a loaded host must not stretch the grace period
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  wait 2>/dev/null
}
trap 'echo "launch: interrupted, stopping every server" >&2; stop_all; exit 130' INT
trap 'echo "launch: terminated, stopping every server" >&2; stop_all; exit 143' TERM
trap 'stop_all' EXIT

started() {  # started GPU PORT: record the server just put in the background
  pids+=("$!") gpus+=("$1") ports+=("$2")
  echo "launch: GPU $1: server pid $! on port $2" >&2
}

healthy() {  # healthy I: poll server I's /health until it answers; fail if it exits or time runs out
  local deadline=$((SECONDS + HEALTH_TIMEOUT_S))
  until curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:${ports[$1]}/health" 2>/dev/null; do
    if ! kill -0 "${pids[$1]}" 2>/dev/null; then
      echo "launch: GPU ${gpus[$1]}: server exited before answering /health" >&2
      return 1
    fi
    if ((SECONDS >= deadline)); then
      echo "launch: GPU ${gpus[$1]}: no answer on /health after ${HEALTH_TIMEOUT_S} s" >&2
      return 1
    fi
    sleep 1
  done
  echo "launch: GPU ${gpus[$1]}: healthy on port ${ports[$1]}" >&2
}
"""

_SHELL_TAIL = r"""
for i in "${!pids[@]}"; do
  healthy "$i" || { echo "launch: stopping the other servers" >&2; exit 1; }
done
echo "launch: all ${#pids[@]} servers healthy; adapter routes in routes.json beside this script" >&2
wait -n
status=$?
echo "launch: a server exited (status $status), stopping the others" >&2
exit $((status == 0 ? 1 : status))
"""


def shell_script(launches: Sequence[GpuLaunch], *, title: str) -> str:
    """A bash script that starts, health-checks and supervises every GPU's server (see the module doc)."""
    lines = ["#!/usr/bin/env bash", f"# {title}",
             "# Starts one vLLM server per GPU in the background, waits until each answers /health,",
             "# then waits on them. Ctrl-C, TERM or any exit stops every server; a server that fails to",
             "# start (or exits later) stops the others and the script exits non-zero.",
             _SHELL_HEAD.rstrip("\n"), ""]
    for launch in launches:
        lines += [f"{launch.command} &", f"started {launch.gpu} {launch.port}"]
    return "\n".join(lines) + "\n" + _SHELL_TAIL


# --- Docker Compose ---------------------------------------------------------------------------------------
def compose_service_name(gpu: int, replica: int | None = None) -> str:
    return f"gpu-{gpu}" + ("" if replica is None else f"-r{replica}")


def _probe_command(port: int) -> list[str]:
    url = f"http://localhost:{port}{HEALTH_PATH}"
    return ["CMD", "python3", "-c", f"import urllib.request; urllib.request.urlopen({url!r}, timeout=5)"]


CONTAINER_HF_HOME = "/hf-cache"  # the Hugging Face cache inside the container (HF_HOME)


def compose_yaml(launches: Sequence[GpuLaunch], *, project: str, image: str, adapter_volume: str,
                 container_adapter_dir: str) -> str:
    """A Compose file: one service per GPU (the GPU reserved by id, host port = the launch's port)."""
    services: dict[str, Any] = {}
    for launch in launches:
        services[compose_service_name(launch.gpu, launch.replica)] = {
            "image": image,
            "entrypoint": ["vllm", "serve"],
            "command": serve_args(launch, launch.port),
            "ports": [f"{launch.port}:{launch.port}"],
            "volumes": [f"{adapter_volume}:{container_adapter_dir}:ro",
                        f"~/.cache/huggingface:{CONTAINER_HF_HOME}"],  # model weights downloaded once
            "environment": ["HF_TOKEN", f"HF_HOME={CONTAINER_HF_HOME}"],
            "ipc": "host",
            "restart": "unless-stopped",
            "healthcheck": {"test": _probe_command(launch.port), "interval": "10s", "timeout": "5s",
                            "retries": 3, "start_period": "1800s"},
            "deploy": {"resources": {"reservations": {"devices": [
                {"driver": "nvidia", "device_ids": [str(launch.gpu)], "capabilities": ["gpu"]}]}}},
        }
    return f"# {project}: one vLLM server per GPU; `docker compose up -d`\n" + _dump(
        {"name": project, "services": services})


# --- Kubernetes -------------------------------------------------------------------------------------------
def k8s_name(plan: str, gpu: int) -> str:
    """The Deployment and Service name of GPU ``gpu`` of plan ``plan`` (a DNS-1035 label)."""
    return f"{slug(plan)}-gpu-{gpu}"


def k8s_labels(plan: str, gpu: int) -> dict[str, str]:
    return {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": k8s_name(plan, gpu),
            "app.kubernetes.io/part-of": slug(plan, limit=63), "app.kubernetes.io/managed-by": "placer",
            "placer/plan": slug(plan, limit=63), "placer/gpu": str(gpu)}


def k8s_yaml(launches: Sequence[GpuLaunch], *, plan: str, namespace: str, image: str, port: int,
             adapter_claim: str, container_adapter_dir: str) -> str:
    """Multi-document YAML: a Deployment and a Service per GPU, every pod listening on ``port``."""
    docs: list[dict[str, Any]] = []
    for launch in launches:
        name, labels = k8s_name(plan, launch.gpu), k8s_labels(plan, launch.gpu)
        selector = {"placer/plan": labels["placer/plan"], "placer/gpu": labels["placer/gpu"]}
        probe = {"httpGet": {"path": HEALTH_PATH, "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 5}
        container = {
            "name": "vllm", "image": image,
            "command": ["vllm", "serve"], "args": serve_args(launch, port),
            "ports": [{"name": "http", "containerPort": port}],
            "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
                "name": "hf-token", "key": "token", "optional": True}}}],
            "resources": {"limits": {"nvidia.com/gpu": 1}},
            "startupProbe": {**probe, "failureThreshold": 180},
            "readinessProbe": {**probe, "failureThreshold": 3},
            "livenessProbe": {**probe, "failureThreshold": 6},
            "volumeMounts": [{"name": "adapters", "mountPath": container_adapter_dir, "readOnly": True},
                             {"name": "shm", "mountPath": "/dev/shm"}],
        }
        docs.append({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": selector},
                     "strategy": {"type": "Recreate"},
                     "template": {"metadata": {"labels": labels}, "spec": {
                         "containers": [container],
                         "volumes": [{"name": "adapters", "persistentVolumeClaim": {
                             "claimName": adapter_claim, "readOnly": True}},
                             {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}]}}},
        })
        docs.append({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"selector": selector, "ports": [{"name": "http", "port": port, "targetPort": "http"}]},
        })
    head = f"# {plan}: one vLLM Deployment + Service per GPU; `kubectl apply -f` this file\n"
    return head + "---\n".join(_dump(d) for d in docs)


def k8s_url(plan: str, gpu: int, namespace: str, port: int) -> str:
    """The in-cluster URL of GPU ``gpu``'s Service."""
    return f"http://{k8s_name(plan, gpu)}.{namespace}.svc.cluster.local:{port}"
