"""The /report picture: deploys per day as stacked bars with dates, labels and a legend, and
the DORA figures against the targets underneath, drawn with matplotlib (Agg, no display).

matplotlib and numpy take about 40 MiB: they are imported inside `deploys_chart`, on the first
chart drawn, never at start-up. Only the object API is used (no pyplot state), so a chart can
be drawn in a worker thread.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from services.reports.dora import TARGETS, DayCount, Dora, Target, meets

SUCCEEDED, FAILED, ROLLED_BACK = "#2ea043", "#da3633", "#e6911e"
GOOD, BAD, UNKNOWN = "#2ea043", "#da3633", "#6e7781"
WIDTH_IN, HEIGHT_IN, DPI = 8.0, 5.6, 100


@dataclass(frozen=True)
class RenderedChart:
    """The PNG and every piece of text drawn in it (title, axis labels, ticks, legend,
    figures), so a test can check what a reader sees without OCR."""

    png: bytes
    texts: list[str]


def figure_text(target: Target, figure: Dora | None) -> str:
    """`lead time 90 s (target < 2 h): met`, or `no data` when nothing happened."""
    value = None if figure is None else getattr(figure, target.field)
    if value is None:
        return f"{target.name}: no data (target {target.text})"
    shown = f"{value:.0%}" if target.field == "change_failure_rate" else _duration(value)
    verdict = "met" if figure is not None and meets(target, figure) else "missed"
    return f"{target.name} {shown} (target {target.text}): {verdict}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def deploys_chart(days: Sequence[DayCount], overall: Dora | None) -> RenderedChart:
    """Stacked bars, one a day, oldest on the left; below them the DORA figures of `overall`
    (every service together), each coloured by whether it meets its target."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.text import Text
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    bars, dora = fig.subplots(2, 1, height_ratios=[3, 1])
    positions = list(range(len(days)))
    bottom = [0] * len(days)
    for label, color, counts in (
        ("succeeded", SUCCEEDED, [d.succeeded for d in days]),
        ("failed (rolled back by opsgate)", FAILED, [d.failed for d in days]),
        ("/rollback", ROLLED_BACK, [d.rolled_back for d in days]),
    ):
        bars.bar(positions, counts, bottom=bottom, color=color, label=label, width=0.7)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    first, last = (days[0].day, days[-1].day) if days else ("", "")
    bars.set_title(f"Deploys per day, {first} to {last} (UTC)")
    bars.set_xlabel("day (UTC)")
    bars.set_ylabel("deploys")
    bars.set_xticks(positions, [date.fromisoformat(d.day).strftime("%b %d") for d in days])
    bars.tick_params(axis="x", labelrotation=45)
    bars.yaxis.set_major_locator(MaxNLocator(integer=True))
    bars.set_ylim(0, max(max(bottom, default=0), 1) * 1.15)
    bars.grid(axis="y", color="#e6e6e6")
    bars.set_axisbelow(True)
    bars.legend(loc="upper left", fontsize="small", frameon=False)
    dora.axis("off")
    window = f"last {overall.window_days:g} days" if overall else "no deploys yet"
    dora.text(0, 1, f"DORA, all services, {window}", weight="bold", va="top")
    for row, target in enumerate(TARGETS, start=1):
        verdict = None if overall is None else meets(target, overall)
        color = UNKNOWN if verdict is None else GOOD if verdict else BAD
        dora.text(0, 1 - row * 0.27, figure_text(target, overall), color=color, va="top")
    out = io.BytesIO()
    fig.savefig(out, format="png", facecolor="white")
    texts = [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text()]
    return RenderedChart(out.getvalue(), texts)
