"""Links and templates in alert messages, through opsgate's real HTTP side and the Bot API
sandbox: a runbook, a dashboard, the alert's generatorURL and Alertmanager's silence page as
URL buttons; a javascript: or malformed URL never rendered; a route's template opening the
message with every value escaped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from bot.dev.sandbox import SandboxClient, SandboxMessage
from bot.runner import Opsgate
from tests.e2e.conftest import ALICE, OPS_TEXT, StartOpsgate
from tests.e2e.test_alert_webhooks import am_alert, am_body
from tests.e2e.test_alerts import bot_message

WARNING, TEMPLATED = -100320, -100321
TOKEN = "alert-links-e2e-token"
ALERTS = f"""
[alertmanager]
url = "http://127.0.0.1:9093"
[chats.alerts]
warning = {WARNING}
[alerts]
tick_s = 0.1
group_wait_s = 0.1
[[alerts.routes]]
match = {{ team = "templated" }}
chat = {TEMPLATED}
template = "{{severity}} ({{status}}): {{labels.service}} says {{annotations.summary}} {{{{ok}}}}"
[[alerts.routes]]
match = {{ severity = "warning" }}
chat = {WARNING}
"""


async def start(start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path) -> Opsgate:
    text = OPS_TEXT.replace("[environments.production]", ALERTS + "[environments.production]", 1)
    ops_file.write_text(text)
    for chat_id, title in ((WARNING, "Warnings"), (TEMPLATED, "Templated")):
        await client.add_chat(chat_id, "supergroup", title)
    return await start_opsgate(alerts_token=TOKEN)


async def post(opsgate: Opsgate, kind: str, body: bytes) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"http://127.0.0.1:{opsgate.http_port}/webhooks/{kind}",
            content=body,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
    assert response.status_code == 200, response.text


async def test_runbook_dashboard_source_and_silence_links_are_url_buttons(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    opsgate = await start(start_opsgate, client, ops_file)
    labels = {"alertname": "DiskFull", "severity": "warning", "service": "worker"}
    annotations: dict[str, Any] = {
        "summary": "disk almost full",
        "description": "/var is at 97% <and> rising",
        "runbook_url": "https://wiki.example.com/runbooks/disk-full",
        "dashboard": "javascript:alert(document.cookie)",
        "dashboard_url": "http://grafana example/d/1",  # malformed: a space in the host
    }
    alert = am_alert(labels, annotations=annotations, generatorURL="http://prometheus:9090/graph")
    await post(opsgate, "alertmanager", am_body([alert]))

    message = await client.wait_for(WARNING, bot_message("DiskFull"), timeout=30)
    assert "disk almost full" in message.text
    assert "📝 /var is at 97% <and> rising" in message.text  # shown, escaped
    buttons = [b for row in message.buttons for b in row]
    assert [b.text for b in buttons] == [
        "👀 Ack",
        "🔕 1h",
        "🔕 24h",
        "📖 Runbook",
        "📈 Source",
        "🔕 Silence in Alertmanager",
    ]
    urls = {b.text: b.url for b in buttons if b.url}
    assert urls["📖 Runbook"] == "https://wiki.example.com/runbooks/disk-full"
    assert urls["📈 Source"] == "http://prometheus:9090/graph"
    silence = urlsplit(urls["🔕 Silence in Alertmanager"])
    assert silence.netloc == "127.0.0.1:9093" and silence.fragment.startswith("/silences/new?")
    [matchers] = parse_qs(silence.fragment.split("?", 1)[1])["filter"]
    assert matchers == '{alertname="DiskFull", service="worker", severity="warning"}'
    # The dropped URLs are nowhere: not a button, not a link, not in the text.
    sent = json.dumps([message.html, [[b.url for b in row] for row in message.buttons]])
    assert "javascript" not in sent and "grafana example" not in sent

    # Ack redraws the message: its description and link buttons stay.
    await client.press_button(ALICE, WARNING, message.message_id, 1)

    def acked(messages: list[SandboxMessage]) -> SandboxMessage | None:
        found = [m for m in messages if m.message_id == message.message_id]
        return found[0] if found and "👀" in found[0].text.split("\n", 1)[-1] else None

    redrawn = await client.wait_for(WARNING, acked, timeout=20)
    assert redrawn.edits > message.edits, redrawn
    assert "📝 /var is at 97% <and> rising" in redrawn.text
    assert [b.text for row in redrawn.buttons for b in row][-3:] == [
        "📖 Runbook",
        "📈 Source",
        "🔕 Silence in Alertmanager",
    ]


async def test_a_route_template_opens_the_message_with_every_value_escaped(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    opsgate = await start(start_opsgate, client, ops_file)
    labels = {"alertname": "SlowCheckout", "severity": "warning", "team": "templated"}
    alert = {
        "labels": {**labels, "service": "<b>web</b>"},
        "annotations": {"summary": "p99 & <i>rising</i>"},
    }
    await post(opsgate, "generic", json.dumps({"alerts": [alert]}).encode())

    message = await client.wait_for(TEMPLATED, bot_message("SlowCheckout"), timeout=30)
    first = message.text.splitlines()[0]
    assert first == "warning (firing): <b>web</b> says p99 & <i>rising</i> {ok}"
    assert "&lt;b&gt;web&lt;/b&gt;" in message.html and "<b>web</b>" not in message.html
    assert "&lt;i&gt;rising&lt;/i&gt;" in message.html
    # The usual message follows: the alert named, its buttons; no links, none given.
    assert "⚠️ WARNING — 1 firing" in message.text
    assert [b.text for row in message.buttons for b in row] == ["👀 Ack", "🔕 1h", "🔕 24h"]
