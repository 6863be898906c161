"""The alert load scenario, for tests/e2e/test_alert_load.py and bench/alerts.py.

1000 alerts a minute for two minutes through the receiver, into a Bot API sandbox that enforces
Telegram's limits (20 messages a minute per chat, 30 a second overall) and
injects some 429s and 5xx, once with opsgate running throughout and once with it SIGKILLed in
the middle and started again.

Two minutes of load run in real time, so the two scenarios run side by side: each has its own
sandbox (its own bot token), its own `python -m bot run` process, database and HTTP port.
Every second one POST to /webhooks/generic carries 17 new alerts, each with its own `instance`
label (`group_by = ["alertname", "instance"]`, so each is its own group), half critical and
half warning, so both alert chats take ~500 a minute. Every tenth second the previous batch
is posted again, as Alertmanager repeats what still fires: dedup must swallow it. A post
counts as accepted only once answered 200; one that fails (opsgate down) is retried until it
is. Once the load stops and the outbox has drained, every accepted alert must be named in at
least one bot message in its severity's chat (on its own or in a digest), and in none of the
other chat; with opsgate up throughout none is named twice and the sandbox never had to refuse
a message for flooding. Across the restart at-least-once delivery may repeat what was sent just
before the kill: those repeats and any flood refusals are counted and printed, not failed.

The failover scenario runs two opsgates on one PostgreSQL instead: the leader is SIGKILLed in
the middle and the follower takes over; the load is posted as a load balancer would, each
batch to the next process in turn and to the other when that one fails. The follower relays
what it takes to the leader (bot/http/relay.py): a post it could not get answered in time is
answered 202, stored for whichever process leads next.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bot.dev.demo import seed_sandbox
from bot.dev.demo_web import free_port
from bot.dev.harness.opsgate_process import OpsgateProcess, read_db
from bot.dev.sandbox import SandboxClient, SandboxMessage, SandboxThread
from config.opsfile import parse_ops_text

REPO = Path(__file__).resolve().parents[3]
CRITICAL, WARNING = -100300, -100301
ALERTS_TOKEN = "alert-load-token"
LOAD_S = 120  # seconds of load
PER_SECOND = 17  # new alerts a second: 1020 a minute
REPEAT_EVERY = 10  # every tenth second the previous batch is posted again (dedup)
KILL_AT_S, DOWN_S = 60.0, 3.0  # the restart scenario: SIGKILL, then a new process
DRAIN_S = 150.0  # bound on the wait for the outbox to drain after the load
CHAT_PER_MINUTE, GLOBAL_PER_SECOND = 20, 30
# Seeded so both kinds of fault come within each scenario's first 15 sending calls.
RATE_429, RATE_5XX = 0.02, 0.03
ALERTS = f"""
[chats.alerts]
critical = {CRITICAL}
warning = {WARNING}
[alerts]
group_by = ["alertname", "instance"]
tick_s = 0.2
group_wait_s = 0.5
group_interval_s = 1
chat_per_minute = {CHAT_PER_MINUTE}
global_per_second = {GLOBAL_PER_SECOND}
"""
# People and chats as in the end-to-end tests, plus the two alert chats.
BASE_OPS = """
[people]
1001 = "alice"
1002 = "bob"
1003 = "carol"
[roles]
admin = [1001]
sre = [1001, 1003]
[chats]
deploys = -100100
approvals = -100200
"""
OPS = BASE_OPS + ALERTS
INSTANCE = re.compile(r"\binstance=(i-\d{5})\b")


def severity(instance: str) -> str:
    return "critical" if int(instance[2:]) % 2 == 0 else "warning"


def alert(instance: str) -> dict[str, Any]:
    labels = {"alertname": "LoadTest", "severity": severity(instance), "instance": instance}
    # A realistic summary: digests must still name every alert they carry (text limits).
    summary = "Disk /var is 95% full on the database primary, writes will fail soon"
    return {"labels": labels, "annotations": {"summary": summary}}


@dataclass
class Outcome:
    """What one scenario sent and what its chats show once it drained."""

    name: str
    generated: list[str] = field(default_factory=list)  # instances, in order
    accepted: set[str] = field(default_factory=set)  # in a post answered 200
    accepted_at: dict[str, float] = field(default_factory=dict)  # first 200 (time.time())
    round_trips: list[float] = field(default_factory=list)  # of posts answered 200, seconds
    posts: int = 0  # answered 200 (repeats included)
    queued: int = 0  # answered 202 by a follower: stored, acted on by the next leader
    relayed: int = 0  # posts a follower took and a leader acted on (failover only)
    failed_attempts: int = 0  # posts that failed and were retried
    new_firing: int = 0
    unchanged: int = 0
    drain_s: float = 0.0
    messages: dict[int, list[SandboxMessage]] = field(default_factory=dict)
    faults: dict[str, Any] = field(default_factory=dict)
    stored: set[str] = field(default_factory=set)  # instances in the alerts table
    outbox: dict[str, int] = field(default_factory=dict)  # rows by state
    alive: bool = False
    log: Path | None = None
    db: Path | str | None = None
    takeover_s: float | None = None  # failover: from the kill to the follower leading

    def named(self, chat_id: int) -> Counter[str]:
        """In how many of the chat's bot messages each instance is named."""
        return Counter(
            instance
            for m in self.messages.get(chat_id, [])
            if m.from_bot
            for instance in set(INSTANCE.findall(m.text))
        )

    def bot_messages(self) -> list[SandboxMessage]:
        return [m for ms in self.messages.values() for m in ms if m.from_bot]

    def digests(self) -> int:
        return sum(m.text.startswith("📦 Digest") for m in self.bot_messages())

    def duplicates(self) -> dict[str, int]:
        both = self.named(CRITICAL) + self.named(WARNING)
        return {instance: n for instance, n in sorted(both.items()) if n > 1}

    def summary(self) -> str:
        messages = self.bot_messages()
        digests = self.digests()
        return (
            f"{self.name}: {len(self.generated)} alerts sent, {len(self.accepted)} accepted"
            f" ({self.posts} posts answered 200, {self.queued} answered 202 (queued),"
            f" {self.relayed} relayed by a follower, {self.failed_attempts} failed attempts"
            f" retried; new_firing {self.new_firing}, unchanged {self.unchanged});"
            f" {len(messages)} messages ({len(messages) - digests} individual, {digests}"
            f" digests, {sum(m.edits for m in messages)} edits);"
            f" injected {self.faults.get('injected')},"
            f" flood refusals {self.faults.get('flood_refusals')};"
            f" {len(self.duplicates())} alerts named twice or more; outbox {self.outbox};"
            f" drained {self.drain_s:.1f} s after the load"
            + (
                f"; the follower led {self.takeover_s:.1f} s after the kill"
                if self.takeover_s
                else ""
            )
        )


