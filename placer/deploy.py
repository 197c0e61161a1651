"""A plan as something deployable: one ``vllm serve`` command per GPU with its LoRA settings.

Each GPU gets ``CUDA_VISIBLE_DEVICES=<j> vllm serve <HF model id> --enable-lora --max-loras S
--max-cpu-loras M --max-lora-rank R --max-model-len L --max-num-batched-tokens B --max-num-seqs N
--gpu-memory-utilization U --port P --lora-modules id=path ...`` — the settings the twin verified (N and U
are the GPU's own when the plan has them, from ``placer solve --tune-batch``, else the instance's). A GPU
with ``replicas`` (``placer solve --replicas-per-gpu``) gets one such command per replica, on the same device,
each with its own adapters, settings, share of the memory and port (ports are numbered server by server, so
a plan without replicas keeps port base + j for GPU j). Adapter paths are ``<adapter_dir>/<id>`` unless a
mapping is given.

:func:`deployment` renders those launches in one of :data:`FORMATS` (a supervising bash script, a Docker
Compose file, Kubernetes manifests; :mod:`placer.deploy_formats`) together with the routing map, adapter id
→ server URL; :func:`write_deployment` writes the launch file and ``routes.json`` beside it, each atomically.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from placer import deploy_formats as fmt
from placer.check.evaluate import check_plan
from placer.problem.memory import max_model_len
from placer.result import GpuPlan, ReplicaPlan, Result, plural
from twin.errors import InputError
from twin.files import atomic_write_text
from twin.profile import Profile
from twin.spec import Instance, ServerSettings

HF_MODEL_IDS: dict[str, str] = {
    "llama-3.1-8b-instruct": "meta-llama/Llama-3.1-8B-Instruct",
    "qwen-2.5-7b-instruct": "Qwen/Qwen2.5-7B-Instruct",
}


@dataclass(frozen=True)
class GpuLaunch:
    """The launch of one GPU's server: its index, port and the argument vector."""

    gpu: int
    port: int
    argv: tuple[str, ...]
    replica: int | None = None  # which of the GPU's servers (plans with replicas), None: the GPU's only one

    @property
    def command(self) -> str:
        return f"CUDA_VISIBLE_DEVICES={self.gpu} " + shlex.join(self.argv)


def launch_commands(problem: Instance, plan: Result, *, adapter_dir: str = "adapters", base_port: int = 8000,
                    adapter_paths: Mapping[str, str] | None = None, profile: Profile | None = None
                    ) -> list[GpuLaunch]:
    """Per-GPU vLLM launch commands for ``plan``; :class:`InputError` if the plan does not fit the problem
    (``profile``: the twin profile whose memory rule and default ``max_model_len`` apply; None = shipped)."""
    errors = check_plan(problem, plan, profile)
    if errors:
        raise InputError(f"plan cannot be deployed: {errors[0]}", field="gpus", value=plan.num_gpus)
    model = HF_MODEL_IDS.get(problem.model, problem.model)
    srv = problem.server
    out: list[GpuLaunch] = []
    for j, g, i, server in servers_of(plan):
        paths = adapter_paths or {}
        base = adapter_dir.rstrip("/")
        modules = [f"{a}={paths.get(a, base + '/' + a)}" for a in server.adapters]
        own = settings_of(g, server, srv)  # the server's own batch and memory settings, else the instance's
        port = base_port + len(out)  # one port per server: GPU j's when no GPU has replicas
        argv = ("vllm", "serve", model, "--enable-lora",
                "--max-loras", str(server.max_loras), "--max-cpu-loras", str(server.max_cpu_loras),
                "--max-lora-rank", str(server.max_lora_rank),
                "--max-model-len", str(max_model_len(problem, profile)),
                "--max-num-batched-tokens", str(srv.max_num_batched_tokens),
                "--max-num-seqs", str(own.max_num_seqs),
                "--gpu-memory-utilization", f"{own.gpu_memory_utilization:g}",
                "--port", str(port),
                "--lora-modules", *modules)
        out.append(GpuLaunch(j, port, argv, i))
    return out


