"""Two opsgates on one PostgreSQL: one leads, the other follows and takes over.

Real processes (`python -m bot run`), the session's real PostgreSQL, the Bot API sandbox.
The lead is a session advisory lock on the leader's data connection
(services/records/leadership.py): SIGKILL the leader, or have PostgreSQL end its session, and
the follower leads; the old leader, cut off, stops acting. The follower serves HTTP meanwhile
(tests/e2e/test_followers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.dev.harness.opsgate_process import opsgate_process, read_db
from bot.dev.harness.postgres import PostgresCluster
from bot.dev.harness.systemd import SystemdSandbox
from bot.dev.sandbox import SandboxClient, SandboxMessage, SandboxThread
from bot.http.server import free_port
from services.records.leadership import LEAD_LOCK
from tests.e2e.conftest import APPROVALS, CAROL, DEPLOYS, TOKEN
from tests.e2e.deploy_app import installed_app
from tests.e2e.members import Member
from tests.e2e.test_approvals import NEW_PEOPLE, approval_message, ask_deploy
from tests.e2e.test_approvals import ops_text as approvals_ops_text

TAKEOVER_TIMEOUT_S = 30  # a bound for a hung test, not the measure (bench/failover.py is)


@dataclass
class Pair:
    first: Member
    second: Member
    url: str


@pytest.fixture
async def pair(
    sandbox: SandboxThread,
    client: SandboxClient,
    ops_file: Path,
    tmp_path: Path,
    postgres: PostgresCluster,
) -> AsyncIterator[Pair]:
    """Two opsgate processes (not started) over one database, each with its own HTTP port
    and log."""
    url = postgres.schema_url()
    members = []
    async with contextlib.AsyncExitStack() as stack:
        for name in ("first", "second"):
            directory = tmp_path / name
            directory.mkdir()
            port = free_port()
            process = await stack.enter_async_context(
                opsgate_process(
                    directory,
                    bot_token=TOKEN,
                    bot_api_url=sandbox.base_url,
                    config=str(ops_file),
                    db=url,
                    http_addr=f"127.0.0.1:{port}",
                    log_level="INFO",
                )
            )
            members.append(Member(process, port, directory))
        yield Pair(members[0], members[1], url)


async def lead_and_follow(pair: Pair) -> None:
    """The first leads, the second follows (its /health names the first)."""
    await pair.first.process.start()
    body = await pair.first.wait_role("leader")
    assert body["leader"] == {"name": pair.first.name, "since": body["leader"]["since"]}
    assert body["this"] == pair.first.name
    await pair.second.process.start()
    following = await pair.second.wait_role("follower")
    assert following["status"] == "following" and following["this"] == pair.second.name
    assert following["leader"]["name"] == pair.first.name


async def test_the_follower_takes_over_when_the_leader_is_killed(
    pair: Pair, client: SandboxClient
) -> None:
    await lead_and_follow(pair)
    status = await client.reply_after(CAROL, DEPLOYS, "/status", timeout=30)
    assert f"Leader: {pair.first.name}" in status.text, status.text

    first_name = pair.first.name
    await pair.first.process.kill()
    body = await pair.second.wait_role("leader")
    assert body["leader"]["name"] == pair.second.name
    status = await client.reply_after(CAROL, DEPLOYS, "/status", timeout=30)
    assert f"Leader: {pair.second.name}" in status.text, status.text

    started = read_db(
        pair.url, "SELECT data FROM events WHERE kind = 'opsgate.started' ORDER BY id"
    )
    leaders = [str(row[0]) for row in started]
    assert len(leaders) == 2 and first_name in leaders[0] and pair.second.name in leaders[1]
    # Only the leader ever polled Telegram: the Bot API never answered 409 Conflict.
    assert "Conflict" not in pair.first.log() + pair.second.log()


async def test_a_leader_cut_off_from_the_database_stops_and_the_follower_leads(
    pair: Pair, client: SandboxClient
) -> None:
    await lead_and_follow(pair)
    # PostgreSQL ends the leader's session: the one holding the lead, its data connection.
    [(backend,)] = read_db(
        pair.url,
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = ?",
        LEAD_LOCK,
    )
    read_db(pair.url, "SELECT pg_terminate_backend(?)", backend)
    first = pair.first.process.process
    assert first is not None
    assert await asyncio.wait_for(first.wait(), TAKEOVER_TIMEOUT_S) == 1  # it stopped itself
    assert "lost the database, and with it the lead" in pair.first.log()
    await pair.second.wait_role("leader")
    status = await client.reply_after(CAROL, DEPLOYS, "/status", timeout=30)
    assert f"Leader: {pair.second.name}" in status.text, status.text
    # The cut-off leader wrote nothing after its session ended: not even its own stop.
    kinds = [str(r[0]) for r in read_db(pair.url, "SELECT kind FROM events ORDER BY id")]
    assert kinds.count("opsgate.started") == 2 and "opsgate.stopped" not in kinds


async def test_a_reminder_due_after_the_leader_died_goes_out_once(
    systemd_sandbox: SystemdSandbox,
    pair: Pair,
    client: SandboxClient,
    ops_file: Path,
    tmp_path: Path,
) -> None:
    """A sign-off waits, its reminder due 6 s after the request; the leader dies at once.
    The follower leads, and the reminder goes out once, from it."""
    for user_id, name in NEW_PEOPLE.items():
        await client.add_user(user_id, name.capitalize())
    base = systemd_sandbox.work_dir / f"failover-{tmp_path.name}"
    async with installed_app(systemd_sandbox, base) as app:
        text = approvals_ops_text(systemd_sandbox, app)
        ops_file.write_text(text.replace("reminder_s = 60\n", "reminder_s = 6\n", 1))
        await lead_and_follow(pair)
        await ask_deploy(client, CAROL, "/deploy app v1")
        await approval_message(client, 1)
        await pair.first.process.kill()
        await pair.second.wait_role("leader")

        def reminders(messages: list[SandboxMessage]) -> list[SandboxMessage]:
            return [m for m in messages if m.from_bot and m.text.startswith("⏰ Reminder: #1")]

        await client.wait_for(APPROVALS, lambda ms: bool(reminders(ms)), timeout=30)
        await asyncio.sleep(3)  # 30 timer checks more: a second reminder would be out
        assert len(reminders(await client.messages(APPROVALS))) == 1
        rows = read_db(pair.url, "SELECT reminded FROM approval_requests WHERE deployment_id = 1")
        assert rows == [(1,)]