async def wait_ready(
    bot: OpsgateProcess, port: int, timeout: float = 30, role: str | None = None
) -> None:
    """Until /health answers 200 (and names `role`, when given); fails at once if the process
    died."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            assert bot.process is not None and bot.process.returncode is None, "opsgate died"
            try:
                answer = await http.get(f"http://127.0.0.1:{port}/health")
                if answer.status_code == 200 and role in (None, answer.json().get("role")):
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"opsgate did not answer /health on {port} in {timeout} s")


async def post_until_accepted(
    backends: list[httpx.AsyncClient],
    outcome: Outcome,
    batch: list[str],
    deadline: float,
    attempt: int = 0,
) -> None:
    """Post the batch; on a network error or 5xx try again (as Alertmanager does), at the
    next backend when there are several (as a load balancer would), starting at `attempt`."""
    body = {"alerts": [alert(instance) for instance in batch]}
    headers = {"Authorization": f"Bearer {ALERTS_TOKEN}"}
    tries = 0
    while True:
        http = backends[(attempt + tries) % len(backends)]
        tries += 1
        started = time.monotonic()
        try:
            response = await http.post("/webhooks/generic", json=body, headers=headers)
        except httpx.TransportError:
            response = None
        if response is not None and response.status_code == 200:
            outcome.round_trips.append(time.monotonic() - started)
            now = time.time()
            for instance in batch:
                outcome.accepted_at.setdefault(instance, now)
            report = response.json()
            outcome.posts += 1
            outcome.new_firing += report["new_firing"]
            outcome.unchanged += report["unchanged"]
            outcome.accepted.update(batch)
            return
        if response is not None and response.status_code == 202:  # a follower stored it
            outcome.queued += 1
            outcome.accepted.update(batch)
            return
        if response is not None and response.status_code < 500:
            raise AssertionError(f"a post was refused: {response.status_code} {response.text}")
        outcome.failed_attempts += 1
        if time.monotonic() > deadline:
            return  # never accepted: its alerts are not expected in the chats
        if tries % len(backends) == 0:  # every backend failed once more: a pause
            await asyncio.sleep(0.25)


async def send_load(ports: list[int], outcome: Outcome, seconds: int) -> None:
    """PER_SECOND new alerts every second for `seconds`; every REPEAT_EVERY-th second the
    previous batch once more."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = time.monotonic() + seconds + 60
    tasks: list[asyncio.Task[None]] = []
    limits = httpx.Limits(max_connections=100)
    async with contextlib.AsyncExitStack() as stack:
        backends = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10, limits=limits)
            )
            for port in ports
        ]
        previous: list[str] = []
        for second in range(seconds):
            await asyncio.sleep(max(0.0, start + second - loop.time()))
            first = len(outcome.generated)
            batch = [f"i-{n:05d}" for n in range(first, first + PER_SECOND)]
            outcome.generated += batch
            post = post_until_accepted(backends, outcome, batch, deadline, second)
            tasks.append(asyncio.create_task(post))
            if second % REPEAT_EVERY == REPEAT_EVERY - 1:
                again = post_until_accepted(backends, outcome, previous, deadline, second + 1)
                tasks.append(asyncio.create_task(again))
            previous = batch
        await asyncio.gather(*tasks)


