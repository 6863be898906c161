"""/report through the real bot: DORA figures of a history the test makes, and the chart
photo (a real PNG the sandbox can read)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

from bot.dev.sandbox import SandboxClient
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
    assert (width, height) == (20 * 2 + 14 * 34, 240)
