"""The alert outbox within Telegram's limits: a per-chat budget per sliding minute counted from
the sent rows (so a restart keeps it), folding into digests instead of dropping, 429 holds,
backoff, permanent failures, the global per-second limit, and nothing lost at the end.

Rows are made the real way (AlertEngine + AlertScheduler on a real SQLite file); Telegram is a
small recording fake, since it cannot run here."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import pytest

from config.opsfile import OpsConfig, parse_ops_text
from services.alerts.engine import AlertEngine
from services.alerts.model import AlertStatus, IncomingAlert, fingerprint
from services.alerts.outbox import MAX_PER_DIGEST, Delivery, DeliveryFailed, Outbox, RetryLater
from services.alerts.scheduler import AlertScheduler
from services.records.audit import AuditLog
from services.records.storage import Storage

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
CRITICAL, WARNING, INFO = -1001, -1002, -1003

BASE = """
[people]
1 = "alice"
[roles]
oncall = [1]
[chats.alerts]
critical = -1001
warning = -1002
info = -1003
[alerts]
group_by = ["alertname"]
group_wait_s = 0
group_interval_s = 60
chat_per_minute = 5
global_per_second = 30
escalate_after_s = 600
oncall_role = "oncall"
"""


@dataclass(frozen=True)
class Row:
    id: int
    chat_id: int
    kind: str
    fingerprints: tuple[str, ...]
    state: str
    attempts: int
    next_at: datetime
    sent_at: datetime | None
    folded_into: int | None
    error: str


class FakeTelegram:
    """Records what it was asked to deliver; can be told to raise for a chat's next tries."""

    def __init__(self) -> None:
        self.attempts: list[Delivery] = []
        self.sent: list[Delivery] = []
        self._failures: dict[int, list[Exception]] = {}

    def fail(self, chat_id: int, *errors: Exception) -> None:
        self._failures.setdefault(chat_id, []).extend(errors)

    async def deliver(self, delivery: Delivery) -> int | None:
        self.attempts.append(delivery)
        queued = self._failures.get(delivery.chat_id)
        if queued:
            raise queued.pop(0)
        self.sent.append(delivery)
        return 1000 + len(self.sent)


class World:
    def __init__(self, storage: Storage, ops_text: str) -> None:
        self.storage = storage
        self.now = T0
        self.ops: OpsConfig = parse_ops_text(ops_text)
        self.engine = AlertEngine(storage, AuditLog(storage), lambda: self.ops, self.clock)
        self.scheduler = AlertScheduler(storage, lambda: self.ops, self.clock)
        self.outbox = Outbox(storage, lambda: self.ops, self.clock)
        self.telegram = FakeTelegram()

    def clock(self) -> datetime:
        return self.now

    def at(self, seconds: float) -> None:
        self.now = T0 + timedelta(seconds=seconds)

    def restart(self) -> None:
        """A new Outbox on the same database: whatever it kept in memory is gone."""
        self.outbox = Outbox(self.storage, lambda: self.ops, self.clock)

    async def alerts(
        self,
        seconds: float,
        prefix: str,
        groups: int,
        per_group: int = 1,
        severity: str = "warning",
    ) -> set[str]:
        """`groups` new groups of `per_group` alerts each, flushed into notify rows at once."""
        self.at(seconds)
        labels = [
            {"alertname": f"{prefix}{g}", "severity": severity, "host": f"h{h}"}
            for g in range(groups)
            for h in range(per_group)
        ]
        incoming = [
            IncomingAlert(x, {}, AlertStatus.FIRING, self.now, None, "generic") for x in labels
        ]
        assert len((await self.engine.ingest(incoming)).new_firing) == len(labels)
        assert await self.scheduler.flush() == groups
        return {fingerprint(x) for x in labels}

    async def deliver(self, seconds: float) -> list[Delivery]:
        """One round of the outbox at that time; what Telegram accepted in it."""
        self.at(seconds)
        before = len(self.telegram.sent)
        sent = await self.outbox.deliver_due(self.telegram)
        accepted = self.telegram.sent[before:]
        assert sent == len(accepted)
        return accepted

    async def rows(self) -> list[Row]:
        found = await self.storage.db.execute_fetchall(
            "SELECT id, chat_id, kind, fingerprints, state, attempts, next_at, sent_at,"
            " folded_into, error FROM alert_outbox ORDER BY id"
        )
        return [
            Row(
                id=int(r[0]),
                chat_id=int(r[1]),
                kind=str(r[2]),
                fingerprints=tuple(json.loads(r[3])),
                state=str(r[4]),
                attempts=int(r[5]),
                next_at=datetime.fromisoformat(r[6]),
                sent_at=None if r[7] is None else datetime.fromisoformat(r[7]),
                folded_into=None if r[8] is None else int(r[8]),
                error=str(r[9]),
            )
            for r in found
        ]

    async def row(self, row_id: int) -> Row:
        return next(r for r in await self.rows() if r.id == row_id)


