"""Malformed alert webhooks through opsgate's real HTTP side: refused with the right status and
a reason, nothing stored, nothing sent, the process still up; a valid alert afterwards goes
through to its chat."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bot.dev.sandbox import SandboxClient, SandboxMessage
from bot.runner import Opsgate
from tests.e2e.conftest import OPS_TEXT, StartOpsgate

CRITICAL, WARNING = -100310, -100311
TOKEN = "alert-webhooks-e2e-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_BODY = 2 * 1024 * 1024
ALERTS = f"""
[chats.alerts]
critical = {CRITICAL}
warning = {WARNING}
[alerts]
tick_s = 0.1
group_wait_s = 0.2
group_interval_s = 0.5
"""
TABLES = ("alerts", "alert_groups", "alert_outbox", "silences")

DISK = {"alertname": "DiskFull", "severity": "warning", "service": "worker", "host": "a"}
API_DOWN = {"alertname": "ApiDown", "severity": "critical", "service": "api"}


def ops_text() -> str:
    return OPS_TEXT.replace("[environments.production]", ALERTS + "[environments.production]", 1)


def am_alert(labels: dict[str, str], **extra: object) -> dict[str, Any]:
    """One alert as Alertmanager 0.25 sends it in its version 4 webhook."""
    return {
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": f"{labels.get('alertname')} summary"},
        "startsAt": "2026-03-02T09:58:01.123456789Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": "0123456789abcdef",
        **extra,
    }


def am_body(alerts: object, **extra: object) -> bytes:
    body = {
        "version": "4",
        "status": "firing",
        "receiver": "hook",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": alerts,
        **extra,
    }
    return json.dumps(body).encode()


def js(value: object) -> bytes:
    return json.dumps(value).encode()


@dataclass(frozen=True)
class Refused:
    name: str
    kind: str  # generic | alertmanager
    body: bytes
    status: int
    reason: str  # part of the answer's "error"
    headers: dict[str, str] = field(default_factory=lambda: dict(AUTH))


def huge_but_valid_alert() -> bytes:
    # Valid JSON, one acceptable-looking alert: refused for its size alone, before parsing.
    body = js({"labels": {"alertname": "Big"}, "annotations": {"summary": "x" * MAX_BODY}})
    assert len(body) > MAX_BODY
    return body


REFUSED = [
    Refused("no token", "generic", js({"labels": DISK}), 401, "bearer token", {}),
    Refused(
        "wrong token",
        "generic",
        js({"labels": DISK}),
        401,
        "bearer token",
        {"Authorization": "Bearer not-the-token"},
    ),
    Refused(
        "the token without Bearer",
        "alertmanager",
        am_body([am_alert(DISK)]),
        401,
        "bearer token",
        {"Authorization": TOKEN},
    ),
    Refused(
        "the token as Basic",
        "generic",
        js({"labels": DISK}),
        401,
        "bearer token",
        {"Authorization": f"Basic {TOKEN}"},
    ),
    Refused("cut-off JSON", "generic", b'{"alerts": [{"labels": ', 400, "body is not JSON"),
    Refused("empty body", "alertmanager", b"", 400, "body is not JSON"),
    Refused("not UTF-8", "generic", b'{"labels": "\xff\xfe"}', 400, "body is not JSON"),
    Refused("text", "generic", b"DiskFull on worker", 400, "body is not JSON"),
    Refused("a JSON array", "generic", js([{"labels": DISK}]), 422, "alerts[0]: expected an"),
    Refused(
        "a JSON array to alertmanager",
        "alertmanager",
        js([am_alert(DISK)]),
        422,
        "expected Alertmanager's webhook object",
    ),
    Refused("JSON null", "generic", b"null", 422, "alerts[0]: expected an object"),
    Refused("no alerts", "generic", js({"alerts": []}), 422, "alerts: expected a non-empty list"),
    Refused(
        "alerts not a list",
        "alertmanager",
        am_body({"0": am_alert(DISK)}),
        422,
        "alerts: expected a list",
    ),
    Refused(
        "version 3",
        "alertmanager",
        am_body([am_alert(DISK)], version="3"),
        422,
        "unsupported webhook version '3'",
    ),
    Refused(
        "a number as a label value",
        "generic",
        js({"alerts": [{"labels": {**DISK, "host": 7}}]}),
        422,
        "alerts[0].labels.host: expected a string",
    ),
    Refused(
        "labels a string",
        "generic",
        js({"labels": "alertname=DiskFull"}),
        422,
        "alerts[0].labels: expected an object",
    ),
    Refused(
        "missing labels",
        "generic",
        js({"alerts": [{"labels": DISK}, {"annotations": {"summary": "no labels"}}]}),
        422,
        "alerts[1].labels: expected an object",
    ),
    Refused(
        "missing alertname",
        "alertmanager",
        am_body([am_alert(DISK), am_alert(API_DOWN), am_alert({"service": "web"})]),
        422,  # the first two were fine: refused whole, never half-applied
        "alerts[2].labels: an alert needs an alertname label",
    ),
    Refused(
        "a bad label name",
        "alertmanager",
        am_body([am_alert({**DISK, "bad-name": "x"})]),
        422,
        "alerts[0].labels: 'bad-name' is not a label name",
    ),
    Refused(
        "a naive time",
        "alertmanager",
        am_body([am_alert(DISK, startsAt="2026-03-02T09:58:01")]),
        422,
        "alerts[0].startsAt: a time needs its offset",
    ),
    Refused(
        "an unknown status",
        "generic",
        js({"labels": DISK, "status": "pending"}),
        422,
        "alerts[0].status: expected firing or resolved",
    ),
    Refused(
        "more alerts than one request may carry",
        "generic",
        js({"alerts": [{"labels": {**DISK, "host": f"h{i}"}} for i in range(1001)]}),
        422,
        "alerts: more than 1000 in one request",
    ),
    Refused("a body over 2 MB", "generic", huge_but_valid_alert(), 413, "body over"),
]


async def start(start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path) -> Opsgate:
    ops_file.write_text(ops_text())
    for chat_id, title in ((CRITICAL, "Critical"), (WARNING, "Warnings")):
        await client.add_chat(chat_id, "supergroup", title)
    return await start_opsgate(alerts_token=TOKEN)


async def counts(opsgate: Opsgate) -> dict[str, int]:
    db = opsgate.services.storage.db
    found = {}
    for table in TABLES:
        rows = list(await db.execute_fetchall(f"SELECT count(*) FROM {table}"))
        found[table] = int(rows[0][0])
    return found


async def bot_messages(client: SandboxClient) -> list[tuple[int, SandboxMessage]]:
    """The bot's messages in the alert chats, as (chat, message)."""
    return [
        (chat, m) for chat in (CRITICAL, WARNING) for m in await client.messages(chat) if m.from_bot
    ]


