"""Outgoing webhooks through the real bot: flag changes made in chat reach a real receiver on
loopback, which checks every Standard Webhooks signature with its own code (written here from
the spec, sharing nothing with opsgate's); a receiver down for 30 s, a wrong secret, a restart."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bot.dev.sandbox import SandboxClient
from bot.http.server import BackgroundHTTPServer, free_port
from bot.runner import Opsgate
from tests.e2e.conftest import CAROL, DEPLOYS, OPS_TEXT, StartOpsgate

SECRET_ENV = "OPSGATE_WEBHOOK_CI_SECRET"
HOOKS = """
[flags.checkout_v2]
[flags.dark_mode]
[webhooks.ci]
url = "http://127.0.0.1:{port}/hooks"
events = ["flag.*"]
secret_env = "{env}"
timeout_s = 2
backoff_s = 0.2
backoff_max_s = 1
max_attempts = 1000
"""


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The Standard Webhooks check, from the spec's text: id.timestamp.body, HMAC-SHA256."""
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    given = headers.get("webhook-signature")
    if not (msg_id and stamp and given) or abs(time.time() - int(stamp)) > 300:
        return False
    key = base64.b64decode(secret.split("_", 1)[1])
    mac = hmac.new(key, msg_id.encode() + b"." + stamp.encode() + b"." + body, hashlib.sha256)
    expected = base64.b64encode(mac.digest()).decode()
    for entry in given.split(" "):
        version, _, sig = entry.partition(",")
        if version == "v1" and hmac.compare_digest(sig, expected):
            return True
    return False


@dataclass
class Receiver:
    secret: str
    port: int = field(default_factory=free_port)
    accepted: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (id, body)
    refused: int = 0
    _server: BackgroundHTTPServer | None = None

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        if not verify(self.secret, dict(request.headers), body):
            self.refused += 1
            return Response(status_code=401)
        self.accepted.append((request.headers["webhook-id"], json.loads(body)))
        return Response(status_code=204)

    async def up(self) -> None:
        app = Starlette(routes=[Route("/hooks", self.hook, methods=["POST"])])
        self._server = BackgroundHTTPServer(app, "127.0.0.1", self.port)
        await self._server.start()

    async def down(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    made = Receiver(new_secret())
    yield made
    await made.down()


@pytest.fixture(autouse=True)
def hooked(receiver: Receiver, ops_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ops file subscribes `ci` to flag events at the receiver, with its secret."""
    ops_file.write_text(HOOKS.format(port=receiver.port, env=SECRET_ENV) + OPS_TEXT)
    monkeypatch.setenv(SECRET_ENV, receiver.secret)


async def health(opsgate: Opsgate) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"http://127.0.0.1:{opsgate.http_port}/health")
    hooks: dict[str, Any] = answer.json()["webhooks"]["ci"]
    return hooks


async def metrics(opsgate: Opsgate) -> str:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"http://127.0.0.1:{opsgate.http_port}/metrics")).text


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def change_flags(client: SandboxClient) -> None:
    for text in ("/flag checkout_v2 off", "/flag dark_mode 10", "/flag checkout_v2 on"):
        reply = await client.reply_after(CAROL, DEPLOYS, text)
        assert reply.text.startswith("🚩"), reply.text
    for percent in (20, 40, 60):
        await client.reply_after(CAROL, DEPLOYS, f"/flag checkout_v2 {percent}")


async def audited_flag_events(opsgate: Opsgate) -> list[int]:
    return [e.id for e in await opsgate.services.audit.events() if e.kind.startswith("flag.")]


def assert_once_in_order(receiver: Receiver, expected: list[int]) -> None:
    ids = [msg_id for msg_id, _ in receiver.accepted]
    assert len(ids) == len(set(ids)), "a webhook-id arrived twice"
    audit_ids = [body["data"]["audit_id"] for _, body in receiver.accepted]
    assert sorted(audit_ids) == expected  # every event, exactly once
    by_subject: dict[str, list[int]] = {}
    for _, body in receiver.accepted:
        assert body["type"].startswith("flag.") and body["timestamp"].endswith("Z")
        by_subject.setdefault(body["data"]["subject"], []).append(body["data"]["audit_id"])
    assert set(by_subject) == {"checkout_v2", "dark_mode"}
    for sent in by_subject.values():
        assert sent == sorted(sent), "out of order within a subject"


async def test_a_receiver_down_for_30_s_then_up_gets_every_event_once_in_order(
    receiver: Receiver, start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    opsgate = await start_opsgate()
    down_since = time.monotonic()
    await change_flags(client)  # the chat answers at once: nothing waits for the receiver
    expected = await audited_flag_events(opsgate)
    assert len(expected) == 2 + 6  # two flags created from the ops file, six changes

    async def failing() -> bool:
        state = await health(opsgate)
        return bool(state["failing"]) and state["pending"] == len(expected)

    await until(failing)
    assert "ConnectError" in (await health(opsgate))["last_error"]
    await asyncio.sleep(max(0.0, 30 - (time.monotonic() - down_since)))
    await receiver.up()

    async def drained() -> bool:
        return (await health(opsgate))["pending"] == 0

    await until(drained)
    assert_once_in_order(receiver, expected)
    assert receiver.refused == 0
    state = await health(opsgate)
    assert not state["failing"] and state["delivered"] == len(expected)
    scraped = await metrics(opsgate)
    delivered = f'{{result="delivered",subscription="ci"}} {len(expected)}.0'
    assert "opsgate_webhook_deliveries_total" + delivered in scraped
    assert 'opsgate_webhook_pending{subscription="ci"} 0.0' in scraped


async def test_a_wrong_secret_shows_as_failures_not_silence(
    receiver: Receiver,
    start_opsgate: StartOpsgate,
    client: SandboxClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = new_secret()
    monkeypatch.setenv(SECRET_ENV, wrong)  # opsgate signs with another secret than expected
    await receiver.up()
    opsgate = await start_opsgate()
    reply = await client.reply_after(CAROL, DEPLOYS, "/flag checkout_v2 off")
    assert reply.text.startswith("🚩")

    async def failing() -> bool:
        state = await health(opsgate)
        return bool(state["failing"]) and state["failed_attempts"] >= 3

    await until(failing)
    state = await health(opsgate)
    assert state["last_error"] == "HTTP 401" and state["pending"] == 3
    assert state["delivered"] == 0 and receiver.accepted == [] and receiver.refused >= 3
    scraped = await metrics(opsgate)
    assert 'opsgate_webhook_pending{subscription="ci"} 3.0' in scraped
    assert 'opsgate_webhook_failing{subscription="ci"} 1.0' in scraped
    failed = [
        line
        for line in scraped.splitlines()
        if line.startswith('opsgate_webhook_deliveries_total{result="failed",subscription="ci"}')
    ]
    assert failed and float(failed[0].rsplit(" ", 1)[1]) >= 3
    assert wrong not in caplog.text and wrong.removeprefix("whsec_") not in caplog.text


async def test_events_left_undelivered_go_out_after_a_restart(
    receiver: Receiver, start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    first = await start_opsgate()
    await change_flags(client)
    expected = await audited_flag_events(first)
    assert (await health(first))["pending"] == len(expected)
    await first.stop()  # the receiver never answered: every event is still queued

    await receiver.up()
    second = await start_opsgate()

    async def drained() -> bool:
        return (await health(second))["pending"] == 0

    await until(drained)
    assert_once_in_order(receiver, expected)
