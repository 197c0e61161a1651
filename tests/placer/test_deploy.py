"""``placer deploy --format shell|compose|k8s``: the launch files parse, every adapter is routed exactly once,
every server carries its GPU's plan settings, and the shell script really stops its servers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_run import run_cli

from placer.deploy import FORMATS, deployment, write_deployment
from placer.problem.io import write_instance
from placer.result import GpuPlan, Result
from twin.errors import InputError
from twin.spec import Adapter, Instance, ServerSettings

PROBLEM = Instance(name="Fleet_Test", model="qwen-2.5-7b-instruct", gpu="h100-64gb",
                   server=ServerSettings(max_num_seqs=96, max_model_len=8192),
                   adapters=tuple(Adapter(f"a{i}", (8, 16, 32)[i % 3], 0.1) for i in range(7)))
PLAN = Result(solver="hand", status="feasible", num_gpus=3, lower_bound=2, runtime_s=0.0, gpus=(
    GpuPlan(("a0", "a1", "a2"), max_loras=2, max_cpu_loras=3, max_lora_rank=32),
    GpuPlan(("a3", "a4"), max_loras=1, max_cpu_loras=2, max_lora_rank=16),
    GpuPlan(("a5", "a6"), max_loras=2, max_cpu_loras=2, max_lora_rank=32)))


def _flags(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """``--flag value`` pairs of a vllm serve argument list, and the ``--lora-modules`` entries."""
    i = args.index("--lora-modules")
    head, modules = args[:i], args[i + 1:]
    flags: dict[str, str] = {}
    k = 0
    while k < len(head):
        if head[k] == "--enable-lora":
            flags["--enable-lora"] = ""
            k += 1
        elif head[k].startswith("--"):
            flags[head[k]] = head[k + 1]
            k += 2
        else:
            flags["model"] = head[k]
            k += 1
    return flags, modules


def _check_server(args: list[str], g: GpuPlan, adapter_dir: str) -> dict[str, str]:
    flags, modules = _flags(args)
    assert flags["model"] == "Qwen/Qwen2.5-7B-Instruct" and "--enable-lora" in flags
    assert flags["--max-loras"] == str(g.max_loras)
    assert flags["--max-cpu-loras"] == str(g.max_cpu_loras)
    assert flags["--max-lora-rank"] == str(g.max_lora_rank)
    assert flags["--max-num-seqs"] == "96" and flags["--max-model-len"] == "8192"
    assert flags["--max-num-batched-tokens"] == "2048" and flags["--gpu-memory-utilization"] == "0.9"
    assert modules == [f"{a}={adapter_dir}/{a}" for a in g.adapters]
    return flags


def _check_routes(routes: dict[str, str], urls: list[str]) -> None:
    """Every adapter of the plan routed exactly once, to the server of the GPU that holds it."""
    assert sorted(routes) == sorted(a.id for a in PROBLEM.adapters)
    for g, url in zip(PLAN.gpus, urls, strict=True):
        assert {a for a, u in routes.items() if u == url} == set(g.adapters)
    assert len(set(urls)) == len(urls)


def test_compose_has_one_gpu_service_per_plan_gpu(tmp_path: Path) -> None:
    dep = deployment(PROBLEM, PLAN, format="compose", image="vllm/vllm-openai:v0.9.1", host="gpu-box",
                     base_port=9000, adapter_dir="loras")
    files = write_deployment(dep, tmp_path / "compose.yaml")
    assert files == [tmp_path / "compose.yaml", tmp_path / "routes.json"]
    doc = yaml.safe_load((tmp_path / "compose.yaml").read_text())
    assert doc["name"] == "fleet-test" and list(doc["services"]) == ["gpu-0", "gpu-1", "gpu-2"]
    for j, g in enumerate(PLAN.gpus):
        svc = doc["services"][f"gpu-{j}"]
        assert svc["image"] == "vllm/vllm-openai:v0.9.1" and svc["entrypoint"] == ["vllm", "serve"]
        assert _check_server(svc["command"], g, "/adapters")["--port"] == str(9000 + j)
        assert svc["ports"] == [f"{9000 + j}:{9000 + j}"]
        assert "./loras:/adapters:ro" in svc["volumes"]
        assert svc["deploy"]["resources"]["reservations"]["devices"] == [
            {"driver": "nvidia", "device_ids": [str(j)], "capabilities": ["gpu"]}]
        assert f"http://localhost:{9000 + j}/health" in " ".join(svc["healthcheck"]["test"])
    routes = json.loads((tmp_path / "routes.json").read_text())
    _check_routes(routes, [f"http://gpu-box:{9000 + j}" for j in range(3)])
    assert routes == dep.routes


def test_k8s_has_a_deployment_and_a_service_per_gpu(tmp_path: Path) -> None:
    dep = deployment(PROBLEM, PLAN, format="k8s", namespace="llm", adapter_claim="my-loras")
    write_deployment(dep, tmp_path / "k8s.yaml")
    docs = list(yaml.safe_load_all((tmp_path / "k8s.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["Deployment", "Service"] * 3
    urls = []
    for j, g in enumerate(PLAN.gpus):
        d, s = docs[2 * j], docs[2 * j + 1]
        name = f"fleet-test-gpu-{j}"
        assert d["metadata"]["name"] == s["metadata"]["name"] == name
        assert d["metadata"]["namespace"] == s["metadata"]["namespace"] == "llm"
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert labels["placer/plan"] == "fleet-test" and labels["placer/gpu"] == str(j)
        assert labels["app.kubernetes.io/name"] == "vllm"
        selector = d["spec"]["selector"]["matchLabels"]
        assert s["spec"]["selector"] == selector and selector.items() <= labels.items()
        (c,) = d["spec"]["template"]["spec"]["containers"]
        assert c["command"] == ["vllm", "serve"] and c["resources"]["limits"] == {"nvidia.com/gpu": 1}
        assert _check_server(c["args"], g, "/adapters")["--port"] == "8000"
        assert c["readinessProbe"]["httpGet"]["path"] == "/health"
        assert c["ports"] == [{"name": "http", "containerPort": 8000}]
        assert s["spec"]["ports"][0]["port"] == 8000
        claims = [v["persistentVolumeClaim"]["claimName"] for v in d["spec"]["template"]["spec"]["volumes"]
                  if "persistentVolumeClaim" in v]
        assert claims == ["my-loras"]
        urls.append(f"http://{name}.llm.svc.cluster.local:8000")
    _check_routes(json.loads((tmp_path / "routes.json").read_text()), urls)


def test_shell_script_launches_each_gpu_with_its_settings(tmp_path: Path) -> None:
    dep = deployment(PROBLEM, PLAN, adapter_dir="/srv/loras/")
    write_deployment(dep, tmp_path / "launch.sh")
    assert os.stat(tmp_path / "launch.sh").st_mode & stat.S_IXUSR
    subprocess.run(["bash", "-n", str(tmp_path / "launch.sh")], check=True)
    launches = [line for line in dep.text.splitlines() if line.startswith("CUDA_VISIBLE_DEVICES=")]
    assert len(launches) == 3
    for j, (line, g) in enumerate(zip(launches, PLAN.gpus, strict=True)):
        assert line.startswith(f"CUDA_VISIBLE_DEVICES={j} vllm serve ") and line.endswith(" &")
        args = line.removesuffix(" &").split()[3:]
        assert _check_server(args, g, "/srv/loras")["--port"] == str(8000 + j)
    assert [s["argv"][2:] for s in dep.servers] == [line.removesuffix(" &").split()[3:] for line in launches]
    _check_routes(json.loads((tmp_path / "routes.json").read_text()),
                  [f"http://localhost:{8000 + j}" for j in range(3)])


@pytest.mark.parametrize(("options", "field", "value"), [
    ({"format": "helm"}, "--format", "'helm'"),
    ({"base_port": 65534}, "--base-port", "65534"),
    ({"base_port": 0}, "--base-port", "0"),
    ({"host": "http://x"}, "--host", "'http://x'"),
    ({"image": "vllm openai"}, "--image", "'vllm openai'"),
    ({"namespace": "My_NS"}, "--namespace", "'My_NS'"),
    ({"adapter_claim": ""}, "--adapter-claim", "''"),
])
def test_bad_options_name_the_option_and_value(options: dict[str, Any], field: str, value: str) -> None:
    with pytest.raises(InputError) as err:
        deployment(PROBLEM, PLAN, **options)
    assert err.value.field == field and value in str(err.value)


def test_write_refuses_routes_json_or_a_folder_as_the_launch_file(tmp_path: Path) -> None:
    dep = deployment(PROBLEM, PLAN)
    with pytest.raises(InputError, match="routing map's own name"):
        write_deployment(dep, tmp_path / "routes.json")
    with pytest.raises(InputError, match="is a folder"):
        write_deployment(dep, tmp_path)
    assert not list(tmp_path.iterdir())


def test_cli_json_lists_the_files_written_and_rejects_a_plan_for_another_instance(tmp_path: Path) -> None:
    inst, plan = tmp_path / "fleet.yaml", tmp_path / "plan.json"
    write_instance(PROBLEM, inst)
    PLAN.save(plan)
    for fmt in FORMATS:
        out = tmp_path / fmt / "launch.txt"
        code, stdout, _ = run_cli("deploy", str(inst), str(plan), "-f", fmt, "--out", str(out), "--json")
        assert code == 0, stdout
        doc = json.loads(stdout)
        assert doc["format"] == fmt and doc["files"] == [str(out), str(out.parent / "routes.json")]
        assert doc["routes"] == json.loads((out.parent / "routes.json").read_text())
        assert [s["adapters"] for s in doc["servers"]] == [list(g.adapters) for g in PLAN.gpus]
        assert [s["max_loras"] for s in doc["servers"]] == [g.max_loras for g in PLAN.gpus]
    code, stdout, _ = run_cli("deploy", str(inst), str(plan), "--format", "k8s")
    assert code == 0 and len(list(yaml.safe_load_all(stdout))) == 6
    code, stdout, _ = run_cli("deploy", str(inst), str(plan), "--host", "10.0.0.7", "--json")
    doc = json.loads(stdout)
    assert code == 0 and doc["files"] == [] and doc["routes"]["a6"] == "http://10.0.0.7:8002"
    code, _, err = run_cli("deploy", str(inst), str(plan), "--format", "nomad")
    assert code == 2 and "--format" in err and "'nomad'" in err
    PLAN.replace(gpus=PLAN.gpus[:2], num_gpus=2).save(plan)  # a5, a6 placed nowhere
    code, _, err = run_cli("deploy", str(inst), str(plan), "--out", str(tmp_path / "x.sh"))
    assert code == 2 and f"{plan}: gpus: plan cannot be deployed" in err and "a5" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.sh").exists()


# --- the shell script's supervision, with a fake ``vllm`` on PATH ---------------------------------------
FAKE_VLLM = """\
import http.server, os, pathlib, sys
args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
pathlib.Path(os.environ["FAKE_VLLM_PIDS"], str(os.getpid())).write_text(str(port))
if str(port) == os.environ.get("FAKE_VLLM_FAIL_PORT"):
    sys.exit(3)
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