async def streamed(body: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """The body in chunks, sent without a Content-Length (chunked transfer encoding)."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_malformed_webhooks_change_nothing_and_a_valid_alert_goes_through(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    opsgate = await start(start_opsgate, client, ops_file)
    base = f"http://127.0.0.1:{opsgate.http_port}"
    empty = dict.fromkeys(TABLES, 0)
    async with httpx.AsyncClient(base_url=base) as http:
        for case in REFUSED:
            answer = await http.post(
                f"/webhooks/{case.kind}", content=case.body, headers=case.headers
            )
            assert answer.status_code == case.status, (case.name, answer.text)
            assert case.reason in answer.json()["error"], (case.name, answer.text)
            assert await counts(opsgate) == empty, case.name
            health = await http.get("/health")
            assert health.status_code == 200, (case.name, health.text)

        # The same size limit when the sender streams without announcing a length.
        answer = await http.post(
            "/webhooks/generic", content=streamed(huge_but_valid_alert()), headers=AUTH
        )
        assert answer.status_code == 413, answer.text
        assert await counts(opsgate) == empty
        assert (await http.get("/health")).status_code == 200

        # Still up and still listening: a valid alert to each endpoint is taken.
        generic = await http.post(
            "/webhooks/generic",
            json={"labels": DISK, "annotations": {"summary": "disk at 91%"}},
            headers=AUTH,
        )
        assert generic.status_code == 200, generic.text
        assert generic.json() == {
            "accepted": 1,
            "new_firing": 1,
            "resolved": 0,
            "unchanged": 0,
            "unrouted": 0,
        }
        alertmanager = await http.post(
            "/webhooks/alertmanager", content=am_body([am_alert(API_DOWN)]), headers=AUTH
        )
        assert alertmanager.status_code == 200, alertmanager.text
        assert alertmanager.json()["new_firing"] == 1

    disk = await client.wait_for(WARNING, lambda ms: next((m for m in ms if m.from_bot), None))
    api = await client.wait_for(CRITICAL, lambda ms: next((m for m in ms if m.from_bot), None))
    assert "DiskFull" in disk.text and "disk at 91%" in disk.text
    assert "ApiDown" in api.text
    # Nothing the refused requests carried ever reached a chat.
    await client.wait_idle()
    sent = [(chat, m.message_id) for chat, m in await bot_messages(client)]
    assert sent == [(CRITICAL, api.message_id), (WARNING, disk.message_id)]
    assert (await counts(opsgate))["alerts"] == 2


async def test_without_a_configured_token_every_request_is_refused(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    ops_file.write_text(ops_text())
    for chat_id, title in ((CRITICAL, "Critical"), (WARNING, "Warnings")):
        await client.add_chat(chat_id, "supergroup", title)
    opsgate = await start_opsgate()  # no alerts_token
    base = f"http://127.0.0.1:{opsgate.http_port}"
    async with httpx.AsyncClient(base_url=base) as http:
        for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer x"}):
            for kind in ("generic", "alertmanager"):
                answer = await http.post(
                    f"/webhooks/{kind}", json={"labels": DISK}, headers=headers
                )
                assert answer.status_code == 401, (kind, headers, answer.text)
        assert (await http.get("/health")).status_code == 200
    assert await counts(opsgate) == dict.fromkeys(TABLES, 0)
    await client.wait_idle()
    assert await bot_messages(client) == []