def servers_of(plan: Result) -> list[tuple[int, GpuPlan, int | None, GpuPlan | ReplicaPlan]]:
    """Every vLLM server of ``plan``: (GPU index, GPU, replica index or None, the server's settings)."""
    return [(j, g, i, r) for j, g in enumerate(plan.gpus)
            for i, r in (enumerate(g.replicas) if g.replicas else [(None, g)])]


def settings_of(g: GpuPlan, server: GpuPlan | ReplicaPlan, default: ServerSettings) -> ServerSettings:
    """A server's batch and memory settings: a replica's own, else its GPU's, else ``default``."""
    own = g.server(default)
    if isinstance(server, ReplicaPlan):
        own = dataclasses.replace(own, gpu_memory_utilization=server.gpu_memory_utilization,
                                  max_num_seqs=server.max_num_seqs or own.max_num_seqs)
    return own


def deploy_script(problem: Instance, plan: Result, **options: object) -> str:
    """A bash script that starts every GPU's server in the background, checks its ``/health`` and stops them
    all on Ctrl-C, TERM or exit (the ``shell`` format of :func:`deployment`)."""
    return deployment(problem, plan, format="shell", **options).text  # type: ignore[arg-type]


FORMATS = ("shell", "compose", "k8s")
DEFAULT_IMAGE = "vllm/vllm-openai:latest"
CONTAINER_ADAPTER_DIR = "/adapters"  # where compose and k8s mount the adapter folder
K8S_PORT = 8000  # every pod listens here; its Service exposes the same port
ROUTES_FILE = "routes.json"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


@dataclass(frozen=True)
class Deployment:
    """What :func:`deployment` renders: the launch file's text, one record per server, the routing map."""

    format: str
    text: str
    servers: tuple[dict[str, Any], ...]
    routes: dict[str, str]  # adapter id -> the URL of the one server that serves it

    def to_dict(self, files: list[str] | None = None) -> dict[str, Any]:
        """The ``placer deploy --json`` object: ``{format, files, servers, routes}``."""
        return {"format": self.format, "files": list(files or []), "servers": [dict(s) for s in self.servers],
                "routes": dict(self.routes)}


def _check_options(n_gpus: int, *, format: str, base_port: int, host: str, image: str, namespace: str,
                   adapter_claim: str, adapter_dir: str) -> None:
    if format not in FORMATS:
        raise InputError(f"unknown format {format!r} (choose {', '.join(FORMATS)})", field="--format",
                         value=format)
    if isinstance(base_port, bool) or not 1 <= base_port <= 65536 - max(n_gpus, 1):
        raise InputError(f"must be in [1, {65536 - max(n_gpus, 1)}] for {plural(n_gpus, 'GPU')} "
                         f"(ports base .. base + {n_gpus - 1}), got {base_port!r}", field="--base-port",
                         value=base_port)
    k8s_name = "a Kubernetes name (lowercase letters, digits, '-')"
    checks = (("--host", host, "a host name or address (no scheme, path or spaces)",
               not host or any(c.isspace() or c in "/@?#" for c in host)),
              ("--image", image, "an image reference without spaces",
               not image or any(c.isspace() for c in image)),
              ("--adapter-dir", adapter_dir, "a folder", not adapter_dir.strip()),
              ("--namespace", namespace, k8s_name, not _DNS_LABEL.fullmatch(namespace)),
              ("--adapter-claim", adapter_claim, k8s_name, not _DNS_SUBDOMAIN.fullmatch(adapter_claim)))
    for field, value, what, bad in checks:
        if bad:
            raise InputError(f"must be {what}, got {value!r}", field=field, value=value)


def _server(g: GpuPlan, server: GpuPlan | ReplicaPlan, launch: GpuLaunch, name: str, url: str, port: int,
            argv: list[str], srv: ServerSettings) -> dict[str, Any]:
    own = settings_of(g, server, srv)
    out = {"gpu": launch.gpu, "name": name, "url": url, "port": port, "adapters": list(server.adapters),
           "max_loras": server.max_loras, "max_cpu_loras": server.max_cpu_loras,
           "max_lora_rank": server.max_lora_rank, "max_num_seqs": own.max_num_seqs,
           "gpu_memory_utilization": own.gpu_memory_utilization, "argv": argv}
    if launch.replica is not None:
        out["replica"] = launch.replica
    return out


