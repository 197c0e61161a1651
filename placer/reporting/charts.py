"""Charts a person would rather look at than read: a plan, a twin run, a solver comparison.

Each function draws one figure with matplotlib's object API (no pyplot, no global backend switch) and writes
it to ``path`` — PNG or SVG by the file suffix — atomically (readers see the old file or the new one).
matplotlib is imported only when a chart is drawn.

- :func:`plan_chart` — per GPU: offered token load stacked by adapter rank against the predicted (and, when
  verified, the twin's) throughput; adapters per GPU stacked by rank with ``max_loras`` marked.
- :func:`twin_chart` — one simulated GPU over time (running / waiting requests, KV-cache use, throughput
  against the offered load) and every adapter's served fraction, sorted, so starving cold adapters show.
- :func:`compare_chart` — GPUs and wall time per solver (per instance), with the lower bound.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from placer.result import plural
from twin.errors import InputError
from twin.files import atomic_write_bytes
from twin.metrics import STARVED_FRACTION

THIN_MARGIN = 0.05  # plan chart: a predicted throughput less than 5 % above the starvation line is flagged

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from placer.check.verify import VerifyReport
    from placer.result import Result
    from twin.metrics import SimResult
    from twin.spec import Instance

FORMATS = {".png": "png", ".svg": "svg"}
_RANK_COLORS = {1: "#bab0ac", 8: "#4e79a7", 16: "#59a14f", 32: "#f28e2b", 64: "#e15759", 128: "#b07aa1",
                256: "#76b7b2", 320: "#edc948", 512: "#9c755f"}
_OK, _BAD, _INK = "#2e7d32", "#c62828", "#222222"


def check_path(path: str | Path) -> Path:
    """``path`` if it names a chart file this module can write (.png or .svg); :class:`InputError` otherwise.

    Commands call it before any long computation, so a typo fails at once."""
    _format_of(path)
    return Path(path)


def _format_of(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"chart file must end in .png or .svg (got {suffix or 'no suffix'!r})",
                         field="--plot", value=str(path))
    return FORMATS[suffix]


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def save(fig: Figure, path: str | Path) -> Path:
    """Render ``fig`` (format from the suffix of ``path``) and write it atomically; returns the path."""
    fmt = _format_of(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, metadata={"Software": "placer"} if fmt == "png" else None)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def _k(x: float, _pos: Any = None) -> str:
    return f"{x / 1000:.3g}k" if abs(x) >= 1000 else f"{x:.3g}"


def _tok(x: float) -> str:
    return f"{x:,.0f}" if math.isfinite(x) else "n/a"


# --- the plan -----------------------------------------------------------------------------------------------
def plan_chart(problem: Instance, result: Result, path: str | Path, *,
               verification: VerifyReport | None = None) -> Path:
    """Per GPU of ``result``: offered tok/s by rank vs predicted (and twin) throughput; adapters by rank."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    from placer.problem.memory import tokens_per_request

    _format_of(path)
    n = len(result.gpus)
    fig = _figure(min(max(8.5, 2.5 + 0.32 * n), 22.0), 7.0)
    title = (f"{problem.name}: {result.solver} plan — {plural(result.num_gpus, 'GPU')} "
             f"(lower bound {result.lower_bound}, {result.status_text})")
    if n == 0:
        fig.suptitle(title, fontweight="bold")
        fig.text(0.5, 0.5, f"no plan: {result.reason or result.status}", ha="center", va="center", wrap=True)
        return save(fig, path)
    ax_load, ax_count = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    tpr = tokens_per_request(problem)
    index = problem.index
    ranks = sorted({int(problem.ranks[index[a]]) for g in result.gpus for a in g.adapters if a in index})
    load = np.zeros((len(ranks), n))
    count = np.zeros((len(ranks), n))
    for j, g in enumerate(result.gpus):
        for a in g.adapters:
            if a in index:
                i = index[a]
                r = ranks.index(int(problem.ranks[i]))
                load[r, j] += problem.rates[i] * tpr
                count[r, j] += 1
    x = np.arange(n)
    bottom_l, bottom_c = np.zeros(n), np.zeros(n)
    for r, rank in enumerate(ranks):
        color = _RANK_COLORS.get(rank, "#888888")
        width = 0.8 if n <= 100 else 1.0
        ax_load.bar(x, load[r], bottom=bottom_l, color=color, width=width, label=f"rank {rank}", lw=0)
        ax_count.bar(x, count[r], bottom=bottom_c, color=color, width=width, lw=0)
        bottom_l += load[r]
        bottom_c += count[r]
    pred = np.array([np.nan if g.predicted_throughput_tok_s is None else g.predicted_throughput_tok_s
                     for g in result.gpus], dtype=float)
    many = n > 60  # then a step line instead of one dash per bar, and smaller markers
    ms = 7 if n <= 60 else (4 if n <= 150 else 2)
    ax_load.plot(x, STARVED_FRACTION * bottom_l, "-" if many else "_", color=_BAD, ms=2 * ms + 6, mew=2,
                 lw=1.5, label="starvation line (0.9 × offered)", zorder=4, drawstyle="steps-mid")
    if np.isfinite(pred).any():
        ax_load.plot(x, pred, "D", color=_INK, ms=ms, label="predicted throughput (label: margin above the "
                     "starvation line)" if n <= 40 else "predicted throughput", zorder=5, ls="none")
        if n <= 40:  # a thin margin is invisible at this scale: say it in numbers
            for j in np.flatnonzero(np.isfinite(pred) & (bottom_l > 0)).tolist():
                margin = pred[j] / (STARVED_FRACTION * bottom_l[j]) - 1.0
                ax_load.annotate(f"{100 * margin:+.0f}%", (j, pred[j]), textcoords="offset points",
                                 xytext=(0, 7), ha="center", fontsize=7,
                                 color=_BAD if margin < THIN_MARGIN else _INK,
                                 fontweight="bold" if margin < THIN_MARGIN else "normal")
    if verification is not None:
        rows = {int(row["gpu"]): row for row in verification.gpus}
        for ok in (True, False):
            js = [j for j, row in rows.items() if (not row.get("oom") and not row.get("starved")) == ok]
            if js:
                ax_load.plot(js, [rows[j].get("throughput_tok_s") or 0.0 for j in js], "o" if ok else "X",
                             color=_OK if ok else _BAD, ms=ms, zorder=6,
                             label="twin throughput (ok)" if ok else "twin throughput (FAILED)")
    top = np.nanmax(np.concatenate([bottom_l, np.nan_to_num(pred, nan=0.0)]))
    ax_load.set_ylim(0, max(1.0, float(top)) * 1.18)
    ax_load.set_ylabel("token load (tok/s)")
    ax_load.yaxis.set_major_formatter(FuncFormatter(_k))
    ax_load.set_title("offered load by adapter rank vs throughput (per GPU)", fontsize=10)
    ax_load.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax_load.grid(axis="y", alpha=0.3)
    slots = np.array([g.max_loras for g in result.gpus], dtype=float)
    ax_count.plot(x, slots, "-" if many else "_", color=_INK, ms=2 * ms + 6, mew=2.5, lw=1.5,
                  label="max_loras (GPU slots)", drawstyle="steps-mid")
    if n <= 40:
        for j, g in enumerate(result.gpus):
            ax_count.annotate(f"{g.max_loras}", (j, max(slots[j], bottom_c[j])), textcoords="offset points",
                              xytext=(0, 3), ha="center", fontsize=7)
    ax_count.set_ylabel("adapters")
    ax_count.set_title("adapters by rank and max_loras" + (" (number above the bar)" if n <= 40 else ""),
                       fontsize=10)
    ax_count.set_xlabel("GPU")
    ax_count.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax_count.grid(axis="y", alpha=0.3)
    ax_count.set_ylim(0, max(bottom_c.max(), slots.max()) * 1.15)
    if n <= 30:
        ax_count.set_xticks(x)
    else:
        ax_count.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=25))
    ax_count.set_xlim(-0.6, n - 0.4)
    fig.suptitle(title, fontweight="bold")
    return save(fig, path)


