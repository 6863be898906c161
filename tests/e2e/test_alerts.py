"""Alerts end to end: the real Alertmanager fires and resolves into opsgate's receiver, and the
messages, buttons and commands are checked in the sandbox's chats."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bot.dev.harness.alertmanager import running
from bot.dev.sandbox import SandboxClient, SandboxMessage
from bot.runner import Opsgate
from tests.e2e.conftest import (
    ALICE,
    BOB,
    CAROL,
    OPS_TEXT,
    STRANGER,
    StartOpsgate,
    callback_answer_text,
)

CRITICAL, WARNING = -100300, -100301
TOKEN = "alerts-e2e-token"
ALERTS = f"""
[chats.alerts]
critical = {CRITICAL}
warning = {WARNING}
[alerts]
tick_s = 0.1
group_wait_s = 0.2
group_interval_s = 0.5
"""


def ops_text() -> str:
    return OPS_TEXT.replace("[environments.production]", ALERTS + "[environments.production]", 1)


async def start(start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path) -> Opsgate:
    ops_file.write_text(ops_text())
    for chat_id, title in ((CRITICAL, "Critical"), (WARNING, "Warnings")):
        await client.add_chat(chat_id, "supergroup", title)
    return await start_opsgate(alerts_token=TOKEN)


def bot_message(marker: str) -> Callable[[list[SandboxMessage]], SandboxMessage | None]:
    return lambda ms: next((m for m in reversed(ms) if m.from_bot and marker in m.text), None)


async def post(
    opsgate: Opsgate, alerts: list[dict[str, Any]], kind: str = "generic", token: str = TOKEN
) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"http://127.0.0.1:{opsgate.http_port}/webhooks/{kind}",
            json={"alerts": alerts},
            headers={"Authorization": f"Bearer {token}"},
        )


async def test_alertmanager_fires_and_resolves_into_the_critical_chat(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    opsgate = await start(start_opsgate, client, ops_file)
    webhook = f"http://127.0.0.1:{opsgate.http_port}/webhooks/alertmanager"
    with running(webhook, bearer=TOKEN) as am:
        async with httpx.AsyncClient() as http:
            labels = {"alertname": "ApiDown", "severity": "critical", "service": "web"}
            fire = [{"labels": labels, "annotations": {"summary": "5xx on every request"}}]
            assert (await http.post(f"{am.url}/api/v2/alerts", json=fire)).status_code == 200
            message = await client.wait_for(CRITICAL, bot_message("ApiDown"), timeout=30)
            assert "🔥 CRITICAL — 1 firing" in message.text
            assert "5xx on every request" in message.text
            assert [b.text for row in message.buttons for b in row] == ["👀 Ack", "🔕 1h", "🔕 24h"]

            ack = await client.press_button(CAROL, CRITICAL, message.message_id, 1)
            assert await callback_answer_text(client, ack) == "You are on it: escalation stops."
            acked = await client.wait_for(CRITICAL, bot_message("is on it"))
            assert "👀 carol is on it" in acked.text

            now = datetime.now(UTC).isoformat()
            resolve = [{**fire[0], "endsAt": now}]
            assert (await http.post(f"{am.url}/api/v2/alerts", json=resolve)).status_code == 200
            resolved = await client.wait_for(CRITICAL, bot_message("RESOLVED"), timeout=30)
    assert resolved.message_id == message.message_id  # the same message, edited
    assert resolved.buttons == []
    assert "✅ ApiDown" in resolved.text
    firing = await client.reply_after(ALICE, -100100, "/alerts")
    assert firing.text == "✅ Nothing is firing."


async def test_silences_dedup_and_commands(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    opsgate = await start(start_opsgate, client, ops_file)
    disk = {"alertname": "DiskFull", "severity": "warning", "service": "worker", "host": "a"}
    for _ in range(3):  # the same alert three times: one message
        response = await post(opsgate, [{"labels": disk}])
        assert response.status_code == 200, response.text
    first = await client.wait_for(WARNING, bot_message("DiskFull"))
    refused = await client.reply_after(BOB, -100100, "/silence alertname=DiskFull 2h")
    assert refused.text.startswith("⛔ /silence needs the role sre.")
    done = await client.reply_after(CAROL, -100100, "/silence alertname=DiskFull 2h swap full")
    assert done.text.startswith("🔕 #1 alertname=DiskFull until") and "swap full" in done.text
    listed = await client.reply_after(BOB, -100100, "/silences")
    assert "#1" in listed.text and "alertname=DiskFull" in listed.text
    # Silenced: a second host's DiskFull sends nothing new.
    other = {**disk, "host": "b"}
    assert (await post(opsgate, [{"labels": other}])).json()["new_firing"] == 1
    firing = await client.reply_after(BOB, -100100, "/alerts")
    assert "host=b" in firing.text and "🔕" in firing.text
    messages = [m for m in await client.messages(WARNING) if m.from_bot]
    assert [m.message_id for m in messages] == [first.message_id]
    ended = await client.reply_after(CAROL, -100100, "/unsilence 1")
    assert ended.text == "🔔 Silence #1 ended; its alerts notify again."
    bad = await client.reply_after(CAROL, -100100, "/silence alertname=~( 1h")
    assert bad.text.startswith("⛔ bad regex")


async def test_ack_and_silence_need_their_roles_and_refusals_change_nothing(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    # Ack named in [permissions]; bob is a developer, 4242 is in no [people] at all.
    text = ops_text().replace("[roles]\n", '[permissions]\nack = "sre"\n[roles]\n', 1)
    ops_file.write_text(
        text.replace("sre = [1001, 1003]", "sre = [1001, 1003]\ndeveloper = [1002]")
    )
    for chat_id, title in ((CRITICAL, "Critical"), (WARNING, "Warnings")):
        await client.add_chat(chat_id, "supergroup", title)
    opsgate = await start_opsgate(alerts_token=TOKEN)
    webhook = f"http://127.0.0.1:{opsgate.http_port}/webhooks/alertmanager"
    with running(webhook, bearer=TOKEN) as am:
        async with httpx.AsyncClient() as http:
            labels = {"alertname": "QueueStuck", "severity": "critical", "service": "worker"}
            fire = [{"labels": labels, "annotations": {"summary": "no progress for 10 min"}}]
            assert (await http.post(f"{am.url}/api/v2/alerts", json=fire)).status_code == 200
            message = await client.wait_for(CRITICAL, bot_message("QueueStuck"), timeout=30)
    await client.add_user(STRANGER, "Stranger")
    refusals = {
        (STRANGER, 1): "This needs the role sre.",
        (STRANGER, 2): "This needs the role sre.",
        (BOB, 1): "This needs the role sre.",
        (BOB, 3): "This needs the role sre.",
    }
    for (user, button), answer in refusals.items():
        pressed = await client.press_button(user, CRITICAL, message.message_id, button)
        assert await callback_answer_text(client, pressed) == answer
    [group] = await opsgate.services.alerts.firing_groups()
    assert group.acked_by is None  # nobody is "on it"
    assert await opsgate.services.alerts.silences() == []
    refused = await opsgate.services.audit.events(kind="button.refused")
    assert sorted((e.actor, e.data["action"]) for e in refused) == [
        ("1002", "ack"), ("1002", "s24"), ("4242", "ack"), ("4242", "s1"),
    ]  # fmt: skip
    current = [m for m in await client.messages(CRITICAL) if m.message_id == message.message_id]
    assert current[0].text == message.text  # the message tells the same as before
    ack = await client.press_button(CAROL, CRITICAL, message.message_id, 1)
    assert await callback_answer_text(client, ack) == "You are on it: escalation stops."