def deployment(problem: Instance, plan: Result, *, format: str = "shell", adapter_dir: str = "adapters",
               base_port: int = 8000, host: str = "localhost", image: str = DEFAULT_IMAGE,
               namespace: str = "default", adapter_claim: str = "lora-adapters") -> Deployment:
    """Render ``plan`` as a deployment in ``format`` (one of :data:`FORMATS`) with its routing map.

    ``shell`` and ``compose`` run every server on this host (GPU j, port ``base_port + j``, routes
    ``http://host:port``); ``shell`` reads adapters from ``adapter_dir/<id>``, ``compose`` mounts
    ``adapter_dir`` (relative: to the Compose file's folder) at ``/adapters``. ``k8s`` mounts the
    PersistentVolumeClaim ``adapter_claim`` at ``/adapters`` and routes to each GPU's Service in
    ``namespace`` on port 8000. :class:`InputError` for a plan that does not fit ``problem`` or a bad option.
    """
    _check_options(len(servers_of(plan)), format=format, base_port=base_port, host=host, image=image,
                   namespace=namespace, adapter_claim=adapter_claim, adapter_dir=adapter_dir)
    if format == "k8s" and any(g.replicas for g in plan.gpus):
        raise InputError("a plan with replicas (several servers on one GPU) deploys as shell or compose; "
                         "Kubernetes gives each pod a whole GPU", field="--format", value=format)
    in_container = format != "shell"
    launches = launch_commands(problem, plan, base_port=base_port,
                               adapter_dir=CONTAINER_ADAPTER_DIR if in_container else adapter_dir)
    servers = []
    for (_, g, _, server), launch in zip(servers_of(plan), launches, strict=True):
        if format == "k8s":
            name, port = fmt.k8s_name(problem.name, launch.gpu), K8S_PORT
            url = fmt.k8s_url(problem.name, launch.gpu, namespace, port)
            argv = ["vllm", "serve", *fmt.serve_args(launch, port)]
        else:
            name = fmt.compose_service_name(launch.gpu, launch.replica) if format == "compose" \
                else f"gpu-{launch.gpu}" + ("" if launch.replica is None else f"-r{launch.replica}")
            port, url, argv = launch.port, f"http://{host}:{launch.port}", list(launch.argv)
        servers.append(_server(g, server, launch, name, url, port, argv, problem.server))
    routes = {a: s["url"] for s in servers for a in s["adapters"]}
    title = f"{problem.name}: {plural(plan.num_gpus, 'GPU')}, plan by {plan.solver}"
    if format == "shell":
        text = fmt.shell_script(launches, title=title)
    elif format == "compose":
        volume = adapter_dir if adapter_dir.startswith(("/", ".", "~")) else "./" + adapter_dir
        text = fmt.compose_yaml(launches, project=fmt.slug(problem.name, limit=63), image=image,
                                adapter_volume=volume.rstrip("/") or "/",
                                container_adapter_dir=CONTAINER_ADAPTER_DIR)
    else:
        text = fmt.k8s_yaml(launches, plan=problem.name, namespace=namespace, image=image, port=K8S_PORT,
                            adapter_claim=adapter_claim, container_adapter_dir=CONTAINER_ADAPTER_DIR)
    return Deployment(format, text, tuple(servers), routes)


def routes_json(dep: Deployment) -> str:
    """The routing map as JSON: ``{adapter id: server URL}``, one entry per adapter of the plan."""
    return json.dumps(dep.routes, indent=2) + "\n"


def write_deployment(dep: Deployment, out: str | Path) -> list[Path]:
    """Write ``routes.json`` beside ``out`` and the launch file at ``out`` (each atomically; a shell script
    is made executable). Returns the paths written."""
    out = Path(out)
    if out.name == ROUTES_FILE:
        raise InputError(f"{str(out)!r} is the routing map's own name: choose another name for the "
                         f"{dep.format} file",
                         field="--out", value=str(out))
    if out.is_dir():
        raise InputError(f"{str(out)!r} is a folder: give the launch file's path", field="--out",
                         value=str(out))
    routes = out.parent / ROUTES_FILE
    atomic_write_text(routes, routes_json(dep))
    atomic_write_text(out, dep.text)
    if dep.format == "shell":
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(out, 0o777 & ~mask)
    return [out, routes]
