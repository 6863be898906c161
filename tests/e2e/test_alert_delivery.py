"""Nothing Alertmanager sends is dropped or hidden: through the real Alertmanager into opsgate,
an alert no route names, groups of 300 and 1200 alerts, and a storm of `&`-heavy alerts that
must stay within Telegram's 20 messages a minute per chat, every part counted."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from bot.dev.harness.alertmanager import running
from bot.dev.sandbox import SandboxClient, SandboxMessage
from tests.e2e.conftest import OPS_TEXT, StartOpsgate

CRITICAL, WARNING = -100320, -100321
TOKEN = "alert-delivery-e2e-token"
# No info chat and no route for "error": those go to the default route (the warning chat).
ALERTS = f"""
[chats.alerts]
critical = {CRITICAL}
warning = {WARNING}
[alerts]
tick_s = 0.2
group_wait_s = 0.2
group_interval_s = 0.5
"""
INSTANCE = re.compile(r"instance=(i-\d{4})")


def named(messages: list[SandboxMessage]) -> set[str]:
    """Instances named by the bot in a chat, in its messages or in the lists it attached."""
    found: set[str] = set()
    for message in messages:
        if not message.from_bot:
            continue
        found |= set(INSTANCE.findall(message.text or ""))
        if message.document is not None:
            found |= set(INSTANCE.findall(message.document.data.decode()))
    return found


def alerts(name: str, severity: str, count: int, summary: str) -> list[dict[str, Any]]:
    return [
        {
            "labels": {"alertname": name, "severity": severity, "instance": f"i-{n:04d}"},
            "annotations": {"summary": summary},
        }
        for n in range(count)
    ]


async def start(start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path) -> str:
    """opsgate with two alert chats; its Alertmanager webhook URL."""
    ops_file.write_text(
        OPS_TEXT.replace("[environments.production]", ALERTS + "[environments.production]", 1)
    )
    for chat_id, title in ((CRITICAL, "Critical"), (WARNING, "Warnings")):
        await client.add_chat(chat_id, "supergroup", title)
    opsgate = await start_opsgate(alerts_token=TOKEN)
    return f"http://127.0.0.1:{opsgate.http_port}/webhooks/alertmanager"


async def wait_named(client: SandboxClient, chat_id: int, wanted: set[str]) -> None:
    def done(messages: list[SandboxMessage]) -> bool | None:
        return True if wanted <= named(messages) else None

    await client.wait_for(chat_id, done, timeout=90)


async def test_every_alert_alertmanager_sends_is_shown_however_many(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    webhook = await start(start_opsgate, client, ops_file)
    with running(webhook, bearer=TOKEN) as am:
        async with httpx.AsyncClient(timeout=60) as http:
            fired = [
                *alerts("OddOne", "error", 1, "a severity no route names"),
                *alerts("Disk300", "warning", 300, "Disk /var is 95% full"),
                *alerts("Disk1200", "critical", 1200, "Disk /data is 99% full"),
            ]
            assert (await http.post(f"{am.url}/api/v2/alerts", json=fired)).status_code == 200
            # The unrouted severity reaches the default route (the warning chat).
            odd = await client.wait_for(
                WARNING,
                lambda ms: next((m for m in ms if m.from_bot and "OddOne" in m.text), None),
                timeout=60,
            )
            assert "a severity no route names" in odd.text
            # Groups of 300 and 1200 (one request each from Alertmanager): every alert named.
            await wait_named(client, WARNING, {f"i-{n:04d}" for n in range(300)})
            await wait_named(client, CRITICAL, {f"i-{n:04d}" for n in range(1200)})
    big = [m for m in await client.messages(CRITICAL) if m.from_bot]
    summary = next(m for m in big if "Disk1200" in m.text)
    assert "🔥 CRITICAL — 1200 firing" in summary.text
    assert "📎 All 1200 alerts are in the attached list." in summary.text
    [listing] = [m for m in big if m.document is not None]
    assert listing.reply_to_message_id == summary.message_id
    assert listing.document is not None
    assert listing.document.data.decode().count("\n") == 1200  # one line an alert


async def test_an_ampersand_storm_stays_within_the_chat_budget_counting_every_part(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    webhook = await start(start_opsgate, client, ops_file)
    await client.set_flood(20, 30)  # Telegram's limits: the sandbox refuses the 21st message
    summary = "R&D & QA & ops: latency & errors & saturation & traffic & more & more & more"
    storm = [
        {
            "labels": {
                "alertname": f"Storm{n:03d}",
                "severity": "warning",
                "instance": f"i-{n:04d}",
                "team": "r&d&qa&ops",
            },
            "annotations": {"summary": summary},
        }
        for n in range(200)
    ]
    with running(webhook, bearer=TOKEN) as am:
        async with httpx.AsyncClient(timeout=60) as http:
            assert (await http.post(f"{am.url}/api/v2/alerts", json=storm)).status_code == 200
            await wait_named(client, WARNING, {f"i-{n:04d}" for n in range(200)})
    faults = await client.fault_counts()
    assert faults["flood_refusals"] == 0, faults  # no message, part or list over the limit
    sent = [m for m in await client.messages(WARNING) if m.from_bot]
    assert any(m.text.startswith("📦 Digest") for m in sent)  # folded once waiting would not do
