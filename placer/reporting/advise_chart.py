"""The chart of ``placer advise``: throughput and p99 latency against ``max_num_seqs``, B_opt marked."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from placer.reporting.charts import _BAD, _INK, _OK, _figure, _format_of, _k, save

if TYPE_CHECKING:
    from placer.advise import Advice

GIB = 2**30


def advise_chart(advice: Advice, path: str | Path, *, kv_bytes_per_token: int, title: str = "") -> Path:
    """Top: throughput (left axis) and the KV memory each batch needs in GiB (right axis); bottom: TTFT p99
    and TPOT p99 (log scale) with the criterion's bounds; filled markers meet the criterion, hollow ones do
    not; B_opt is the dashed vertical line. ``kv_bytes_per_token`` converts KV tokens into GiB."""
    from matplotlib.ticker import FuncFormatter

    _format_of(path)
    fig = _figure(8.0, 7.0)
    ax_thr, ax_lat = fig.subplots(2, 1, sharex=True)
    pts = [p for p in advice.points if not p.oom]
    xs = [p.max_num_seqs for p in pts]
    if not pts:
        ax_thr.text(0.5, 0.5, "memory error: the server cannot start; nothing simulated", ha="center",
                    va="center", transform=ax_thr.transAxes)
    else:
        ax_thr.plot(xs, [p.throughput_tok_s for p in pts], color=_INK, lw=1.5, label="throughput (left axis)")
        for p in pts:
            ax_thr.plot([p.max_num_seqs], [p.throughput_tok_s], marker="o", color=_OK if p.meets_criterion
                        else _BAD, markerfacecolor=_OK if p.meets_criterion else "white", ls="none")
        best = advice.best_throughput_tok_s
        ax_thr.axhline((1 - advice.tolerance) * best, color="grey", ls=":", lw=1,
                       label=f"{100 * (1 - advice.tolerance):g} % of the best throughput")
        ax_mem = ax_thr.twinx()
        ax_mem.plot(xs, [p.kv_needed_tokens * kv_bytes_per_token / GIB for p in pts], color="#b07aa1",
                    ls="--", marker="s", ms=3, label="KV needed, GiB (right axis)")
        if advice.kv_capacity_tokens is not None:
            ax_mem.axhline(advice.kv_capacity_tokens * kv_bytes_per_token / GIB, color="#b07aa1", lw=0.8,
                           alpha=0.6, label=f"KV cache at utilisation {advice.gpu_memory_utilization:g}")
        ax_mem.set_ylabel("KV memory (GiB)", color="#b07aa1")
        ax_mem.set_ylim(bottom=0)
        lines = ax_thr.get_lines()[:1] + ax_thr.get_lines()[-1:] + ax_mem.get_lines()
        ax_thr.legend(lines, [ln.get_label() for ln in lines], fontsize=7, loc="lower right")
        for key, metric, color in (("ttft_p99_s", "TTFT p99 (s)", "#4e79a7"),
                                   ("tpot_p99_s", "TPOT p99 (s)", "#f28e2b")):
            ys = [getattr(p, key) for p in pts]
            ax_lat.plot(xs, [y if math.isfinite(y) else float("nan") for y in ys], marker="o", color=color,
                        label=metric)
        for key, _, bound in advice.slo.limits():
            if not key.endswith("p99_s") and not key.endswith("p99_ms"):
                continue
            ax_lat.axhline(bound, ls="--", lw=0.8, color="#4e79a7" if key.startswith("ttft") else "#f28e2b",
                           label=f"{key[:4].upper()} p99 bound {bound:g} s")
        ax_lat.set_yscale("log")
        ax_lat.legend(fontsize=7)
    if advice.b_opt is not None:
        for ax in (ax_thr, ax_lat):
            ax.axvline(advice.b_opt.max_num_seqs, color=_OK, ls="--", lw=1.2)
        ax_thr.annotate(f"B_opt = {advice.b_opt.max_num_seqs}\nfrees {advice.freed_gib:g} GiB",
                        (advice.b_opt.max_num_seqs, advice.b_opt.throughput_tok_s), xytext=(8, -30),
                        textcoords="offset points", fontsize=8, color=_OK)
    ax_thr.set_xscale("log", base=2)
    if xs:
        ax_lat.set_xticks(xs, [str(x) for x in xs], fontsize=7)
        ax_lat.minorticks_off()
    ax_thr.yaxis.set_major_formatter(FuncFormatter(_k))
    ax_thr.set_ylabel("throughput (tok/s)")
    ax_thr.set_ylim(bottom=0)
    ax_lat.set_xlabel("max_num_seqs")
    ax_lat.set_ylabel("p99 latency (s)")
    for ax in (ax_thr, ax_lat):
        ax.grid(alpha=0.3)
    flag = "" if advice.profile_calibrated else " — UNCALIBRATED profile"
    verdict = "no B_opt" if advice.b_opt is None else f"B_opt = {advice.b_opt.max_num_seqs}"
    fig.suptitle(f"{title or advice.instance}: {verdict}{flag}\n{advice.criterion}", fontsize=10)
    return save(fig, path)