def _free_base_port(n: int) -> int:
    """A port p such that p .. p + n - 1 are free on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65535:
            continue
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class _Launch:
    """The generated script for PLAN running under bash with the fake vllm, in its own process group."""

    def __init__(self, tmp_path: Path, fail_gpu: int | None = None) -> None:
        base = _free_base_port(3)
        bin_dir, self.pid_dir = tmp_path / "bin", tmp_path / "pids"
        bin_dir.mkdir()
        self.pid_dir.mkdir()
        fake = bin_dir / "vllm"
        fake.write_text(f"#!{sys.executable}\n{FAKE_VLLM}")
        fake.chmod(0o755)
        script = tmp_path / "launch.sh"
        write_deployment(deployment(PROBLEM, PLAN, base_port=base), script)
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               "FAKE_VLLM_PIDS": str(self.pid_dir), "STOP_TIMEOUT_S": "5", "HEALTH_TIMEOUT_S": "20"}
        if fail_gpu is not None:
            env["FAKE_VLLM_FAIL_PORT"] = str(base + fail_gpu)
        # as from a terminal: SIGINT at its default disposition even when this test itself runs in the
        # background of a non-interactive shell (which ignores SIGINT, and a shell cannot trap a signal
        # ignored at its start)
        self.proc = subprocess.Popen(["bash", str(script)], env=env, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True, preexec_fn=_default_sigint)
        self.lines: list[str] = []

    def wait_for(self, text: str, timeout: float = 20.0) -> None:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            if text in line:
                return
        raise AssertionError(f"no {text!r} in the script's output: {''.join(self.lines)}")

    def servers(self) -> list[int]:
        return [int(p.name) for p in self.pid_dir.iterdir()]

    def finish(self, timeout: float = 30.0) -> tuple[int | None, list[int]]:
        """The script's exit code (None if it hung) and the servers still alive once it ended; then clean up
        whatever is left, so a failing test leaves no process behind."""
        try:
            rc: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = None
        survivors = [p for p in self.servers() if _alive(p)]
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for pid in survivors:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return rc, survivors


needs_curl = pytest.mark.skipif(shutil.which("curl") is None or not Path("/proc").is_dir(),
                                reason="needs curl and /proc")


@needs_curl
@pytest.mark.parametrize(("sig", "to_group", "code"), [(signal.SIGTERM, False, 143),
                                                       (signal.SIGINT, True, 130)])
def test_shell_script_stops_every_server_on_term_and_ctrl_c(tmp_path: Path, sig: int, to_group: bool,
                                                             code: int) -> None:
    launch = _Launch(tmp_path)
    try:
        launch.wait_for("all 3 servers healthy")
        pids = launch.servers()
        assert len(pids) == 3 and all(_alive(p) for p in pids)
        if to_group:  # Ctrl-C in a terminal: SIGINT to the whole foreground process group
            os.killpg(launch.proc.pid, sig)
        else:
            launch.proc.send_signal(sig)
    finally:
        rc, survivors = launch.finish()
    assert rc == code, "".join(launch.lines)
    assert survivors == [], "a server outlived the launch script"


@needs_curl
def test_shell_script_fails_and_stops_the_others_when_a_server_does_not_start(tmp_path: Path) -> None:
    launch = _Launch(tmp_path, fail_gpu=1)
    try:
        launch.wait_for("GPU 1: server exited before answering /health")
    finally:
        rc, survivors = launch.finish()
    assert rc == 1 and len(launch.servers()) == 3
    assert survivors == []


def test_the_launch_header_counts_gpus_in_words(tmp_path: Path) -> None:
    # issue 15 item 9: "1 GPUs" in the deploy header
    problem = Instance(name="one", model="llama-3.1-8b-instruct", gpu="h100-64gb",
                       adapters=(Adapter("a0", 8, 0.1),))
    plan = Result(solver="x", status="feasible", num_gpus=1, lower_bound=1, runtime_s=0.0,
                  gpus=(GpuPlan(("a0",), 1, 1, 8),))
    text = deployment(problem, plan, format="shell").text
    assert "1 GPU," in text and "1 GPUs" not in text
