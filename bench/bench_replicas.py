"""Replicas benchmark: the twin's model of N vLLM servers on one GPU (``twin.replicas``) against the
replication runs of "Mind the Memory Gap" (arXiv 2503.08311; repository FerranAgulloLopez/vLLMBatchingMemoryGap,
``benchmarks/definitive_results/replication/``). Protocol: bench/replicas.md.

The data is read where it lives, never copied: ``--data`` is a checkout of that repository or its git
directory (read with ``git show``); default ``$PLACER_MEMGAP_DIR``, else
``~/.cache/placer/vLLMBatchingMemoryGap``.

Run: ``python bench/bench_replicas.py --data PATH`` (about a minute on 2 cores).
"""

# ruff: noqa: E501  (the summary writes Markdown table rows; splitting their f-strings hides the columns)
from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import os
import re
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_advisor import DEFAULT, ENV, GPU, Source, measured_runs, no_lora  # noqa: E402

from twin.catalogue import UncalibratedProfileWarning, load_profile  # noqa: E402
from twin.engine import run_engine  # noqa: E402
from twin.files import atomic_write_text  # noqa: E402
from twin.hardware import GPUS, MODELS  # noqa: E402
from twin.metrics import smape_paper  # noqa: E402
from twin.profile import Profile  # noqa: E402
from twin.replicas import gpu_scaled, replica_kv_tokens, shared_gpu_fixed_point  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BASE = "benchmarks/definitive_results/replication"
MODELS_MEASURED = ("opt-1.3b", "opt-2.7b")
UTILIZATION = 0.9  # the launcher's total, split gpu_memory_utilization / replicas (server logs: 0.45, 0.225)
ADVISOR_BUDGET = 512  # the advisor runs: chunked prefill, vLLM's default budget 512 (bench/advisor.md)
FIELDS = ("model", "chunked", "max_num_seqs", "replicas", "budget", "input_tokens", "output_tokens",
          "measured_tok_s", "twin_derived_tok_s", "twin_fitted_tok_s", "fitted_over_measured", "slowdown",
          "rounds", "measured_duration_s", "twin_fitted_makespan_s")


# --- the profiles ---------------------------------------------------------------------------------------------
def with_attention(profile: Profile) -> Profile:
    """The derived profile plus the attention term it lacks (the Llama-3.1-8B reference fit has
    ``per_ctx_ktoken_ms`` = 0): reading 1,000 context tokens of KV from HBM, kv bytes × 1000 / bandwidth."""
    spec, gpu = MODELS[profile.model], GPUS[profile.gpu]
    ms = spec.kv_bytes_per_token * 1000 / (gpu.hbm_tb_s * 1e12) * 1000
    return profile.replace(step=replace(profile.step, per_ctx_ktoken_ms=round(ms, 6)))