class MakeWorld(Protocol):
    def __call__(self, ops_text: str = ...) -> World: ...


@pytest.fixture
async def storage(tmp_path: Path, database: str) -> AsyncIterator[Storage]:
    async with Storage(database) as storage:
        yield storage


@pytest.fixture
def make_world(storage: Storage) -> MakeWorld:
    def make(ops_text: str = BASE) -> World:
        return World(storage, ops_text)

    return make


def variant(old: str, new: str) -> str:
    assert old in BASE  # a replacement that matched nothing would test the base file
    return BASE.replace(old, new)


def delivered(deliveries: list[Delivery]) -> Counter[str]:
    return Counter(fp for d in deliveries for fp in d.fingerprints)


async def assert_nothing_lost(world: World, expected: set[str]) -> None:
    """Every row went out, or was folded into a digest that went out and names its alerts;
    every alert reached its chat exactly once."""
    rows = await world.rows()
    by_id = {r.id: r for r in rows}
    for row in rows:
        assert row.state in ("sent", "folded"), row
        if row.state == "folded":
            assert row.folded_into is not None, row
            digest = by_id[row.folded_into]
            assert (digest.kind, digest.state, digest.chat_id) == ("digest", "sent", row.chat_id)
            assert set(row.fingerprints) <= set(digest.fingerprints)
    assert await world.outbox.pending() == 0
    assert delivered(world.telegram.sent) == Counter(dict.fromkeys(expected, 1))


# -- the per-chat budget ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "per_group",
    [1, 30],  # 30: 360 alerts, more than one digest can name
    ids=["one-alert-each", "thirty-alerts-each"],
)
async def test_a_storm_goes_out_as_digests_within_the_budget(
    make_world: MakeWorld, per_group: int
) -> None:
    world = make_world()
    expected = await world.alerts(0, "Disk", 12, per_group)
    assert [r.kind for r in await world.rows()] == ["notify"] * 12
    sent: list[tuple[float, Delivery]] = []
    for second in range(0, 400):  # one round a second, as the bot's tick does
        if second == 30:
            world.restart()  # the minute's count comes from the rows: a restart keeps it
        sent += [(second, d) for d in await world.deliver(second)]
    # 12 waiting, with 5 a minute: digests only, one a round, never more than 5 a minute.
    assert {d.kind for _, d in sent} == {"digest"}
    for start, _ in sent:
        assert sum(1 for at, _ in sent if start <= at < start + 60) <= 5
    assert all(len(d.fingerprints) <= MAX_PER_DIGEST for _, d in sent)
    assert max(delivered([d for _, d in sent]).values()) == 1  # no alert twice
    await assert_nothing_lost(world, expected)


