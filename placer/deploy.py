"""A plan as something deployable: one ``vllm serve`` command per GPU with its LoRA settings.

Each GPU gets ``CUDA_VISIBLE_DEVICES=<j> vllm serve <HF model id> --enable-lora --max-loras S
--max-cpu-loras M --max-lora-rank R --max-model-len L --max-num-batched-tokens B --max-num-seqs N
--gpu-memory-utilization U --port P --lora-modules id=path ...`` — the settings the twin verified. Adapter
paths are ``<adapter_dir>/<id>`` unless a mapping is given.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from placer.check.evaluate import check_plan
from placer.problem.memory import max_model_len
from placer.result import Result
from twin.errors import InputError
from twin.profile import Profile
from twin.spec import Instance

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
    out = []
    for j, g in enumerate(plan.gpus):
        paths = adapter_paths or {}
        base = adapter_dir.rstrip("/")
        modules = [f"{a}={paths.get(a, base + '/' + a)}" for a in g.adapters]
        argv = ("vllm", "serve", model, "--enable-lora",
                "--max-loras", str(g.max_loras), "--max-cpu-loras", str(g.max_cpu_loras),
                "--max-lora-rank", str(g.max_lora_rank),
                "--max-model-len", str(max_model_len(problem, profile)),
                "--max-num-batched-tokens", str(srv.max_num_batched_tokens),
                "--max-num-seqs", str(srv.max_num_seqs),
                "--gpu-memory-utilization", f"{srv.gpu_memory_utilization:g}",
                "--port", str(base_port + j),
                "--lora-modules", *modules)
        out.append(GpuLaunch(j, base_port + j, argv))
    return out


def deploy_script(problem: Instance, plan: Result, **options: object) -> str:
    """A bash script launching every GPU's server in the background (one command per GPU)."""
    launches = launch_commands(problem, plan, **options)  # type: ignore[arg-type]
    lines = ["#!/usr/bin/env bash", f"# {problem.name}: {plan.num_gpus} GPUs, plan by {plan.solver}",
             "set -e"]
    lines += [f"{launch.command} &" for launch in launches]
    lines.append("wait")
    return "\n".join(lines) + "\n"