def sharegpt_like(n: int, input_mean: float, output_mean: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (prompt, output) lengths of the twin's ShareGPT-like law (``twin.lengths``: log-normals truncated
    to prompt 4–1024 and prompt + output ≤ 2048, standard deviation = mean) moment-fitted to the run's measured
    means; stratified draws in a seeded random order (the runs' own lengths are not published)."""
    from twin.lengths import SHAREGPT_CV, SHAREGPT_MAX_TOTAL, SHAREGPT_PROMPT_RANGE, _fit_tln, _sample_tln

    rng = np.random.default_rng(seed)
    lo, hi = SHAREGPT_PROMPT_RANGE[0] - 0.5, SHAREGPT_PROMPT_RANGE[1] + 0.5
    mu, sg = _fit_tln(input_mean, SHAREGPT_CV, lo, hi)
    u = (np.arange(n) + 0.5) / n
    inp = np.round(_sample_tln(mu, sg, lo, hi, rng.permutation(u))).astype(np.int64)
    cap = SHAREGPT_MAX_TOTAL - np.sort(inp)[(np.arange(256) * n) // 256] + 0.5
    mu, sg = _fit_tln(output_mean, SHAREGPT_CV, 0.5, cap)
    out = np.round(_sample_tln(mu, sg, 0.5, SHAREGPT_MAX_TOTAL - inp + 0.5, rng.permutation(u))).astype(np.int64)
    return inp, np.maximum(out, 1)


def closed_batch(profile: Profile, n: int, inp: Any, out: Any, b: int, budget: int, kv_tokens: float) -> Any:
    """``n`` requests (lengths: scalars or arrays), all at t = 0, one server (no LoRA: one rank-8 adapter id,
    no cost)."""
    return run_engine(np.zeros(n), np.zeros(n, np.int64), np.broadcast_to(np.asarray(inp, np.int64), n),
                      np.broadcast_to(np.asarray(out, np.int64), n),
                      np.array([8]), max_loras=1, max_cpu_loras=1, max_lora_rank=8,
                      kv_blocks=int(kv_tokens // profile.memory.block_size), profile=profile,
                      max_num_batched_tokens=budget, max_num_seqs=b, duration_s=1e9)


def fit_host(profile: Profile, runs: list[dict[str, Any]]) -> tuple[float, float, int]:
    """Host time per step = a + b · running requests, fitted to the 1-replica advisor runs of one model.

    With every request sent at t = 0 the twin's schedule does not depend on step durations, so a run's
    duration is F + a·S + b·ΣR exactly (F forward seconds, S steps, ΣR running requests summed over steps,
    each from one twin run); (a, b) ≥ 0 minimise the relative squared error of the durations (NNLS)."""
    from scipy.optimize import nnls

    zero = replace(profile.step, sched_base_ms=0.0, sched_per_running_ms=0.0, sched_per_waiting_ms=0.0)
    count = replace(zero, **{f: 0.0 for f in ("base_ms", "per_seq_ms", "per_prefill_token_ms",
                                               "per_ctx_ktoken_ms")}, sched_per_running_ms=1.0)
    rows, rhs = [], []
    for r in runs:
        res = r["result"]
        n = int(res["num_prompts"])
        inp, out = round(res["total_input_tokens"] / n), round(res["total_output_tokens"] / n)
        kv = float(r["kv_tokens"])
        gpu = closed_batch(profile.replace(step=zero), n, inp, out, r["max_num_seqs"], ADVISOR_BUDGET, kv)
        cnt = closed_batch(profile.replace(step=count), n, inp, out, r["max_num_seqs"], ADVISOR_BUDGET, kv)
        dur = float(res["duration"])
        # columns in seconds per ms of a and b: S / 1000 and ΣR / 1000 (= the counting run's busy seconds)
        rows.append([gpu.steps / 1000 / dur, cnt.busy_s / dur])
        rhs.append((dur - gpu.forward_s) / dur)
    (a, b), _ = nnls(np.array(rows), np.array(rhs))
    return float(a), float(b), len(rows)


def fitted_profile(model: str, src: Source) -> tuple[Profile, dict[str, Any]]:
    """Derived profile, LoRA removed, with the attention term, the KV base of the measured 1-replica runs
    (vLLM's num_gpu_blocks × 16 at utilisation 0.9: weights and overhead of one server) and the host terms of
    :func:`fit_host`, all from the ``advisor/`` folder (one replica): the replication runs stay held out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UncalibratedProfileWarning)
        base = with_attention(no_lora(load_profile(model, GPU)))
    runs = [r for r in measured_runs(src) if r["model"] == model and r["result"] is not None
            and r.get("kv_tokens")]
    kv = float(np.median([r["kv_tokens"] for r in runs]))
    prof = base.replace(memory=replace(base.memory, kv_base_tokens=kv))
    a, b, n_fit = fit_host(prof, runs)
    prof = prof.replace(step=replace(prof.step, sched_base_ms=round(a, 4), sched_per_running_ms=round(b, 6)))
    meas, twin = [], []  # the fit's own quality: the advisor runs re-simulated with the fitted profile
    for r in runs:
        res = r["result"]
        n = int(res["num_prompts"])
        inp, out = round(res["total_input_tokens"] / n), round(res["total_output_tokens"] / n)
        run = closed_batch(prof, n, inp, out, r["max_num_seqs"], ADVISOR_BUDGET, float(r["kv_tokens"]))
        meas.append(float(res["total_token_throughput"]))
        twin.append(n * (inp + out) / float(np.max(run.finish_s)))
    info = {"fit_smape": smape_paper(meas, twin), "kv_base_tokens": kv, "derived_kv_base_tokens": base.memory.kv_base_tokens,
            "sched_base_ms": prof.step.sched_base_ms, "sched_per_running_ms": prof.step.sched_per_running_ms,
            "per_ctx_ktoken_ms": prof.step.per_ctx_ktoken_ms, "base_ms": prof.step.base_ms,
            "per_seq_ms": prof.step.per_seq_ms, "fit_runs": n_fit}
    return prof, info


# --- the replication runs ---------------------------------------------------------------------------------------
def run_folders(src: Source, kind: str) -> list[tuple[str, str, int, int, list[str]]]:
    """(model folder, run path, max_num_seqs, replicas, files) of every ``<kind>/<model>/_<B>__<N>`` folder
    of the models measured (``<model>`` or ``<model>_chunked``)."""
    out = []
    root = f"{BASE}/{kind}"
    for folder in src.listdir(root):
        if folder.removesuffix("_chunked") not in MODELS_MEASURED:
            continue
        for run in src.listdir(f"{root}/{folder}"):
            m = re.fullmatch(r"_(\d+)__(\d+)", run)
            if m:
                rel = f"{root}/{folder}/{run}"
                out.append((folder, rel, int(m.group(1)), int(m.group(2)), src.listdir(rel)))
    return out


def replication_runs(src: Source) -> list[dict[str, Any]]:
    """One record per ``overall_metrics`` run folder: model, chunked, max_num_seqs, replicas, the JSON."""
    out = []
    for folder, rel, b, n, files in run_folders(src, "overall_metrics"):
        res = [f for f in files if f.startswith("openai-") and f.endswith(".json")]
        launcher = src.read(f"{rel}/launcher.sh")
        budget = re.search(r"--max-num-batched-tokens=(\d+)", launcher)
        out.append({"model": folder.removesuffix("_chunked"), "chunked": "--enable-chunked-prefill" in launcher,
                    "max_num_seqs": b, "replicas": n,
                    # vLLM V0 without chunked prefill: max(max_model_len, 2048) = 2048 tokens per step
                    "budget": int(budget.group(1)) if budget else 2048,
                    "result": json.loads(src.read(f"{rel}/{res[0]}")) if len(res) == 1 else None})
    return out


def measured_kv(src: Source) -> list[tuple[str, int, int]]:
    """(model, replicas, KV tokens of replica 0) from the ``gpu_metrics`` server logs (# GPU blocks × 16;
    one entry per distinct value; non-chunked runs)."""
    out = set()
    for folder, rel, _, n, files in run_folders(src, "gpu_metrics"):
        logs = [f for f in files if f in ("server_out_0.log", "server_err_0.log")]
        blocks = re.search(r"# GPU blocks: (\d+)", "".join(src.read(f"{rel}/{f}") for f in logs))
        if blocks and folder in MODELS_MEASURED:
            out.add((folder, n, int(blocks.group(1)) * 16))
    return sorted(out)


def twin_replicas(profile: Profile, rec: dict[str, Any]) -> dict[str, float]:
    """The run in the twin: requests dealt round-robin to the replicas (as the benchmark client does), each
    replica at utilisation 0.9 / N, forward passes slowed by the shared GPU (``twin.replicas``)."""
    res, n_rep, b = rec["result"], rec["replicas"], rec["max_num_seqs"]
    n = int(res["num_prompts"])
    inp, out = round(res["total_input_tokens"] / n), round(res["total_output_tokens"] / n)
    kv = replica_kv_tokens(profile.memory, n_rep, 1, 8, UTILIZATION)
    assert kv is not None
    pin, pout = sharegpt_like(n, res["total_input_tokens"] / n, res["total_output_tokens"] / n)
    tokens = int(pin.sum() + pout.sum())

    def one(i: int, s: float) -> tuple[Any, float, float]:
        mine = slice(i, n, n_rep)  # the client deals requests round-robin to the servers
        run = closed_batch(gpu_scaled(profile, s), len(pin[mine]), pin[mine], pout[mine], b, rec["budget"], kv)
        if not np.all(run.status == 3):
            raise RuntimeError(f"twin run did not finish every request ({rec['model']}, B = {b})")
        return run, run.forward_s, float(np.max(run.finish_s))

    runs, slow, rounds = shared_gpu_fixed_point(n_rep, one)
    makespan = max(float(np.max(r.finish_s)) for r in runs)
    return {"tok_s": tokens / makespan, "makespan_s": makespan, "slowdown": slow[0], "rounds": rounds,
            "inp": inp, "out": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=None,
                    help=f"checkout or git directory of vLLMBatchingMemoryGap (default ${ENV}, else {DEFAULT})")
    ap.add_argument("--date", default=dt.datetime.now(dt.UTC).date().isoformat())
    ap.add_argument("--load", default=None, help="machine load to record (default: os.getloadavg)")
    args = ap.parse_args()
    src = Source((args.data or Path(os.environ.get(ENV, "") or DEFAULT.expanduser())).expanduser())
    t0 = time.perf_counter()
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = args.load or " / ".join(f"{x:.2f}" for x in os.getloadavg())
    fitted, derived, infos = {}, {}, {}
    for model in MODELS_MEASURED:
        fitted[model], infos[model] = fitted_profile(model, src)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UncalibratedProfileWarning)
            derived[model] = no_lora(load_profile(model, GPU))
    rows = []
    for rec in replication_runs(src):
        if rec["result"] is None:
            continue
        f = twin_replicas(fitted[rec["model"]], rec)
        d = twin_replicas(derived[rec["model"]], rec)
        meas = float(rec["result"]["total_token_throughput"])
        rows.append({"model": rec["model"], "chunked": rec["chunked"], "max_num_seqs": rec["max_num_seqs"],
                     "replicas": rec["replicas"], "budget": rec["budget"], "input_tokens": f["inp"],
                     "output_tokens": f["out"], "measured_tok_s": round(meas, 1),
                     "twin_derived_tok_s": round(d["tok_s"], 1), "twin_fitted_tok_s": round(f["tok_s"], 1),
                     "fitted_over_measured": round(f["tok_s"] / meas, 4), "slowdown": f["slowdown"],
                     "rounds": f["rounds"], "measured_duration_s": round(float(rec["result"]["duration"]), 2),
                     "twin_fitted_makespan_s": round(f["makespan_s"], 2)})
    rows.sort(key=lambda r: (r["model"], r["chunked"], r["replicas"], r["max_num_seqs"]))
    wall = time.perf_counter() - t0
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(RESULTS / f"replicas-{args.date}.csv", buf.getvalue())
    text = summarise(rows, infos, fitted, measured_kv(src), src, wall, f"{load} at {started}", args.date)
    atomic_write_text(RESULTS / f"replicas-{args.date}.md", text)
    chart(rows, RESULTS / f"replicas-{args.date}.png")
    print(text)


def summarise(rows: list[dict[str, Any]], infos: dict[str, Any], fitted: dict[str, Profile],
              kv: list[tuple[str, int, int]], src: Source, wall: float, load: str, date: str) -> str:
    def s(sel: list[dict[str, Any]], key: str) -> str:
        return f"{smape_paper([r['measured_tok_s'] for r in sel], [r[key] for r in sel]):.1f}" if sel else "—"

    lines = [f"# Replicas per GPU against the paper's replication runs — {date}", "",
             "Protocol: bench/replicas.md. Data: FerranAgulloLopez/vLLMBatchingMemoryGap at commit "
             f"`{src.commit[:12]}`, `{BASE}/overall_metrics` (read in place). Command: "
             "`python bench/bench_replicas.py --data PATH`. Machine: the project's 2-core x86_64 box, load "
             f"average {load} (start); {len(rows)} runs, {wall:.0f} s.", "",
             "**Profiles.** *derived*: `twin.hardware.derived_profile` (UNCALIBRATED), LoRA removed. *fitted*: "
             "the derived profile + an attention term (KV bytes / HBM bandwidth) + the KV base and the host "
             "terms (a + b · running, per step) fitted to the 1-replica `advisor/` runs of the same model; "
             "the replication runs are not used to fit.", "",
             "| model | fit runs | fit SMAPE % (advisor runs) | KV base (derived → measured) | host a (ms/step) | host b (ms/running req) | attention (ms/1k ctx tokens) |",
             "|---|---|---|---|---|---|---|"]
    for m, i in infos.items():
        lines.append(f"| {m} | {i['fit_runs']} | {i['fit_smape']:.1f} | {i['derived_kv_base_tokens']:,.0f} → {i['kv_base_tokens']:,.0f} | "
                     f"{i['sched_base_ms']:.3f} | {i['sched_per_running_ms']:.4f} | {i['per_ctx_ktoken_ms']:.4f} |")
    lines += ["", "| model | chunked | max_num_seqs | replicas | measured tok/s | twin derived | twin fitted | fitted/measured | slowdown s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {'yes' if r['chunked'] else 'no'} | {r['max_num_seqs']} | {r['replicas']} | "
                     f"{r['measured_tok_s']:,.0f} | {r['twin_derived_tok_s']:,.0f} | {r['twin_fitted_tok_s']:,.0f} | "
                     f"{r['fitted_over_measured']:.2f} | {r['slowdown']:.3f} |")
    lines += ["", "SMAPE % (papers' form, 100 · mean(|m − t| / (|m| + |t|))), throughput:", "",
              "| subset | runs | twin fitted | twin derived |", "|---|---|---|---|"]
    subsets: list[tuple[str, list[dict[str, Any]]]] = [("all", rows)]
    subsets += [(m, [r for r in rows if r["model"] == m]) for m in MODELS_MEASURED]
    subsets += [(f"{k} replica(s)", [r for r in rows if r["replicas"] == k]) for k in (1, 2, 4)]
    for name, sel in subsets:
        lines.append(f"| {name} | {len(sel)} | {s(sel, 'twin_fitted_tok_s')} | {s(sel, 'twin_derived_tok_s')} |")
    # the gain of replication at the same max_num_seqs, measured and in the twin
    lines += ["", "Gain of N replicas over 1 at the same max_num_seqs (non-chunked):", ""]
    for m in MODELS_MEASURED:
        for b in sorted({r["max_num_seqs"] for r in rows if r["model"] == m}):
            one = [r for r in rows if r["model"] == m and r["max_num_seqs"] == b and r["replicas"] == 1 and not r["chunked"]]
            for r in rows:
                if one and r["model"] == m and r["max_num_seqs"] == b and r["replicas"] > 1 and not r["chunked"]:
                    lines.append(f"- {m}, B = {b}, {r['replicas']} replicas: measured ×{r['measured_tok_s'] / one[0]['measured_tok_s']:.2f}, "
                                 f"twin fitted ×{r['twin_fitted_tok_s'] / one[0]['twin_fitted_tok_s']:.2f}")
    lines += ["", "KV cache per replica (measured: `gpu_metrics` server log of replica 0, # GPU blocks × 16; twin: "
              "`twin.replicas.replica_kv_tokens` at 0.9 / N):", ""]
    for m, n in sorted({(m, n) for m, n, _ in kv}):
        seen = [tok for mm, nn, tok in kv if (mm, nn) == (m, n)]
        lo, hi = min(seen), max(seen)
        mem = fitted[m].memory
        t = replica_kv_tokens(mem, n, 1, 8, UTILIZATION) or 0.0
        gib = (UTILIZATION / n) * mem.gpu_mem_gib
        lines.append(f"- {m}, {n} replica(s) at {UTILIZATION / n:.3g} ({gib:.2f} GiB each): measured {lo:,}–{hi:,} "
                     f"({len(seen)} runs), twin fitted {t:,.0f} ({t / hi:.2f}–{t / lo:.2f}×)")
    lines.append("")
    return "\n".join(lines)


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for key, mark, label in (("twin_fitted_tok_s", "o", "twin (fitted host terms)"),
                             ("twin_derived_tok_s", "x", "twin (derived profile)")):
        for k, colour in ((1, "C0"), (2, "C1"), (4, "C2")):
            sel = [r for r in rows if r["replicas"] == k]
            ax.scatter([r["measured_tok_s"] for r in sel], [r[key] for r in sel], marker=mark, color=colour,
                       label=f"{label}, {k} replica(s)")
    hi = max(max(r["twin_derived_tok_s"], r["measured_tok_s"]) for r in rows) * 1.05
    ax.plot([0, hi], [0, hi], color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured throughput (tok/s)")
    ax.set_ylabel("twin throughput (tok/s)")
    ax.set_title("OPT-1.3B / 2.7B on one H100 64 GB: 1, 2, 4 replicas")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    from twin.files import atomic_write_bytes

    atomic_write_bytes(path, buf.getvalue())


if __name__ == "__main__":
    main()
