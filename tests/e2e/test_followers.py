"""Every opsgate on a shared PostgreSQL serves the HTTP side; a follower answers /health,
/metrics and OFREP itself and relays everything else to the leader, which acts on it
(bot/http/relay.py).

Two real `opsgate run` processes, the session's real PostgreSQL, the Bot API sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bot.dev.harness.opsgate_process import opsgate_process, read_db
from bot.dev.harness.postgres import PostgresCluster
from bot.dev.sandbox import SandboxClient, SandboxMessage, SandboxThread
from bot.http.server import free_port
from tests.e2e.conftest import ALICE, DEPLOYS, OPS_TEXT, TOKEN
from tests.e2e.members import Member
from tests.e2e.test_alert_webhooks import ALERTS, CRITICAL, WARNING, am_alert, am_body

API_TOKEN = "followers-e2e-api-token"
ALERTS_TOKEN = "followers-e2e-alerts-token"
SECRET = "followers-webhook-secret_0123456789"
TIMEOUT_S = 30  # a bound for a hung test, not a measure

EXTRA = (
    ALERTS
    + """
[flags.checkout]
description = "the new checkout"
"""
)


@dataclass
class Pair:
    leader: Member
    follower: Member
    url: str  # the database


Members = Callable[..., Awaitable[Pair]]


@pytest.fixture
async def start_pair(
    sandbox: SandboxThread,
    client: SandboxClient,
    ops_file: Path,
    tmp_path: Path,
    postgres: PostgresCluster,
) -> AsyncIterator[Members]:
    """Start a leader, then a follower, over one database; `settings` go to both (a callable
    of the follower's port gives each its own value)."""
    ops_file.write_text(OPS_TEXT + EXTRA)
    for chat_id, title in ((CRITICAL, "Critical"), (WARNING, "Warnings")):
        await client.add_chat(chat_id, "supergroup", title)
    url = postgres.schema_url()
    async with contextlib.AsyncExitStack() as stack:

        async def start(**settings: str | Callable[[int], str]) -> Pair:
            ports = {"leader": free_port(), "follower": free_port()}
            members: dict[str, Member] = {}
            for role, port in ports.items():
                directory = tmp_path / role
                directory.mkdir()
                values = {
                    key: value(ports["follower"]) if callable(value) else value
                    for key, value in settings.items()
                }
                process = await stack.enter_async_context(
                    opsgate_process(
                        directory,
                        bot_token=TOKEN,
                        bot_api_url=sandbox.base_url,
                        config=str(ops_file),
                        db=url,
                        http_addr=f"127.0.0.1:{port}",
                        api_token=API_TOKEN,
                        alerts_token=ALERTS_TOKEN,
                        log_level="INFO",
                        **values,
                    )
                )
                members[role] = member = Member(process, port, directory)
                await process.start()
                await member.wait_role(role)
            return Pair(members["leader"], members["follower"], url)

        yield start


def critical_alert(name: str) -> bytes:
    """One firing critical alert, as Alertmanager's version 4 webhook sends it."""
    labels = {"alertname": name, "severity": "critical", "service": "web"}
    return am_body([am_alert(labels, fingerprint=hashlib.sha256(name.encode()).hexdigest()[:16])])


ALERT_AUTH = {"Authorization": f"Bearer {ALERTS_TOKEN}", "Content-Type": "application/json"}
API_AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


async def checkout_for(member: Member, user: str) -> bool:
    """The OFREP answer for the checkout flag, straight from that process."""
    async with httpx.AsyncClient(headers=API_AUTH, timeout=5) as http:
        answer = await http.post(
            f"{member.url}/ofrep/v1/evaluate/flags/checkout",
            json={"context": {"targetingKey": user}},
        )
    assert answer.status_code == 200, answer.text
    return bool(answer.json()["value"])


async def roles_seen(member: Member, first_look: asyncio.Event) -> list[str]:
    """/health every 20 ms until it says "leader": the role each look got, or the error.
    `first_look` is set once the first look has its answer."""
    seen: list[str] = []
    async with httpx.AsyncClient(timeout=5) as http:
        while not seen or seen[-1] != "leader":
            try:
                seen.append(str((await http.get(f"{member.url}/health")).json()["role"]))
            except httpx.HTTPError as exc:
                seen.append(type(exc).__name__)
            first_look.set()
            await asyncio.sleep(0.02)
    return seen


def naming(text: str) -> Callable[[list[SandboxMessage]], bool]:
    return lambda messages: any(m.from_bot and text in m.text for m in messages)


def same_but_date(a: httpx.Response, b: httpx.Response) -> None:
    """The same status, headers (but the date of each) and body."""

    def shape(r: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = [(k, v) for k, v in r.headers.multi_items() if k.lower() != "date"]
        return r.status_code, headers, r.content

    assert shape(a) == shape(b)


async def test_a_follower_serves_what_it_can_and_relays_the_rest_to_the_leader(
    start_pair: Members, client: SandboxClient
) -> None:
    pair = await start_pair()
    leader, follower = pair.leader, pair.follower
    async with httpx.AsyncClient(timeout=15) as http:
        health = (await http.get(f"{follower.url}/health")).json()
        assert health["this"] == follower.name and health["leader"]["name"] == leader.name
        assert health["status"] == "following" and health["database_writable"] is True
        metrics = await http.get(f"{follower.url}/metrics")
        assert metrics.status_code == 200 and "opsgate_deployments" in metrics.text
        assert "opsgate_alerts" in metrics.text

        # OFREP from the follower's own copy of the flags: checkout is at 0%.
        assert not await checkout_for(follower, "u-1")
        # A change through the follower's API: the leader makes it, and its answer comes back.
        changed = await http.post(
            f"{follower.url}/api/flags/checkout",
            json={"percent": 100, "requested_by": ALICE},
            headers=API_AUTH,
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["rollout_percent"] == 100
        # The follower reads the flags again once they changed.
        deadline = asyncio.get_running_loop().time() + TIMEOUT_S
        while not await checkout_for(follower, "u-1"):
            assert asyncio.get_running_loop().time() < deadline, "the follower's flags are stale"
            await asyncio.sleep(0.1)
        assert await checkout_for(leader, "u-1")

        # A read relayed is the leader's own answer, byte for byte; so is a refusal.
        for headers in (API_AUTH, {"Authorization": "Bearer wrong"}, {}):
            direct = await http.get(f"{leader.url}/api/flags?limit=5", headers=headers)
            relayed = await http.get(f"{follower.url}/api/flags?limit=5", headers=headers)
            same_but_date(direct, relayed)
        assert relayed.status_code == 401

        # An alert posted to the follower reaches the critical chat, sent by the leader.
        posted = await http.post(
            f"{follower.url}/webhooks/alertmanager",
            content=critical_alert("FollowerSaw"),
            headers=ALERT_AUTH,
        )
        assert posted.status_code == 200, posted.text
        assert posted.json()["new_firing"] == 1
        refused = await http.post(
            f"{follower.url}/webhooks/alertmanager", content=b"{not json", headers=ALERT_AUTH
        )
        assert refused.status_code == 400 and "not JSON" in refused.json()["error"]
    await client.wait_for(CRITICAL, naming("FollowerSaw"), timeout=TIMEOUT_S)

    rows = read_db(
        pair.url,
        "SELECT method, target, received_by, taken_by, status FROM relayed_requests ORDER BY id",
    )
    assert [(r[0], r[1], r[4]) for r in rows] == [
        ("POST", "/api/flags/checkout", 200),
        *[("GET", "/api/flags?limit=5", code) for code in (200, 401, 401)],
        ("POST", "/webhooks/alertmanager", 200),
        ("POST", "/webhooks/alertmanager", 400),
    ]
    assert {(r[2], r[3]) for r in rows} == {(follower.name, leader.name)}
    # The leader did the change, in the name of the person the API named.
    [(actor,)] = read_db(
        pair.url, "SELECT actor FROM events WHERE kind = 'flag.changed' AND subject = 'checkout'"
    )
    assert actor == str(ALICE)


async def test_what_a_follower_took_while_no_one_answered_is_done_by_the_next_leader(
    start_pair: Members, client: SandboxClient
) -> None:
    pair = await start_pair(relay_wait_s="1")
    leader, follower = pair.leader, pair.follower
    assert leader.process.process is not None
    leader.process.process.send_signal(signal.SIGSTOP)  # alive, holding the lead, silent
    try:
        async with httpx.AsyncClient(timeout=15) as http:
            queued = await http.post(
                f"{follower.url}/webhooks/alertmanager",
                content=critical_alert("WhileFrozen"),
                headers=ALERT_AUTH,
            )
            assert queued.status_code == 202, queued.text
            assert queued.json()["status"] == "queued"
            read = await http.get(f"{follower.url}/api/flags", headers=API_AUTH)
            assert read.status_code == 503 and read.headers["retry-after"] == "1"
        # The follower's row, and its port, as it comes to lead: looked at from before the kill.
        rows = read_db(pair.url, "SELECT method, done_at FROM relayed_requests ORDER BY id")
        first_look = asyncio.Event()
        watching = asyncio.create_task(roles_seen(follower, first_look))
        # Watched from before the kill: a new leader may take over within milliseconds of it.
        await asyncio.wait_for(first_look.wait(), TIMEOUT_S)
    finally:
        await leader.process.kill()  # SIGKILL ends a stopped process too
    # The read was taken back; the alert stayed stored for the next leader.
    assert rows == [("POST", None)]
    seen = await asyncio.wait_for(watching, TIMEOUT_S)
    # Its port never closed: every look was answered, "follower" until it said "leader".
    assert seen[-1] == "leader" and set(seen) == {"follower", "leader"}, seen
    await client.wait_for(CRITICAL, naming("WhileFrozen"), timeout=TIMEOUT_S)
    await asyncio.sleep(1)  # ten alert ticks more: a second message would be out by now
    named = [m for m in await client.messages(CRITICAL) if "WhileFrozen" in m.text]
    assert len(named) == 1
    [(taken_by, status)] = read_db(pair.url, "SELECT taken_by, status FROM relayed_requests")
    assert (taken_by, status) == (follower.name, 200)


async def test_in_webhook_mode_telegrams_updates_may_reach_any_process(
    start_pair: Members, client: SandboxClient
) -> None:
    """Telegram posts to the follower (the webhook URL names it); the leader answers."""
    pair = await start_pair(
        mode="webhook",
        webhook_secret=SECRET,
        webhook_url=lambda port: f"http://127.0.0.1:{port}/telegram/hook",
    )
    leader, follower = pair.leader, pair.follower
    assert (await client.bot_info())["webhook"]["url"] == f"{follower.url}/telegram/hook"
    reply = await client.reply_after(ALICE, DEPLOYS, "/status", timeout=TIMEOUT_S)
    assert f"Leader: {leader.name}" in reply.text, reply.text

    async with httpx.AsyncClient(timeout=5) as http:
        forged = {"update_id": 77, "message": {"message_id": 1, "date": 0, "text": "/status",
                  "chat": {"id": DEPLOYS, "type": "supergroup"}}}  # fmt: skip
        wrong = await http.post(
            f"{follower.url}/telegram/hook",
            json=forged,
            headers={"X-Telegram-Bot-Api-Secret-Token": "not-it"},
        )
        assert wrong.status_code == 403
    rows = read_db(pair.url, "SELECT target, received_by, taken_by, status FROM relayed_requests")
    assert rows and all(r[0] == "/telegram/hook" for r in rows)  # the forged one was not kept
    assert {(r[1], r[2], r[3]) for r in rows} == {(follower.name, leader.name, 200)}


async def test_webhook_mode_on_a_shared_database_wants_the_secret(
    sandbox: SandboxThread, ops_file: Path, tmp_path: Path, postgres: PostgresCluster
) -> None:
    settings = dict(bot_token=TOKEN, bot_api_url=sandbox.base_url, config=str(ops_file))
    async with opsgate_process(
        tmp_path, **settings, db=postgres.schema_url(), mode="webhook", http_addr="127.0.0.1:0",
        webhook_url="https://ops.example.com/telegram/hook",
    ) as bot:  # fmt: skip
        await bot.start()
        assert bot.process is not None
        assert await asyncio.wait_for(bot.process.wait(), TIMEOUT_S) == 2
    log = (tmp_path / "opsgate.log").read_text()
    assert "webhook mode with a shared PostgreSQL needs OPSGATE_WEBHOOK_SECRET" in log