async def test_budget_is_a_sliding_minute(make_world: MakeWorld) -> None:
    # 5 a minute: a bucket of 2 that refills 3 a minute, so no 60 s ever hold more than 5.
    world = make_world()
    expected = await world.alerts(0, "A", 2)
    assert [d.kind for d in await world.deliver(0)] == ["notify"] * 2  # quiet: one each, now
    expected |= await world.alerts(30, "B", 1)
    assert [d.kind for d in await world.deliver(30)] == ["notify"]  # a token again: on its own
    sent = []
    for at in (40, 45):
        expected |= await world.alerts(at, f"C{at}", 3)
        sent += [(at, d) for d in await world.deliver(at)]
    assert [(at, d.kind) for at, d in sent] == [(40, "digest")]  # more than the room: folded
    expected |= await world.alerts(50, "D", 2)
    assert await world.deliver(50) == []  # the bucket is empty
    times = [0.0, 0.0, 30.0, 40.0]  # when the messages so far went out
    for at in range(51, 200):
        times += [float(at) for _ in await world.deliver(at)]
    for start in times:
        assert sum(1 for at in times if start <= at < start + 60) <= 5, times
    await assert_nothing_lost(world, expected)


async def test_chats_have_budgets_of_their_own(make_world: MakeWorld) -> None:
    world = make_world()
    expected = await world.alerts(0, "W", 2)
    expected |= await world.alerts(0, "C", 2, severity="critical")
    sent = await world.deliver(0)
    assert Counter(d.chat_id for d in sent) == {WARNING: 2, CRITICAL: 2}
    assert {d.kind for d in sent} == {"notify"}  # quiet chats: as they are
    expected |= await world.alerts(1, "W2", 4)
    assert await world.deliver(1) == []  # that chat's bucket is empty
    sent = await world.deliver(21)  # a token again: 4 waiting, one digest
    assert [(d.chat_id, d.kind) for d in sent] == [(WARNING, "digest")]  # only that chat
    await assert_nothing_lost(world, expected)


# -- failures --------------------------------------------------------------------------------


async def test_retry_later_holds_that_chat_only(make_world: MakeWorld) -> None:
    world = make_world()
    expected = await world.alerts(0, "W", 2)  # first in id order: tried first
    expected |= await world.alerts(0, "C", 2, severity="critical")
    world.telegram.fail(WARNING, RetryLater(30))

    sent = await world.deliver(0)
    assert [d.chat_id for d in sent] == [CRITICAL, CRITICAL]  # the other chat is not held
    [held] = [r for r in await world.rows() if r.attempts == 1 and r.state == "pending"]
    assert held.chat_id == WARNING
    assert held.next_at == T0 + timedelta(seconds=30)
    assert "retry after 30 s" in held.error

    tries = len(world.telegram.attempts)
    expected |= await world.alerts(10, "X", 1)  # new for the held chat: it waits too
    assert await world.deliver(10) == []
    assert await world.deliver(29.9) == []
    assert len(world.telegram.attempts) == tries  # not even tried while held

    sent = await world.deliver(30)  # 3 waiting, room for 2: one digest
    assert [(d.chat_id, d.kind) for d in sent] == [(WARNING, "digest")]
    await assert_nothing_lost(world, expected)


async def test_transient_failure_backs_off_then_is_sent_once(make_world: MakeWorld) -> None:
    world = make_world()
    expected = await world.alerts(0, "W", 1)
    timeout = DeliveryFailed("Timed out", permanent=False)
    world.telegram.fail(WARNING, timeout, DeliveryFailed("Bad Gateway", permanent=False))

    assert await world.deliver(0) == []
    [row] = await world.rows()
    assert (row.state, row.attempts, row.error) == ("pending", 1, "Timed out")
    assert row.next_at == T0 + timedelta(seconds=2)
    assert await world.deliver(1.9) == []

    assert await world.deliver(2) == []
    [row] = await world.rows()
    assert (row.attempts, row.error) == (2, "Bad Gateway")
    assert row.next_at == T0 + timedelta(seconds=2 + 4)
    assert await world.deliver(5.9) == []

    [sent] = await world.deliver(6)
    assert sent.id == row.id
    [row] = await world.rows()
    assert (row.state, row.attempts, row.sent_at) == ("sent", 3, T0 + timedelta(seconds=6))
    assert await world.deliver(100) == []
    assert len(world.telegram.attempts) == 3
    await assert_nothing_lost(world, expected)