async def wait_drained(db: Path | str, timeout: float) -> float:
    """Seconds until every stored alert was enqueued and the outbox has nothing pending."""
    started = time.monotonic()
    queries = (
        "SELECT count(*) FROM alert_outbox WHERE state = 'pending'",
        "SELECT count(*) FROM alert_groups WHERE dirty = 1",
        "SELECT count(*) FROM alerts WHERE notified = ''",
    )
    while True:
        left = [read_db(db, sql)[0][0] for sql in queries]
        if left == [0, 0, 0]:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not drained in {timeout} s: pending, dirty, unnotified {left}")
        await asyncio.sleep(0.5)


async def restart_midway(bot: OpsgateProcess, port: int) -> None:
    await asyncio.sleep(KILL_AT_S)
    await bot.kill()
    await asyncio.sleep(DOWN_S)
    await bot.start()
    await wait_ready(bot, port)


async def fail_over_midway(leader: OpsgateProcess, standby: OpsgateProcess, port: int) -> float:
    """SIGKILL the leader at KILL_AT_S; seconds until the follower's /health says it leads."""
    await asyncio.sleep(KILL_AT_S)
    await leader.kill()
    killed = time.monotonic()
    # A bound for a hung test: on a loaded machine the new leader first works off the backlog
    # of posts that failed meanwhile, each a transaction; bench/failover.py measures takeover.
    await wait_ready(standby, port, timeout=90, role="leader")
    return time.monotonic() - killed


async def run_scenario(
    name: str,
    token: str,
    tmp: Path,
    *,
    seed: int = 0,
    restart: bool = False,
    postgres_url: str | None = None,
    faults: tuple[float, float] = (RATE_429, RATE_5XX),
    seconds: int = LOAD_S,
) -> Outcome:
    """One opsgate process and its own sandbox under `seconds` of load; the outcome once the
    outbox drained (the database stays in `tmp`). With `postgres_url`: two processes on that
    database, the leader SIGKILLed midway (failover)."""
    outcome = Outcome(name)
    tmp.mkdir()  # noqa: ASYNC240 - once, before anything runs
    ops_file, ports = tmp / "ops.toml", [free_port(), free_port()]
    db: Path | str = postgres_url or tmp / "opsgate.db"
    outcome.db = db
    ops_file.write_text(OPS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSGATE_")}
    with (
        SandboxThread(token) as sandbox,
        (tmp / "opsgate.log").open("ab") as log,
        (tmp / "standby.log").open("ab") as standby_log,
    ):
        env.update(
            OPSGATE_BOT_TOKEN=token,
            OPSGATE_BOT_API_URL=sandbox.base_url,
            OPSGATE_CONFIG=str(ops_file),
            OPSGATE_DB=str(db),
            OPSGATE_ALERTS_TOKEN=ALERTS_TOKEN,
            OPSGATE_LOG_LEVEL="INFO",
            PYTHONPATH=str(REPO),
        )
        outcome.log = tmp / "opsgate.log"
        async with SandboxClient(sandbox.control_url) as client:
            await seed_sandbox(client, parse_ops_text(OPS))
            for chat_id, title in ((CRITICAL, "Critical"), (WARNING, "Warnings")):
                await client.add_chat(chat_id, "supergroup", title)
            await client.set_flood(CHAT_PER_MINUTE, GLOBAL_PER_SECOND)
            await client.set_faults(*faults, retry_after=1, seed=seed)
            bot = OpsgateProcess({**env, "OPSGATE_HTTP_ADDR": f"127.0.0.1:{ports[0]}"}, tmp, log)
            standby = OpsgateProcess(
                {**env, "OPSGATE_HTTP_ADDR": f"127.0.0.1:{ports[1]}"}, tmp, standby_log
            )
            survivor = bot
            try:
                await bot.start()
                await wait_ready(bot, ports[0])
                if postgres_url is None:
                    load = send_load(ports[:1], outcome, seconds)
                    if restart:
                        await asyncio.gather(load, restart_midway(bot, ports[0]))
                    else:
                        await load
                else:
                    await standby.start()
                    await asyncio.sleep(2)  # following before the load starts
                    _, outcome.takeover_s = await asyncio.gather(
                        send_load(ports, outcome, seconds),
                        fail_over_midway(bot, standby, ports[1]),
                    )
                    survivor = standby
                outcome.drain_s = await wait_drained(db, DRAIN_S)
                await client.wait_idle(quiet=1.0, timeout=30)
                outcome.alive = survivor.process is not None and survivor.process.returncode is None
                for chat_id in (CRITICAL, WARNING):
                    outcome.messages[chat_id] = await client.messages(chat_id)
                outcome.faults = await client.fault_counts()
                rows = read_db(db, "SELECT json_extract(labels, '$.instance') FROM alerts")
                outcome.stored = {str(r[0]) for r in rows}
                states = read_db(db, "SELECT state, count(*) FROM alert_outbox GROUP BY state")
                outcome.outbox = {str(s): int(str(n)) for s, n in states}
                if postgres_url is not None:
                    done = "SELECT count(*) FROM relayed_requests WHERE done_at IS NOT NULL"
                    outcome.relayed = int(str(read_db(db, done)[0][0]))
            finally:
                await bot.stop()
                await standby.stop()
    return outcome
