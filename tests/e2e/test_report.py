"""/report through the real bot: DORA figures of a history the test makes, and the chart
photo (a real PNG the sandbox can read, with dates, axis labels, a legend and the targets)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

from bot.dev.sandbox import SandboxClient
from services.reports.deploys_chart import DPI, HEIGHT_IN, WIDTH_IN, deploys_chart
from services.reports.dora import DoraReport
from tests.e2e.conftest import BOB, DEPLOYS, StartOpsgate
from tests.services.reports.test_dora import Clock, History


async def test_report_gives_dora_figures_and_a_chart(
    start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    clock = Clock(datetime.now(UTC) - timedelta(days=1))
    opsgate = await start_opsgate(clock=clock)
    history = History(opsgate.services.deployments, clock)
    await history.deploy("web", "v1", lead=120)
    await history.deploy("web", "v2", lead=60)
    await history.failed("web", "v3", fail_after=30, restore=45)
    clock.now = datetime.now(UTC)

    await client.send(BOB, DEPLOYS, "/report")
    text = await client.wait_for(
        DEPLOYS, lambda ms: next((m for m in ms if m.text.startswith("📈 DORA")), None)
    )
    lines = text.text.splitlines()
    assert lines[0] == "📈 DORA, last 30 days"
    assert lines[1] == (
        "web: 0.07 deploys/day (3), lead time 90 s, change failure rate 33% (1),"
        " time to restore 45 s"
    )
    photo = await client.wait_for(
        DEPLOYS, lambda ms: next((m for m in ms if m.photo is not None), None)
    )
    assert photo.caption is not None and photo.caption.startswith("Deploys per day, last 14")
    assert photo.photo is not None
    data = photo.photo.data
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (WIDTH_IN * DPI, HEIGHT_IN * DPI)
    assert len(data) > 20_000  # a drawn chart with text, not an empty canvas

    # The same data drawn again gives the same bytes, so its text list is what the chat got.
    report = DoraReport(opsgate.services.storage, clock)
    overall = next(f for f in await report.figures(30) if f.service == "all")
    chart = deploys_chart(await report.per_day(14), overall)
    assert chart.png == data
    today = clock.now.strftime("%b %d")
    for label in ("day (UTC)", "deploys", today, "succeeded", "/rollback"):
        assert label in chart.texts
    assert "change failure rate 33% (target < 5%): missed" in chart.texts
    assert "time to restore 45 s (target < 5 min): met" in chart.texts
    assert "lead time 90 s (target < 2 h): met" in chart.texts
