"""The /report chart: dates on the axis, labels, a legend and the DORA figures against the
targets, as matplotlib drew them; and matplotlib stays out of a process that draws nothing."""

from __future__ import annotations

import struct
import subprocess
import sys

from services.reports.deploys_chart import DPI, HEIGHT_IN, WIDTH_IN, deploys_chart, figure_text
from services.reports.dora import TARGETS, DayCount, Dora

DAYS = [DayCount(f"2026-12-{n:02d}", n % 3, n % 2, int(n == 5)) for n in range(1, 15)]
SLOW = Dora("all", 30, 10, 2, 0.3, 3 * 3600.0, 0.2, 600.0)


def test_the_chart_names_its_axes_dates_legend_and_targets() -> None:
    chart = deploys_chart(DAYS, SLOW)
    assert chart.png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", chart.png[16:24]) == (WIDTH_IN * DPI, HEIGHT_IN * DPI)
    texts = chart.texts
    assert {"day (UTC)", "deploys", "Dec 01", "Dec 14"} <= set(texts)
    assert {"succeeded", "failed (rolled back by opsgate)", "/rollback"} <= set(texts)
    assert "Deploys per day, 2026-12-01 to 2026-12-14 (UTC)" in texts
    assert "change failure rate 20% (target < 5%): missed" in texts
    assert "time to restore 10 min (target < 5 min): missed" in texts
    assert "lead time 3.0 h (target < 2 h): missed" in texts


def test_an_empty_history_still_draws_and_says_so() -> None:
    empty = [DayCount(d.day, 0, 0, 0) for d in DAYS]
    chart = deploys_chart(empty, None)
    assert "DORA, all services, no deploys yet" in chart.texts
    assert "lead time: no data (target < 2 h)" in chart.texts


def test_figures_within_their_targets_are_met() -> None:
    fast = Dora("all", 30, 20, 0, 0.6, 600.0, 0.0, None)
    assert [figure_text(t, fast) for t in TARGETS] == [
        "change failure rate 0% (target < 5%): met",
        "time to restore: no data (target < 5 min)",
        "lead time 10 min (target < 2 h): met",
    ]


def test_matplotlib_is_not_imported_until_a_chart_is_drawn() -> None:
    code = (
        "import sys, bot.cli, handlers.report_chat, services.reports.deploys_chart;"
        "print(sorted(m for m in ('matplotlib', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