# --- one twin run -------------------------------------------------------------------------------------------
SMOOTH_S = 60.0  # the throughput panel's rolling window (seconds): per-10-s completions are too spiky to read
MAX_NAMED_BARS = 40  # up to this many adapters, the served-fraction bars are labelled by adapter id


def queue_trend(ts: Mapping[str, Any]) -> str | None:
    """``queue growing`` when the waiting requests climb through the run (a linear fit of the second half
    rises by more than 10 requests and 10 % of the peak), ``queue drained`` when some waited but none is left
    at the end, else None (nothing worth saying)."""
    waiting = np.asarray(ts.get("waiting", ()), dtype=float)
    if waiting.size < 4 or not np.any(waiting > 0):
        return None
    half = waiting[waiting.size // 2:]
    slope = float(np.polyfit(np.arange(half.size, dtype=float), half, 1)[0])
    if slope * half.size > max(10.0, 0.1 * float(waiting.max())):
        return "queue growing"
    if waiting[-1] == 0 and waiting.max() >= 10:
        return "queue drained"
    return None


def twin_chart(sim: SimResult, path: str | Path, *, title: str = "twin run", worst: int = 5) -> Path:
    """Running/waiting requests, KV use and throughput over time (needs ``simulate(..., timeseries=True)``),
    and every adapter's served fraction sorted ascending (the ``worst`` ones named)."""
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    _format_of(path)
    fig = _figure(17.0, 7.5)
    verdict = "MEMORY ERROR (cannot start)" if sim.oom else ("STARVED" if sim.starved else "not starved")
    if not sim.oom:
        verdict += f"; {'meets' if sim.meets() else 'FAILS'} {sim.slo.describe()}"
    trend = None if sim.oom or sim.timeseries is None else queue_trend(sim.timeseries)
    if trend is not None:
        verdict += f", {trend}"
    head = (f"{title} — max_loras {sim.max_loras}, max_cpu_loras {sim.max_cpu_loras}, "
            f"max_lora_rank {sim.max_lora_rank}: {verdict}")
    if sim.oom:
        fig.suptitle(head, fontweight="bold", color=_BAD)
        kv = "none" if sim.kv_cache_tokens is None else f"{sim.kv_cache_tokens:,.0f} tokens"
        fig.text(0.5, 0.5, f"The server cannot start with these settings (KV cache: {kv}).\n"
                 "Nothing was simulated.",
                 ha="center", va="center", fontsize=12)
        return save(fig, path)
    (ax_q, ax_kv, ax_lat), (ax_thr, ax_ad, ax_txt) = fig.subplots(2, 3)
    _latency(ax_lat, ax_txt, sim)
    ts = sim.timeseries
    if ts is None or len(ts.get("t_s", ())) == 0:
        for ax in (ax_q, ax_kv, ax_thr):
            ax.text(0.5, 0.5, "no time series\n(simulate with timeseries=True)", ha="center", va="center",
                    transform=ax.transAxes)
    else:
        t = np.asarray(ts["t_s"], dtype=float) / 60.0
        ax_q.plot(t, ts["running"], color="#4e79a7", label="running (left axis)")
        ax_q.set_ylabel("running requests", color="#4e79a7")
        ax_w = ax_q.twinx()
        ax_w.plot(t, ts["waiting"], color=_BAD, label="waiting (right axis)")
        ax_w.set_ylabel("waiting requests", color=_BAD)
        ax_w.set_ylim(bottom=0)
        ax_q.set_ylim(bottom=0)
        lines = ax_q.get_lines() + ax_w.get_lines()
        ax_q.legend(lines, [ln.get_label() for ln in lines], loc="upper left", fontsize=8, frameon=False)
        ax_q.set_xlabel("time (min)")
        ax_kv.plot(t, 100.0 * np.asarray(ts["kv_usage"], dtype=float), color="#b07aa1")
        ax_kv.set_ylim(0, 105)
        ax_kv.yaxis.set_major_formatter(PercentFormatter())
        ax_kv.set_ylabel("KV cache in use")
        thr = np.asarray(ts["throughput_tok_s"], dtype=float)
        dt_s = float(ts["t_s"][1] - ts["t_s"][0]) if len(thr) > 1 else 60.0
        k = max(1, min(len(thr) // 5, int(round(SMOOTH_S / dt_s))))  # short runs: a shorter window
        smooth = np.convolve(thr, np.ones(k) / k, mode="valid")  # trailing mean of the last k samples
        ax_thr.plot(t, thr, color=_INK, lw=0.5, alpha=0.35, label=f"per {dt_s:g} s (raw)")
        ax_thr.plot(t[k - 1:], smooth, color=_INK, lw=1.5,
                    label=f"throughput, rolling mean over {k * dt_s:g} s")
        ax_thr.set_ylim(0, max(float(np.max(smooth)), sim.offered_tok_s if math.isfinite(sim.offered_tok_s)
                               else 0.0, 1.0) * 1.5)
        ax_thr.yaxis.set_major_formatter(FuncFormatter(_k))
        ax_thr.set_ylabel("tok/s")
        ax_thr.set_xlabel("time (min)")
        ax_kv.set_xlabel("time (min)")
    ax_q.set_title("running and waiting requests", fontsize=10)
    ax_kv.set_title("KV cache use", fontsize=10)
    ax_thr.set_title("throughput over time", fontsize=10)
    if math.isfinite(sim.expected_offered_tok_s):
        ax_thr.axhline(sim.expected_offered_tok_s, color="#4e79a7", ls="--", lw=1,
                       label=f"offered load {_tok(sim.expected_offered_tok_s)} tok/s (rate × mean tokens)")
    if math.isfinite(sim.offered_tok_s):
        ax_thr.axhline(STARVED_FRACTION * sim.offered_tok_s, color=_BAD, ls=":", lw=1.2,
                       label=f"starvation line (0.9 × the {_tok(sim.offered_tok_s)} tok/s that arrived)")
    ax_thr.legend(loc="upper left", fontsize=7, frameon=True, framealpha=0.85, ncol=2)
    _served(ax_ad, sim, worst)
    for ax in (ax_q, ax_kv, ax_thr, ax_ad):
        ax.grid(alpha=0.3)
    fig.suptitle(head + f"\nthroughput {_tok(sim.throughput_tok_s)} tok/s of the arrived "
                 f"{_tok(sim.offered_tok_s)} tok/s ({100 * sim.served_fraction:.0f}% served), "
                 f"{sim.completed:,} of {sim.arrived:,} requests completed, "
                 f"{sim.waiting_end:,} waiting at the end",
                 fontweight="bold", color=_BAD if sim.starved else _INK, fontsize=11)
    return save(fig, path)


def _latency(ax: Any, ax_txt: Any, sim: SimResult) -> None:
    """The latency panel: each adapter's censored TTFT p99 against its TPOT p99 (log axes), the criterion's
    p99 bounds dashed; beside it the GPU's percentiles and the verdict in words."""
    ttft = np.asarray(sim.adapter_ttft_p99_s, dtype=float)
    tpot = 1000.0 * np.asarray(sim.adapter_tpot_p99_s, dtype=float)
    ok = np.isfinite(ttft) & np.isfinite(tpot) & (ttft > 0) & (tpot > 0)
    ax.scatter(ttft[ok], tpot[ok], s=12, color="#4e79a7", alpha=0.7, label="adapters (p99 of each)")
    bounds = {key: bound for key, _, bound in sim.slo.limits()}
    if "ttft_p99_s" in bounds:
        ax.axvline(bounds["ttft_p99_s"], color=_BAD, ls="--", lw=1, label="TTFT p99 bound")
    if "tpot_p99_ms" in bounds:
        ax.axhline(1000.0 * bounds["tpot_p99_ms"], color=_BAD, ls=":", lw=1, label="TPOT p99 bound")
    if ok.any():
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("TTFT p99 (s, censored)")
    ax.set_ylabel("TPOT p99 (ms)")
    ax.set_title("latency per adapter", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    ax_txt.axis("off")

    def sec(x: float) -> str:
        return "–" if not math.isfinite(x) else f"{x:.3g} s"

    def ms(x: float) -> str:
        return "–" if not math.isfinite(x) else f"{1000 * x:.3g} ms"

    failures = sim.slo_failures()
    text = [f"criterion: {sim.slo.describe()}",
            "verdict: " + ("meets it" if not failures else "FAILS: " + "; ".join(failures)), "",
            f"TTFT p50 / p95 / p99: {sec(sim.ttft_p50_s)} / {sec(sim.ttft_p95_s)} / {sec(sim.ttft_p99_s)}",
            f"TPOT p50 / p95 / p99: {ms(sim.tpot_p50_s)} / {ms(sim.tpot_p95_s)} / {ms(sim.tpot_p99_s)}",
            f"served fraction: {sim.served_fraction:.3f}",
            f"queue: {sim.queue_trend}, {sim.waiting_end:,} waiting at the end"]
    import textwrap

    ax_txt.text(0.0, 1.0, "\n".join(textwrap.fill(line, 60) for line in text), va="top", ha="left",
                fontsize=9, transform=ax_txt.transAxes, color=_BAD if failures else _INK)


def _served(ax: Any, sim: SimResult, worst: int) -> None:
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    frac = np.asarray(sim.adapter_served_fraction, dtype=float)
    ids = list(sim.adapter_ids)
    ax.set_title("served fraction per adapter (sorted, worst first)", fontsize=10)
    ax.set_xlabel("adapters, sorted")
    ax.set_ylabel("served fraction")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    have = np.isfinite(frac)
    if not have.any():
        ax.text(0.5, 0.5, "no requests arrived", ha="center", va="center", transform=ax.transAxes)
        return
    order = np.argsort(frac[have], kind="stable")
    vals = frac[have][order]
    names = [ids[i] for i in np.flatnonzero(have)[order]] if ids else []
    x = np.arange(vals.size)
    colors = np.where(vals < STARVED_FRACTION, _BAD, _OK)
    if vals.size <= 150:
        ax.bar(x, vals, color=colors, width=0.9)
    if names and vals.size <= MAX_NAMED_BARS:  # each bar named by its adapter id, not its index
        ax.set_xticks(x, names, rotation=90, fontsize=6 if vals.size > 20 else 8)
        ax.set_xlabel("adapter (sorted, worst first)")
    else:
        ax.fill_between(x, vals, step="mid", color=_OK, alpha=0.5)
        ax.plot(x, vals, color=_INK, lw=1, drawstyle="steps-mid")
    ax.axhline(STARVED_FRACTION, color=_BAD, ls=":", lw=1.2)
    if not (names and vals.size <= MAX_NAMED_BARS):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    below = int((vals < STARVED_FRACTION).sum())
    ax.set_ylim(0, max(1.05, float(vals.max()) * 1.05))
    ax.set_xlim(-0.6, vals.size - 0.4)
    note = f"{below} of {vals.size} adapters below 90% served"
    if names and below:
        note += "\nworst: " + ", ".join(f"{names[i]} {100 * vals[i]:.0f}%" for i in range(min(worst, below)))
    ax.text(0.98, 0.04, note, transform=ax.transAxes, ha="right", va="bottom", fontsize=8,
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "#cccccc"})


# --- solvers compared ---------------------------------------------------------------------------------------
def _get(row: Any, key: str) -> Any:
    return row.get(key) if isinstance(row, Mapping) else getattr(row, key, None)


def _group(row: Any) -> str:
    """A row's instance group: its file when known (two files may share a ``name``), else its name."""
    return str(_get(row, "file") or _get(row, "instance"))


def _group_labels(rows: Sequence[Any], groups: list[str]) -> list[str]:
    """Axis labels of the groups: the instance name, with the file name when two groups share a name."""
    name = {_group(r): str(_get(r, "instance")) for r in rows}
    clash = {n for n in name.values() if list(name.values()).count(n) > 1}
    return [f"{name[g]}\n({Path(g).name})" if name[g] in clash else name[g] for g in groups]


def compare_chart(rows: Sequence[Any], path: str | Path, *, title: str = "solvers compared") -> Path:
    """GPUs (bars; hatched = not feasible for the evaluator) and wall time per solver, grouped by instance,
    with each instance's best lower bound as a dashed line. ``rows``: CompareRow objects or their dicts."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    _format_of(path)
    instances = list(dict.fromkeys(_group(r) for r in rows))  # by file: two files may share a name
    solvers = list(dict.fromkeys(str(_get(r, "solver")) for r in rows))
    fig = _figure(min(max(8.0, 3.0 + 1.1 * len(instances) * max(1, len(solvers)) ** 0.6), 22.0), 6.5)
    if not rows:
        fig.text(0.5, 0.5, "no runs to compare", ha="center", va="center")
        return save(fig, path)
    ax_g, ax_t = fig.subplots(1, 2, width_ratios=(3, 2))
    width = 0.8 / max(1, len(solvers))
    cmap = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#9c755f",
            "#ff9da7", "#bab0ac"]
    by = {(_group(r), str(_get(r, "solver"))): r for r in rows}
    for s_i, solver in enumerate(solvers):
        xs, gpus, times, hatch = [], [], [], []
        for i_i, inst in enumerate(instances):
            r = by.get((inst, solver))
            if r is None:
                continue
            xs.append(i_i - 0.4 + width * (s_i + 0.5))
            gpus.append(int(_get(r, "num_gpus") or 0))
            times.append(max(float(_get(r, "runtime_s") or 0.0), 1e-3))
            hatch.append(_get(r, "evaluator_feasible") is False or _get(r, "twin_feasible") is False)
        color = cmap[s_i % len(cmap)]
        bars = ax_g.bar(xs, gpus, width=width * 0.95, color=color, label=solver)
        for b, h, g in zip(bars, hatch, gpus, strict=True):
            if h:
                b.set_hatch("///")
                b.set_edgecolor(_BAD)
            ax_g.annotate(str(g) if g else "no\nplan", (b.get_x() + b.get_width() / 2, g),
                          textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)
        ax_t.bar(xs, times, width=width * 0.95, color=color, label=solver)
    any_bound = False
    for i_i, inst in enumerate(instances):  # the instance's one best bound (compare gives every row the same)
        lbs = [int(_get(r, "lower_bound") or 0) for r in rows if _group(r) == inst]
        lb = max(lbs) if lbs else 0
        if lb > 0:
            any_bound = True
            ax_g.hlines(lb, i_i - 0.45, i_i + 0.45, colors=_INK, linestyles="--", lw=1.5)
    labels = _group_labels(rows, instances)
    for ax in (ax_g, ax_t):
        ax.set_xticks(range(len(instances)), labels, rotation=20 if len(instances) > 3 else 0, ha="right"
                      if len(instances) > 3 else "center")
        ax.grid(axis="y", alpha=0.3)
    ax_g.set_ylabel("GPUs (fewer is better)")
    ax_g.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_g.set_title("GPUs per solver (hatched: plan not feasible)", fontsize=10)
    top = max(max(int(_get(r, "num_gpus") or 0), int(_get(r, "lower_bound") or 0)) for r in rows)
    ax_g.set_ylim(0, max(1, top) * 1.3)
    handles: list[Any] = [Patch(facecolor=cmap[i % len(cmap)], label=s) for i, s in enumerate(solvers)]
    if any_bound:
        handles.append(Line2D([], [], color=_INK, linestyle="--", lw=1.5, label="best lower bound"))
    ax_g.legend(handles=handles, fontsize=8, frameon=False, loc="upper right", ncol=2)
    ax_t.set_yscale("log")
    ax_t.set_ylabel("wall time (s, log scale)")
    ax_t.set_title("solver wall time", fontsize=10)
    fig.suptitle(title, fontweight="bold")
    return save(fig, path)


def frontier_chart(points: Sequence[Any], path: str | Path, *, title: str = "GPUs needed per SLO") -> Path:
    """GPUs against the TTFT p99 bound (one line per TPOT p99 bound, the lower bound dashed), with the
    papers' rule as a horizontal line; ``points`` are :class:`placer.frontier.FrontierPoint`."""
    fig = _figure(7.5, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    slo_points = [p for p in points
                  if p.slo.criterion == "slo" and p.slo.ttft_p99_s is not None and p.num_gpus]
    tpots = sorted({p.slo.tpot_p99_ms for p in slo_points}, key=lambda v: (v is None, v or 0.0))
    for k, tpot in enumerate(tpots):
        mine = sorted((p for p in slo_points if p.slo.tpot_p99_ms == tpot), key=lambda p: p.slo.ttft_p99_s)
        xs = [p.slo.ttft_p99_s for p in mine]
        label = "TPOT p99 unbounded" if tpot is None else f"TPOT p99 ≤ {tpot:g} ms"
        line = ax.plot(xs, [p.num_gpus for p in mine], marker="o", label=f"GPUs, {label}")[0]
        ax.plot(xs, [p.lower_bound for p in mine], linestyle="--", color=line.get_color(), alpha=0.7,
                label="lower bound" if k == 0 else None)
    for p in points:
        if p.slo.criterion == "paper" and p.num_gpus:
            ax.axhline(p.num_gpus, color="grey", linestyle=":", label=f"papers' rule: {p.num_gpus} GPUs")
    if slo_points:
        ax.set_xscale("log")
    ax.set_xlabel("TTFT p99 bound (s)")
    ax.set_ylabel("GPUs")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)
