"""The Markdown summary of a placement report (``README.md`` of the folder
:func:`placer.reporting.report.write_report`
writes): the verdict first, then the workload, the per-GPU settings, how to deploy, the charts and files."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from placer.result import Result, plural
from twin.spec import Instance

if TYPE_CHECKING:
    from placer.check.verify import VerifyReport

MAX_TABLE_ROWS = 50
FILES = {
    "README.md": "this summary",
    "plan.json": "the plan (what `placer verify` and `placer deploy` read)",
    "instance.yaml": "the instance the plan is for",
    "instance.adapters.csv": "its adapters (large instances)",
    "launch.sh": "one `vllm serve` per GPU with the plan's LoRA settings, health-checked and stopped "
                 "together on Ctrl-C (`bash launch.sh`)",
    "launch.json": "the same launch settings, machine-readable",
    "routes.json": "adapter id → URL of the server that serves it (for a gateway or client)",
    "verification.json": "the twin's result for every simulated GPU",
    "plan.png": "per GPU: offered load by rank vs throughput; adapters by rank and `max_loras`",
}


def _n(x: Any, spec: str = ",.0f") -> str:
    if x is None:
        return "–"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return format(v, spec) if np.isfinite(v) else "–"


def _seconds(x: Any) -> str:
    return "–" if x is None or not np.isfinite(float(x)) else f"{float(x):.3g} s"


def _verdict(verification: VerifyReport | None, result: Result) -> str:
    if not result.gpus:
        return f"**No plan**: {result.reason or 'the solver found none'}."
    if verification is None:
        return ("Twin verification: **not run** (the plan is the oracle's judgement only; run "
                "`placer verify instance.yaml plan.json`).")
    what = (f"{len(verification.simulated)} of {plural(verification.num_gpus, 'GPU')} (a seeded sample)"
            if verification.sampled else f"all {plural(verification.num_gpus, 'GPU')}")
    checked = verification.criterion or result.criterion or "the papers' rule"
    if verification.feasible:
        scope = " for the sampled GPUs only" if verification.sampled else ""
        return (f"Twin verification against **{checked}**: **feasible{scope}** — {what} simulated; every "
                "one meets it and can start (no memory error).")
    lines = [f"Twin verification against **{checked}**: **NOT feasible** — {what} simulated, "
             f"{len(verification.failures)} failed:"]
    lines += [f"- {f}" for f in verification.failures[:20]]
    if len(verification.failures) > 20:
        lines.append(f"- ... {len(verification.failures) - 20} more (see verification.json)")
    return "\n".join(lines)


def _workload(problem: Instance) -> list[str]:
    from placer.problem.summary import instance_summary

    s = instance_summary(problem)
    by_rank = ", ".join(f"rank {r}: {v['adapters']}" for r, v in s["by_rank"].items())
    return [
        "## The workload", "",
        "| adapters | by rank | total rate | offered load | window | arrival | request lengths |",
        "|---|---|---|---|---|---|---|",
        f"| {s['adapters']:,} | {by_rank} | {s['rate_rps']['total']:,.2f} req/s | "
        f"{s['offered_tok_s']:,.0f} tok/s | {s['duration_s']:,.0f} s | {s['arrival']} | {s['lengths']} |", "",
        f"Model `{problem.model}` on `{problem.gpu}`; server: max_num_batched_tokens "
        f"{problem.server.max_num_batched_tokens}, max_num_seqs {problem.server.max_num_seqs}, "
        f"gpu_memory_utilization {problem.server.gpu_memory_utilization:g}.", "",
    ]


def _gpu_table(problem: Instance, result: Result, verification: VerifyReport | None) -> list[str]:
    rows = {int(r["gpu"]): r for r in verification.gpus} if verification else {}
    index = problem.index
    head = ["## Per GPU", "",
            "| GPU | adapters | ranks | max_loras | max_cpu_loras | max_lora_rank | offered tok/s | "
            "predicted tok/s | twin tok/s | twin served | TTFT p50 | TTFT p99 | TPOT p99 | queue | twin |",
            "|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|---|"]
    failing = {j for j, r in rows.items()
               if r.get("oom") or not r.get("meets_criterion", not r.get("starved"))}
    show = list(range(min(len(result.gpus), MAX_TABLE_ROWS)))
    show += sorted(j for j in failing if j >= MAX_TABLE_ROWS)
    out = []
    for j in show:
        g = result.gpus[j]
        ranks = sorted({int(problem.ranks[index[a]]) for a in g.adapters if a in index})
        r = rows.get(j)
        if r is None:
            twin = ("–", "–", "–", "–", "–", "–", "not simulated")
        else:
            fails = not r.get("meets_criterion", not r.get("starved"))
            verdict = ("memory error" if r.get("oom") else "**starved**" if r.get("starved")
                       else "**fails the SLO**" if fails else "ok")
            served = r.get("served_fraction")
            frac = "–" if served is None else f"{100 * served:.0f} %"
            tpot = r.get("tpot_p99_s")
            twin = (_n(r.get("throughput_tok_s")), frac, _seconds(r.get("ttft_p50_s")),
                    _seconds(r.get("ttft_p99_s")), "–" if tpot is None else f"{1000 * tpot:.0f} ms",
                    str(r.get("queue_trend", "–")), verdict)
        out.append(f"| {j} | {len(g.adapters)} | {', '.join(map(str, ranks))} | {g.max_loras} | "
                   f"{g.max_cpu_loras} | {g.max_lora_rank} | {_n(g.offered_tok_s)} | "
                   f"{_n(g.predicted_throughput_tok_s)} | {' | '.join(twin)} |")
    more = len(result.gpus) - len(show)
    tail = ["", f"... and {more} more GPUs: see plan.json and verification.json."] if more > 0 else []
    return head + out + tail + [""]


def summary_markdown(problem: Instance, result: Result, verification: VerifyReport | None, *,
                     launch_error: str | None = None, twin_png: str | None = None,
                     files: Sequence[str] = (), charts: bool = True) -> str:
    """The report's README.md text."""
    when = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    gap = "–" if result.gap is None else f"{100 * result.gap:.1f} %"
    lines = [
        f"# Placement report: {problem.name}", "",
        f"*{problem.n_adapters:,} LoRA adapters of `{problem.model}` on `{problem.gpu}` GPUs; "
        f"written by placer on {when}.*", "",
        "## Verdict", "",
        (f"**{plural(result.num_gpus, 'GPU')}** " if result.gpus else "**No plan** ")
        + f"(solver `{result.solver}`, status {result.status}, lower bound {result.lower_bound}, gap {gap}, "
        f"solved in {result.runtime_s:.2f} s with the `{result.oracle}` oracle).", "",
        _verdict(verification, result), "",
    ]
    if result.extra.get("bound_warning"):
        lines += [f"Note: {result.extra['bound_warning']}.", ""]
    lines += _workload(problem)
    if result.gpus:
        lines += _gpu_table(problem, result, verification)
        lines += ["## Deploy", ""]
        if launch_error:
            lines += [f"No launch script: {launch_error}.", ""]
        else:
            lines += ["`bash launch.sh` starts one vLLM server per GPU (GPU j on port 8000 + j), waits until "
                      "each answers `/health` and stops them all on Ctrl-C; adapters are expected in "
                      "`adapters/<id>` (change with `placer deploy --adapter-dir`). `routes.json` maps each "
                      "adapter to its server's URL. The settings of each GPU are in the table above and in "
                      "`launch.json`; `placer deploy --format compose|k8s` writes a Docker Compose file or "
                      "Kubernetes manifests instead.", ""]
    if charts and result.gpus:
        lines += ["## Charts", "", "![plan](plan.png)", ""]
        if twin_png:
            lines += ["The simulated GPU that served the smallest fraction of its load, over the window:", "",
                      f"![twin run]({twin_png})", ""]
    lines += [
        "## Definitions", "",
        "- **Throughput** (tok/s) = prompt + generated tokens of the requests *completed* inside the window, "
        "divided by the window length; unfinished requests count zero.",
        "- **Offered load** (tok/s) = prompt + expected output tokens of *every* request that arrived, "
        "divided by the window.",
        f"- **Criterion** checked: {problem.slo.describe()}. TTFT percentiles are censored (a request "
        "with no first token at the window's end counts with its wait so far); TPOT = (last − first token) "
        "/ (output tokens − 1); queue = the backlog's trend over the second half of the window.",
        "- **Starved** ⇔ throughput < 0.9 × offered load. **Memory error** ⇔ the settings cannot start "
        "(LoRA buffers do not fit, or the KV cache is smaller than `max_model_len` tokens).",
        "- **Lower bound**: no plan can use fewer GPUs (for the solver's capacity model); gap = "
        "(GPUs − bound) / GPUs.", "",
        "## Files", "",
    ]
    described = dict(FILES)
    if twin_png:
        described[twin_png] = "the worst simulated GPU over time (running/waiting, KV use, served fraction)"
    lines += [f"- `{f}` — {described.get(f, '')}".rstrip(" —") for f in files if not f.startswith(".")]
    lines += ["", "Check again or re-deploy from this folder:", "", "```bash",
              "placer verify instance.yaml plan.json",
              "placer deploy instance.yaml plan.json --out launch.sh",
              "```", ""]
    return "\n".join(lines)
