"""Batching advisor benchmark: the twin's throughput-vs-max_num_seqs curves and B_opt against the measured
runs of "Mind the Memory Gap" (arXiv 2503.08311; repository FerranAgulloLopez/vLLMBatchingMemoryGap,
``benchmarks/definitive_results/advisor/output_length``). Protocol: bench/advisor.md.

The data is read where it lives, never copied: ``--data`` is a checkout of that repository or its git
directory (read with ``git show``); default ``$PLACER_MEMGAP_DIR``, else
``~/.cache/placer/vLLMBatchingMemoryGap``.

Run: ``python bench/bench_advisor.py --data PATH`` (about a minute on 2 cores).
"""

# ruff: noqa: E501  (the summary writes Markdown table rows; splitting their f-strings hides the columns)
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import re
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
ENV = "PLACER_MEMGAP_DIR"
DEFAULT = Path("~/.cache/placer/vLLMBatchingMemoryGap")
BASE = "benchmarks/definitive_results/advisor/output_length"
GPU = "h100-64gb"  # the runs' GPU: 63.43 GiB visible (MareNostrum 5 H100 64 GB), see the server logs
#: the paper's model folders → our catalogue's architecture of the same model (None: not represented)
MODEL_MAP: dict[str, str | None] = {"llama-2-7b": "llama-2-7b-chat", "llama-2-13b": "llama-2-13b-chat",
                                    "opt-1.3b": None, "opt-2.7b": None}
BUDGET = 512  # vLLM 0.6's default max_num_batched_tokens with chunked prefill ("Chunked prefill is enabled
#             with max_num_batched_tokens=512." in every server log)
TOLERANCE = 0.05
FIELDS = ("model", "twin_model", "output_len", "max_num_seqs", "num_prompts", "input_tokens", "output_tokens",
          "measured_tok_s", "twin_tok_s", "twin_over_measured", "measured_kv_tokens", "twin_kv_tokens",
          "measured_duration_s", "twin_makespan_s", "twin_wall_s")


class Source:
    """The repository's files, from a checkout (a folder holding ``benchmarks/``) or a git directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.git = not (path / "benchmarks").is_dir()
        if self.git and not (path / "HEAD").is_file() and not (path / ".git").exists():
            raise SystemExit(f"error: {path}: neither a checkout of vLLMBatchingMemoryGap nor its git directory; "
                             f"fetch the repository and give --data or set {ENV}")
        self.commit = self._git("rev-parse", "HEAD").strip() if self.git else "checkout"

    def _git(self, *args: str) -> str:
        return subprocess.run(["git", f"--git-dir={self.path}", *args], capture_output=True, text=True,
                              check=True).stdout

    def listdir(self, rel: str) -> list[str]:
        if not self.git:
            p = self.path / rel
            return sorted(x.name for x in p.iterdir()) if p.is_dir() else []
        out = self._git("ls-tree", "--name-only", f"HEAD:{rel}") if self._exists(rel) else ""
        return sorted(out.split())

    def _exists(self, rel: str) -> bool:
        return subprocess.run(["git", f"--git-dir={self.path}", "cat-file", "-e", f"HEAD:{rel}"],
                              capture_output=True).returncode == 0

    def read(self, rel: str) -> str:
        return (self.path / rel).read_text() if not self.git else self._git("show", f"HEAD:{rel}")


def measured_runs(src: Source) -> list[dict[str, Any]]:
    """One record per run folder with a benchmark result: model, output length, max_num_seqs, throughput."""
    out = []
    for length_dir in src.listdir(BASE):
        m = re.fullmatch(r"_(\d+)", length_dir)
        if not m:
            continue
        for model in src.listdir(f"{BASE}/{length_dir}"):
            for run in src.listdir(f"{BASE}/{length_dir}/{model}"):
                r = re.fullmatch(r"_(\d+)__(\d+)", run)
                if not r:
                    continue
                rel = f"{BASE}/{length_dir}/{model}/{run}"
                files = src.listdir(rel)
                res = [f for f in files if f.startswith("openai-") and f.endswith(".json")
                       and "intermediate" not in f]
                rec: dict[str, Any] = {"model": model, "output_len": int(m.group(1)),
                                       "max_num_seqs": int(r.group(1)), "num_prompts": int(r.group(2)),
                                       "result": None}
                if len(res) == 1:
                    rec["result"] = json.loads(src.read(f"{rel}/{res[0]}"))
                if "cache_config.txt" in files:
                    blocks = re.search(r'num_gpu_blocks="(\d+)"', src.read(f"{rel}/cache_config.txt"))
                    rec["kv_tokens"] = int(blocks.group(1)) * 16 if blocks else None
                out.append(rec)
    return out


def no_lora(profile: Any) -> Any:
    """The profile without LoRA: the paper's runs serve the base model alone (no buffers, no LoRA cost)."""
    step = replace(profile.step, lora_per_adapter=0.0, lora_per_rank=0.0, lora_ms_per_adapter_rank=0.0,
                   load_gpu_ms=0.0, load_gpu_ms_per_rank=0.0, load_disk_ms=0.0)
    memory = replace(profile.memory, kv_per_slot_rank=0.0, kv_per_slot=0.0, table=())
    return profile.replace(step=step, memory=memory)


