"""The chart of a day plan: GPUs per period (replanned and from scratch) against static peak provisioning,
with the adapter moves between consecutive periods."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from placer.reporting.charts import _figure, _format_of, save

if TYPE_CHECKING:
    from placer.dynamic.periods import DayPlan


def day_chart(day: DayPlan, path: str | Path) -> Path:
    """GPUs per period (bars: the chained plans; dots: from scratch) and the static peak (dashed), moves per
    period on a second axis; GPU-hours in the title. PNG or SVG by suffix, written atomically."""
    from matplotlib.ticker import MaxNLocator

    _format_of(path)
    fig = _figure(max(7.0, 0.35 * len(day.periods) + 4), 5.0)
    ax = fig.subplots()
    ks = [p.period for p in day.periods]
    ax.bar(ks, [p.plan.num_gpus for p in day.periods], color="#4e79a7", label="replanned GPUs")
    ax.plot(ks, [p.scratch_gpus for p in day.periods], "o", color="#f28e2b", ms=4, label="from scratch")
    ax.axhline(day.static_gpus, color="#222222", ls="--", lw=1.2, label=f"static peak ({day.static_gpus})")
    ax.set_xlabel(f"period ({day.period_s:g} s each)")
    ax.set_ylabel("GPUs")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max(day.static_gpus, *(p.plan.num_gpus for p in day.periods)) * 1.25)
    ax2 = ax.twinx()
    ax2.plot(ks, [p.diff.moves if p.diff is not None else 0 for p in day.periods], "-", color="#e15759", lw=1,
             label="adapter moves")
    ax2.set_ylabel("adapter moves from the previous period", color="#e15759")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, frameon=False, loc="upper left", ncol=2)
    fig.suptitle(f"{day.instance}: {day.gpu_hours:.1f} GPU-hours vs {day.static_gpu_hours:.1f} static "
                 f"({100 * day.saved_fraction:.0f} % saved)", fontweight="bold")
    return save(fig, path)
