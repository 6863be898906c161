"""/report: the DORA figures of the last 30 days, and a chart of deploys per day."""

from __future__ import annotations

import asyncio

from telegram import InputFile, Update

from handlers.commands import Command
from handlers.context import OpsContext
from handlers.render import esc, join_lines
from services.reports.deploys_chart import deploys_chart
from services.reports.dora import TARGETS, Dora, DoraReport

WINDOW_DAYS, CHART_DAYS = 30, 14


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def render_dora(figures: list[Dora]) -> str:
    lines = [f"📈 <b>DORA, last {WINDOW_DAYS} days</b>"]
    for f in figures:
        rate = "-" if f.change_failure_rate is None else f"{f.change_failure_rate:.0%}"
        lines.append(
            f"<b>{esc(f.service)}</b>: {f.deployments_per_day:.2f} deploys/day ({f.deploys}),"
            f" lead time {_duration(f.lead_time_s)}, change failure rate {rate}"
            f" ({f.failed_changes}), time to restore {_duration(f.time_to_restore_s)}"
        )
    lines.append("Targets: " + ", ".join(f"{t.name} {esc(t.text)}" for t in TARGETS))
    return join_lines(lines)


async def report(update: Update, context: OpsContext) -> None:
    """DORA figures per service and overall, and deploys per day as a picture."""
    message = update.effective_message
    if message is None:
        return
    services = context.services
    dora = DoraReport(services.storage, services.clock)
    figures = await dora.figures(WINDOW_DAYS)
    await message.reply_text(render_dora(figures))
    days = await dora.per_day(CHART_DAYS)
    counts = ", ".join(f"{d.day[5:]}: {d.succeeded}/{d.failed}/{d.rolled_back}" for d in days)
    overall = next((f for f in figures if f.service == "all" and f.deploys), None)
    chart = await asyncio.to_thread(deploys_chart, days, overall)  # CPU work off the loop
    await message.reply_photo(
        InputFile(chart.png, filename="deploys.png"),
        caption=(
            f"Deploys per day, last {CHART_DAYS} days: green succeeded, red failed (rolled back"
            f" by opsgate), orange /rollback.\n{counts}"
        )[:1024],
    )


COMMANDS = [Command("report", "DORA figures and a chart of deploys per day", report)]