def twin_run(profile: Any, n: int, input_tokens: int, output_tokens: int, max_num_seqs: int) -> dict[str, float]:
    """``n`` requests of fixed lengths all arriving at t = 0 (the client's request rate inf), one server."""
    from twin.engine import run_engine

    kv = profile.memory.kv_tokens(1, 8)
    t0 = time.perf_counter()
    run = run_engine(np.zeros(n), np.zeros(n, np.int64), np.full(n, input_tokens, np.int64),
                     np.full(n, output_tokens, np.int64), np.array([8]), max_loras=1, max_cpu_loras=1,
                     max_lora_rank=8, kv_blocks=int(kv // profile.memory.block_size), profile=profile,
                     max_num_batched_tokens=BUDGET, max_num_seqs=max_num_seqs, duration_s=1e7)
    makespan = float(np.max(run.finish_s))
    if not np.isfinite(makespan) or not np.all(run.status == 3):
        raise RuntimeError(f"twin run did not finish every request (B = {max_num_seqs})")
    return {"tok_s": n * (input_tokens + output_tokens) / makespan, "makespan_s": makespan, "kv_tokens": kv,
            "wall_s": time.perf_counter() - t0}


def b_opt(curve: dict[int, float]) -> int:
    """The smallest max_num_seqs within 5 % of the curve's best throughput (no latency bound: the runs
    send every request at t = 0, so TTFT is queueing time by construction)."""
    best = max(curve.values())
    return min(b for b, thr in curve.items() if thr >= (1 - TOLERANCE) * best)


def rows_for(src: Source) -> tuple[list[dict[str, Any]], list[str]]:
    from twin.catalogue import load_profile

    rows, skipped = [], []
    profiles: dict[str, Any] = {}
    for rec in measured_runs(src):
        ours = MODEL_MAP.get(rec["model"])
        where = f"{rec['model']} output {rec['output_len']} max_num_seqs {rec['max_num_seqs']}"
        if ours is None:
            skipped.append(f"{where}: no architecture for {rec['model']} in twin.hardware (OPT)")
            continue
        res = rec["result"]
        if res is None:
            skipped.append(f"{where}: the run folder holds no benchmark result")
            continue
        if ours not in profiles:
            profiles[ours] = no_lora(load_profile(ours, GPU))
        n = int(res["num_prompts"])
        inp = round(res["total_input_tokens"] / n)
        outp = round(res["total_output_tokens"] / n)
        tw = twin_run(profiles[ours], n, inp, outp, rec["max_num_seqs"])
        meas = float(res["total_token_throughput"])
        rows.append({"model": rec["model"], "twin_model": ours, "output_len": rec["output_len"],
                     "max_num_seqs": rec["max_num_seqs"], "num_prompts": n, "input_tokens": inp,
                     "output_tokens": outp, "measured_tok_s": round(meas, 1), "twin_tok_s": round(tw["tok_s"], 1),
                     "twin_over_measured": round(tw["tok_s"] / meas, 4),
                     "measured_kv_tokens": rec.get("kv_tokens"), "twin_kv_tokens": round(tw["kv_tokens"]),
                     "measured_duration_s": round(float(res["duration"]), 2),
                     "twin_makespan_s": round(tw["makespan_s"], 2), "twin_wall_s": round(tw["wall_s"], 3)})
    return rows, skipped


def summarise(rows: list[dict[str, Any]], skipped: list[str], src: Source, wall: float) -> str:
    from twin.metrics import smape_paper

    cases: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        cases.setdefault((r["model"], r["output_len"]), []).append(r)
    lines = [f"# Batching advisor against the paper's measurements — {dt.date(2026, 12, 4).isoformat()}", "",
             f"Protocol: bench/advisor.md. Data: FerranAgulloLopez/vLLMBatchingMemoryGap at commit "
             f"`{src.commit[:12]}`, `{BASE}` (read in place). Twin: profiles **derived** from architecture "
             f"and datasheet (`twin.hardware`, UNCALIBRATED) for {GPU}, LoRA terms removed; "
             f"max_num_batched_tokens {BUDGET}. {len(rows)} runs compared in {wall:.0f} s.", "",
             "| model (ours) | output len | grid | SMAPE % (papers') | SMAPE % (symmetric) | median twin/measured | measured B_opt | twin B_opt | within one grid step | KV-only rule |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    hits, kv_hits, total, all_m, all_t = 0, 0, 0, [], []
    for (model, length), rs in sorted(cases.items()):
        rs = sorted(rs, key=lambda r: r["max_num_seqs"])
        grid = [r["max_num_seqs"] for r in rs]
        meas = {r["max_num_seqs"]: r["measured_tok_s"] for r in rs}
        twin = {r["max_num_seqs"]: r["twin_tok_s"] for r in rs}
        bm, bt = b_opt(meas), b_opt(twin)
        # the baseline a twin must beat: the smallest grid point whose batch fills the measured KV cache
        fill = min(r["measured_kv_tokens"] or 0 for r in rs) / (rs[0]["input_tokens"] + rs[0]["output_tokens"])
        bk = min((b for b in grid if b >= fill), default=grid[-1])
        kv_hits += abs(grid.index(bm) - grid.index(bk)) <= 1
        ok = abs(grid.index(bm) - grid.index(bt)) <= 1
        hits += ok
        total += 1
        m, t = [meas[b] for b in grid], [twin[b] for b in grid]
        all_m += m
        all_t += t
        s = smape_paper(m, t)
        ratio = float(np.median(np.array(t) / np.array(m)))
        lines.append(f"| {model} ({rs[0]['twin_model']}) | {length} | {','.join(map(str, grid))} | {s:.1f} | {2 * s:.1f} | {ratio:.2f} | {bm} | {bt} | {'yes' if ok else 'no'} | {bk} |")
    lines += ["", f"**B_opt within one grid step: {hits} of {total} cases** (target ≥ 80 %); the KV-only rule (the smallest grid point ≥ measured KV tokens / tokens per request) "
              f"is within one grid step in {kv_hits} of {total}. "
              f"**Throughput SMAPE over all {len(all_m)} runs: {smape_paper(all_m, all_t):.1f} % (papers' form), "
              f"{2 * smape_paper(all_m, all_t):.1f} % (symmetric).**", ""]
    kv = sorted({(r["model"], r["measured_kv_tokens"], r["twin_kv_tokens"]) for r in rows
                 if r["measured_kv_tokens"] is not None})
    lines += ["KV cache at gpu_memory_utilization 0.9 (measured: vLLM's num_gpu_blocks × 16; twin: the derived "
              "MemoryModel):", ""]
    lines += [f"- {m}: measured {km:,} tokens, twin {kt:,} tokens ({kt / km:.2f}×)" for m, km, kt in
              sorted({(m, km, kt) for m, km, kt in kv})]
    lines += ["", f"Not compared ({len(skipped)} run folders):", ""]
    reasons: dict[str, int] = {}
    for s in skipped:
        reasons[s.split(": ", 1)[1]] = reasons.get(s.split(": ", 1)[1], 0) + 1
    lines += [f"- {why}: {n}" for why, n in sorted(reasons.items())]
    lines += [f"  - {s}" for s in skipped if "no benchmark result" in s]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=None,
                    help=f"checkout or git directory of vLLMBatchingMemoryGap (default ${ENV}, else {DEFAULT})")
    ap.add_argument("--out", type=Path, default=RESULTS / "advisor.csv")
    ap.add_argument("--summary", type=Path, default=RESULTS / "advisor-2026-12-04.md")
    args = ap.parse_args()
    data = args.data or Path(os.environ.get(ENV, "") or DEFAULT.expanduser())
    src = Source(data.expanduser())
    t0 = time.perf_counter()
    rows, skipped = rows_for(src)
    wall = time.perf_counter() - t0
    import io

    from twin.files import atomic_write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS)
    w.writeheader()
    w.writerows(sorted(rows, key=lambda r: (r["model"], r["output_len"], r["max_num_seqs"])))
    atomic_write_text(args.out, buf.getvalue())
    text = summarise(rows, skipped, src, wall)
    atomic_write_text(args.summary, text)
    print(text)


if __name__ == "__main__":
    main()
