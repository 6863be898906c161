"""Silences in the real Alertmanager, driven from the chat and checked with the real amtool;
the local fallback when Alertmanager is down; /alerts filters and pages, and the API's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from bot.dev.harness.alertmanager import Alertmanager, amtool, running
from bot.dev.sandbox import SandboxClient
from bot.http.server import free_port
from bot.runner import Opsgate
from tests.e2e.conftest import BOB, CAROL, DEPLOYS, StartOpsgate, callback_answer_text
from tests.e2e.test_alerts import CRITICAL, TOKEN, WARNING, bot_message, ops_text, post

API_TOKEN = "silences-e2e-api-token"


async def active_silences(am: Alertmanager) -> list[dict[str, Any]]:
    found = json.loads(await amtool(am, "silence", "query", "-o", "json"))
    assert isinstance(found, list)
    return found


async def start_with(
    start_opsgate: StartOpsgate,
    client: SandboxClient,
    ops_file: Path,
    am_url: str | None,
    port: int | None = None,
) -> Opsgate:
    text = ops_text()
    if am_url is not None:
        text += f'\n[alertmanager]\nurl = "{am_url}"\n'
    ops_file.write_text(text)
    for chat_id, title in ((CRITICAL, "Critical"), (WARNING, "Warnings")):
        await client.add_chat(chat_id, "supergroup", title)
    settings: dict[str, object] = {"alerts_token": TOKEN, "api_token": API_TOKEN}
    if port is not None:
        settings["http_addr"] = f"127.0.0.1:{port}"
    return await start_opsgate(**settings)


async def fire(am: Alertmanager, *labels: dict[str, str]) -> None:
    alerts = [{"labels": lab, "annotations": {"summary": "test"}} for lab in labels]
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{am.url}/api/v2/alerts", json=alerts)
    response.raise_for_status()


async def test_a_silence_button_makes_the_silence_in_alertmanager_and_unsilence_expires_it(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    port = free_port()
    with running(f"http://127.0.0.1:{port}/webhooks/alertmanager", bearer=TOKEN) as am:
        opsgate = await start_with(start_opsgate, client, ops_file, am.url, port)
        labels = {"alertname": "DiskFull", "severity": "warning", "service": "worker"}
        await fire(am, labels)
        message = await client.wait_for(WARNING, bot_message("DiskFull"), timeout=30)
        pressed = await client.press_button(CAROL, WARNING, message.message_id, 2)  # 🔕 1h
        assert await callback_answer_text(client, pressed) == "Silenced for 1 h."
        [silence] = await active_silences(am)
        assert silence["createdBy"] == "carol"
        assert silence["comment"].startswith("opsgate: ")
        assert {(m["name"], m["value"]) for m in silence["matchers"]} == {
            ("alertname", "DiskFull"),
            ("service", "worker"),
        }
        listed = await client.reply_after(BOB, DEPLOYS, "/silences")
        assert silence["id"][:8] in listed.text and "by carol in Alertmanager" in listed.text
        [mirror] = await opsgate.services.alerts.silences()  # opsgate honours it too
        assert mirror.matches(labels)

        ended = await client.reply_after(CAROL, DEPLOYS, f"/unsilence {silence['id'][:8]}")
        assert ended.text == f"🔔 Silence {silence['id'][:8]} ended; its alerts notify again."
        assert await active_silences(am) == []
        assert await opsgate.services.alerts.silences() == []
        again = await client.reply_after(CAROL, DEPLOYS, f"/unsilence {silence['id'][:8]}")
        assert again.text.startswith("⛔ No silence") and "Nothing changed" in again.text
    kinds = [e.kind for e in await opsgate.services.audit.events() if "silence" in e.kind]
    assert kinds == ["alert.silenced", "alert.unsilenced"]


async def test_a_silence_made_with_amtool_is_listed_and_stops_notifications(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    port = free_port()
    with running(f"http://127.0.0.1:{port}/webhooks/alertmanager", bearer=TOKEN) as am:
        await start_with(start_opsgate, client, ops_file, am.url, port)
        added = await amtool(
            am, "silence", "add", "alertname=Noisy", "host=a", "--author=dave",
            "--comment=known flapping", "--duration=2h",
        )  # fmt: skip
        silence_id = added.strip()
        listed = await client.reply_after(BOB, DEPLOYS, "/silences")
        assert silence_id[:8] in listed.text and "by dave in Alertmanager" in listed.text
        assert "known flapping" in listed.text
        noisy = {"alertname": "Noisy", "severity": "warning", "service": "web"}
        await fire(am, {**noisy, "host": "a"}, {**noisy, "host": "b"})  # one group in AM
        message = await client.wait_for(WARNING, bot_message("Noisy"), timeout=30)
        assert "host=b" in message.text and "host=a" not in message.text
        shown = [m for m in await client.messages(WARNING) if m.from_bot]
        assert not any("host=a" in m.text for m in shown)


async def test_alertmanager_down_falls_back_to_a_local_silence_and_says_so(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    opsgate = await start_with(start_opsgate, client, ops_file, down)
    reply = await client.reply_after(CAROL, DEPLOYS, "/silence alertname=DiskFull 1h swap")
    assert reply.text.startswith("⚠️ Alertmanager is unreachable: silenced in opsgate only.")
    assert "#1" in reply.text and "local: Alertmanager unreachable; swap" in reply.text
    listed = await client.reply_after(BOB, DEPLOYS, "/silences")
    assert listed.text.startswith("⚠️ Alertmanager is unreachable")
    assert "#1" in listed.text and "local: Alertmanager unreachable" in listed.text

    labels = {"alertname": "ApiDown", "severity": "critical", "service": "web"}
    assert (await post(opsgate, [{"labels": labels}])).status_code == 200
    message = await client.wait_for(CRITICAL, bot_message("ApiDown"))
    pressed = await client.press_button(CAROL, CRITICAL, message.message_id, 3)  # 🔕 24h
    answer = await callback_answer_text(client, pressed)
    assert answer == "Alertmanager unreachable: silenced for 24 h in opsgate only."
    assert len(await opsgate.services.alerts.silences()) == 2


async def test_bad_silence_input_is_refused_and_changes_nothing(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    opsgate = await start_with(start_opsgate, client, ops_file, None)
    cases = {
        "/silence alertname DiskFull 1h": "⛔ not a matcher",
        "/silence alertname=~( 1h": "⛔ bad regex",
        "/silence alertname=X 99d": "⛔ A silence lasts 1 s to 30 days",
        f"/silence alertname=X 1h {'long ' * 60}": "⛔ The comment is too long",
        "/unsilence 42": "⛔ No silence #42 in force",
        "/unsilence <b>": "Usage: /unsilence ID",
    }
    for command, says in cases.items():
        reply = await client.reply_after(CAROL, DEPLOYS, command)
        assert reply.text.startswith(says), (command, reply.text)
    assert await opsgate.services.alerts.silences() == []
    assert await opsgate.services.audit.events(kind="alert.silenced") == []


async def test_alerts_filters_and_pages_in_chat_and_api(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    opsgate = await start_with(start_opsgate, client, ops_file, None)
    web = [
        {"labels": {"alertname": f"Slow{i:02}", "severity": "warning", "service": "web"}}
        for i in range(12)
    ]
    worker = [
        {"labels": {"alertname": f"Down{i}", "severity": "critical", "service": "worker"}}
        for i in range(3)
    ]
    assert (await post(opsgate, web + worker)).status_code == 200

    first = await client.reply_after(BOB, DEPLOYS, "/alerts web")
    assert "12 group(s) firing matching service=web, page 1/2" in first.text
    assert "Slow00" in first.text and "Down0" not in first.text
    assert [b.text for row in first.buttons for b in row] == ["Next ▶️"]
    assert all(len((b.data or "").encode()) <= 64 for row in first.buttons for b in row)
    await client.press_button(BOB, DEPLOYS, first.message_id, 1)
    second = await client.wait_for(DEPLOYS, bot_message("page 2/2"))
    assert second.message_id == first.message_id and "Slow11" in second.text
    assert [b.text for row in second.buttons for b in row] == ["◀️ Previous"]

    critical = await client.reply_after(BOB, DEPLOYS, "/alerts critical")
    assert "3 group(s) firing matching severity=critical" in critical.text
    assert critical.buttons == [] and "Slow" not in critical.text
    regex = await client.reply_after(BOB, DEPLOYS, "/alerts service=web severity=~warn.*")
    assert "12 group(s) firing" in regex.text
    none = await client.reply_after(BOB, DEPLOYS, "/alerts service=api")
    assert none.text == "✅ Nothing is firing matching service=api."
    for bad, says in {
        "/alerts crtical": "neither a severity",
        "/alerts severity=urgent": "unknown severity",
        "/alerts service=~(": "bad regex",
        "/alerts " + "x" * 400: "too long",
    }.items():
        reply = await client.reply_after(BOB, DEPLOYS, bad)
        assert reply.text.startswith("⛔") and says in reply.text, reply.text

    # Ten of the web alerts resolve: page 2 is gone, an old Next button says so.
    kept = await client.reply_after(BOB, DEPLOYS, "/alerts web")
    resolved = [{**a, "status": "resolved"} for a in web[2:]]
    assert (await post(opsgate, resolved)).status_code == 200
    stale = await client.press_button(BOB, DEPLOYS, kept.message_id, 1)  # Next ▶️: page 2
    assert await callback_answer_text(client, stale) == "This button is no longer valid."
    [now] = [m for m in await client.messages(DEPLOYS) if m.message_id == kept.message_id]
    assert now.text == kept.text  # changed nothing
    again = await client.reply_after(BOB, DEPLOYS, "/alerts web")
    assert again.text.startswith("📋 2 group(s) firing matching service=web")
    assert again.buttons == []

    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{opsgate.http_port}") as http:
        got = await http.get("/api/alerts", params={"severity": "critical"}, headers=headers)
        assert got.status_code == 200 and len(got.json()) == 3
        assert got.headers["x-total-count"] == "3"
        params = {"service": "worker", "limit": "2", "offset": "2"}
        paged = await http.get("/api/alerts", params=params, headers=headers)
        assert [g["alerts"][0]["labels"]["alertname"] for g in paged.json()] == ["Down2"]
        refused = await http.get("/api/alerts", params={"severity": "urgent"}, headers=headers)
        assert refused.status_code == 422 and "unknown severity" in refused.json()["error"]
        refused = await http.get("/api/alerts", params={"limit": "0"}, headers=headers)
        assert refused.status_code == 422