async def test_backoff_doubles_up_to_a_minute(make_world: MakeWorld) -> None:
    world = make_world()
    expected = await world.alerts(0, "W", 1)
    world.telegram.fail(WARNING, *[DeliveryFailed("5xx", permanent=False) for _ in range(7)])
    waits, at = [], 0.0
    for _ in range(7):
        assert await world.deliver(at) == []
        [row] = await world.rows()
        waits.append((row.next_at - world.now).total_seconds())
        at = (row.next_at - T0).total_seconds()
    assert waits == [2, 4, 8, 16, 32, 60, 60]
    assert len(await world.deliver(at)) == 1
    await assert_nothing_lost(world, expected)


async def test_permanent_failure_marks_the_row_failed(make_world: MakeWorld) -> None:
    world = make_world()
    await world.alerts(0, "W", 1)
    await world.alerts(0, "C", 1, severity="critical")
    world.telegram.fail(WARNING, DeliveryFailed("Bad Request: chat not found", permanent=True))

    sent = await world.deliver(0)
    assert [d.chat_id for d in sent] == [CRITICAL]
    failed = next(r for r in await world.rows() if r.chat_id == WARNING)
    assert (failed.state, failed.error) == ("failed", "Bad Request: chat not found")
    assert await world.deliver(100) == []
    assert len(world.telegram.attempts) == 2  # never tried again
    assert await world.outbox.pending() == 0


# -- the global limit ------------------------------------------------------------------------


async def test_global_per_second_limits_a_round_across_chats(make_world: MakeWorld) -> None:
    world = make_world(variant("global_per_second = 30", "global_per_second = 2"))
    expected = await world.alerts(0, "W", 2)
    expected |= await world.alerts(0, "C", 2, severity="critical")
    expected |= await world.alerts(0, "I", 2, severity="info")

    assert len(await world.deliver(0)) == 2
    assert await world.outbox.pending() == 4
    # The per-second window is kept in memory (monotonic time, not the injected clock), so
    # the later rounds run on new Outbox objects: each one's first second is fresh.
    for at in (1, 2):
        world.restart()
        assert len(await world.deliver(at)) == 2
    await assert_nothing_lost(world, expected)


# -- what folding must not lose --------------------------------------------------------------


async def test_resolution_of_an_alert_shown_in_a_digest_is_told(make_world: MakeWorld) -> None:
    world = make_world()
    await world.alerts(0, "Disk", 12)
    [digest] = await world.deliver(0)
    assert digest.kind == "digest"

    world.at(100)
    labels = {"alertname": "Disk0", "severity": "warning", "host": "h0"}
    ended = IncomingAlert(labels, {}, AlertStatus.RESOLVED, world.now, world.now, "generic")
    assert len((await world.engine.ingest([ended])).resolved) == 1
    assert await world.scheduler.flush() >= 1  # something must tell the chat it is resolved
    told = await world.deliver(200)
    assert fingerprint(labels) in delivered(told)


async def test_escalation_is_not_folded_into_a_digest(make_world: MakeWorld) -> None:
    world = make_world()
    await world.alerts(0, "ApiDown", 1, severity="critical")
    assert len(await world.deliver(0)) == 1
    await world.alerts(599, "Crit", 12, severity="critical")  # a storm in the same chat
    world.at(600)
    assert await world.scheduler.flush() == 1  # the escalation of ApiDown
    assert "escalate" in [r.kind for r in await world.rows()]
    sent = await world.deliver(600)
    assert "escalate" in [d.kind for d in sent]
