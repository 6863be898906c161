"""AlertEngine and AlertScheduler on one real SQLite file with the real AuditLog and a clock the
tests move by hand: grouping and group_wait, dedup, resolutions, routing, silences,
inhibition, repeats, escalation, quiet hours, digests, acks and their audit trail."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import pytest

from config.opsfile import OpsConfig, parse_ops_text
from services.alerts.engine import AlertEngine, IngestReport, route_for, routes_of
from services.alerts.model import AlertStatus, IncomingAlert, fingerprint, parse_matchers
from services.alerts.outbox import Delivery, Outbox
from services.alerts.scheduler import AlertScheduler
from services.records.audit import AuditLog
from services.records.storage import Storage

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # 12:00 in Kyiv (UTC+2 until late March)
CRITICAL, WARNING, INFO = -1001, -1002, -1003

BASE = """
[people]
1 = "alice"
2 = "bob"
[roles]
oncall = [1]
sre = [2]
[chats.alerts]
critical = -1001
warning = -1002
info = -1003
[alerts]
group_by = ["alertname", "service"]
group_wait_s = 5
group_interval_s = 60
repeat_interval_s = 3600
escalate_after_s = 600
backup_after_s = 1200
oncall_role = "oncall"
backup_role = "sre"
"""

API_DOWN = {"alertname": "ApiDown", "severity": "critical", "service": "web"}
LATENCY = {"alertname": "HighLatency", "severity": "warning", "service": "web"}
DISK_A = {"alertname": "DiskFull", "severity": "warning", "service": "worker", "host": "a"}
DISK_B = {**DISK_A, "host": "b"}
DISK_C = {**DISK_A, "host": "c"}


def fp(labels: Mapping[str, str]) -> str:
    return fingerprint(labels)


@dataclass(frozen=True)
class Row:
    id: int
    chat_id: int
    group_id: int | None
    kind: str
    fingerprints: tuple[str, ...]
    silent: bool
    state: str


class MessageIds:
    """A stand-in for Telegram (which cannot run here): each delivery gets the next id."""

    def __init__(self) -> None:
        self.delivered: list[Delivery] = []

    async def deliver(self, delivery: Delivery) -> int | None:
        self.delivered.append(delivery)
        return 100 + len(self.delivered)


class World:
    """One database, the engine, scheduler and outbox on it, and the clock `now`."""

    def __init__(self, storage: Storage, ops_text: str, start: datetime) -> None:
        self.storage = storage
        self.start = self.now = start
        self.ops: OpsConfig = parse_ops_text(ops_text)
        self.audit = AuditLog(storage)
        self.engine = AlertEngine(storage, self.audit, lambda: self.ops, self.clock)
        self.scheduler = AlertScheduler(storage, lambda: self.ops, self.clock)
        self.outbox = Outbox(storage, lambda: self.ops, self.clock)
        self.telegram = MessageIds()
        self._seen = 0

    def clock(self) -> datetime:
        return self.now

    def at(self, seconds: float) -> None:
        self.now = self.start + timedelta(seconds=seconds)

    async def fire(self, *labels: Mapping[str, str]) -> IngestReport:
        return await self.engine.ingest([self._alert(x, AlertStatus.FIRING) for x in labels])

    async def resolve(self, *labels: Mapping[str, str]) -> IngestReport:
        return await self.engine.ingest([self._alert(x, AlertStatus.RESOLVED) for x in labels])

    def _alert(self, labels: Mapping[str, str], status: AlertStatus) -> IncomingAlert:
        ends = self.now if status is AlertStatus.RESOLVED else None
        summary = {"summary": f"{labels['alertname']} on {labels.get('service', '-')}"}
        return IncomingAlert(dict(labels), summary, status, self.now, ends, "generic")

    async def flush(self, seconds: float) -> list[Row]:
        """Flush at that time; the outbox rows this flush wrote."""
        self.at(seconds)
        written = await self.scheduler.flush()
        new = [r for r in await self.rows() if r.id > self._seen]
        assert written == len(new)
        self._seen = max([self._seen, *(r.id for r in new)])
        return new

    async def deliver(self, seconds: float) -> list[Delivery]:
        """Work the outbox at that time, as the bot's tick does; what went out."""
        self.at(seconds)
        before = len(self.telegram.delivered)
        await self.outbox.deliver_due(self.telegram)
        # Digests the outbox folded rows into are its own rows, not the scheduler's.
        self._seen = max([self._seen, *(r.id for r in await self.rows())])
        return self.telegram.delivered[before:]

    async def rows(self) -> list[Row]:
        found = await self.storage.db.execute_fetchall(
            "SELECT id, chat_id, group_id, kind, fingerprints, silent, state FROM alert_outbox"
            " ORDER BY id"
        )
        return [
            Row(
                int(r[0]),
                int(r[1]),
                None if r[2] is None else int(r[2]),
                str(r[3]),
                tuple(json.loads(r[4])),
                bool(r[5]),
                str(r[6]),
            )
            for r in found
        ]

    async def count(self, table: str) -> int:
        rows = list(await self.storage.db.execute_fetchall(f"SELECT count(*) FROM {table}"))
        return int(rows[0][0])

    async def group_of(self, labels: Mapping[str, str]) -> int:
        [alert] = await self.engine.alerts([fp(labels)])
        return alert.group_id


class MakeWorld(Protocol):
    def __call__(self, ops_text: str = ..., start: datetime = ...) -> World: ...


@pytest.fixture
async def storage(tmp_path: Path, database: str) -> AsyncIterator[Storage]:
    async with Storage(database) as storage:
        yield storage


@pytest.fixture
def make_world(storage: Storage) -> MakeWorld:
    def make(ops_text: str = BASE, start: datetime = T0) -> World:
        return World(storage, ops_text, start)

    return make


def variant(old: str, new: str) -> str:
    # A replacement that matched nothing would quietly test the base file instead.
    assert old in BASE
    return BASE.replace(old, new)


def kinds(rows: list[Row]) -> list[tuple[str, int, set[str]]]:
    return [(r.kind, r.chat_id, set(r.fingerprints)) for r in rows]


# -- grouping, dedup, resolution ---------------------------------------------------------------


async def test_new_firing_alert_notifies_after_group_wait(make_world: MakeWorld) -> None:
    world = make_world()
    report = await world.fire(API_DOWN)
    assert [a.fingerprint for a in report.new_firing] == [fp(API_DOWN)]
    assert (report.resolved, report.unchanged, report.unrouted) == ((), 0, 0)

    assert await world.flush(4.9) == []  # still waiting for more of the group
    [row] = await world.flush(5)
    assert (row.kind, row.chat_id, row.fingerprints) == ("notify", CRITICAL, (fp(API_DOWN),))
    assert (row.silent, row.state) == (False, "pending")
    assert row.group_id == await world.group_of(API_DOWN)
    assert await world.flush(30) == []  # a flush writes a change once


async def test_same_alert_again_changes_nothing(make_world: MakeWorld) -> None:
    world = make_world()
    await world.fire(DISK_A)
    world.at(2)
    again = await world.fire(DISK_A)
    assert (again.new_firing, again.unchanged) == ((), 1)
    assert kinds(await world.flush(5)) == [("notify", WARNING, {fp(DISK_A)})]
    world.at(40)
    assert (await world.fire(DISK_A)).unchanged == 1
    assert await world.flush(200) == []
    assert await world.count("alerts") == 1


async def test_alerts_sharing_group_labels_share_one_message(make_world: MakeWorld) -> None:
    world = make_world()
    await world.fire(DISK_A, LATENCY)  # LATENCY: another alertname, so another group
    world.at(3)  # within group_wait of the first
    await world.fire(DISK_B)
    rows = await world.flush(5)
    assert sorted(kinds(rows), key=lambda k: len(k[2])) == [
        ("notify", WARNING, {fp(LATENCY)}),
        ("notify", WARNING, {fp(DISK_A), fp(DISK_B)}),
    ]
    assert rows[0].group_id != rows[1].group_id

    # A newcomer to a group already shown waits for group_interval since that message.
    world.at(10)
    await world.fire(DISK_C)
    assert await world.flush(64.9) == []
    assert kinds(await world.flush(65)) == [
        ("notify", WARNING, {fp(DISK_A), fp(DISK_B), fp(DISK_C)})
    ]


async def test_resolution_updates_the_message_after_group_interval(
    make_world: MakeWorld,
) -> None:
    world = make_world()
    await world.fire(DISK_A, DISK_B)
    assert len(await world.flush(5)) == 1
    assert len(await world.deliver(5)) == 1  # the message exists now: it has an id to edit

    world.at(20)
    report = await world.resolve(DISK_A)
    assert [a.fingerprint for a in report.resolved] == [fp(DISK_A)]
    assert await world.flush(64.9) == []  # group_interval since the notify at 5 s
    [update] = await world.flush(65)
    assert update.kind == "update" and update.chat_id == WARNING
    assert fp(DISK_A) in update.fingerprints
    assert update.group_id == await world.group_of(DISK_A)

    # Once group_interval has passed, the next resolution is due at once.
    world.at(500)
    await world.resolve(DISK_B)
    assert kinds(await world.flush(500)) == [("update", WARNING, {fp(DISK_B)})]
    assert await world.flush(5000) == []  # resolved: no repeat, no escalation


async def test_resolution_never_seen_firing_tells_nobody(make_world: MakeWorld) -> None:
    world = make_world()
    report = await world.resolve(API_DOWN)
    assert (report.new_firing, report.resolved, report.unchanged) == ((), (), 1)
    assert await world.flush(5) == []
    assert await world.flush(4000) == []
    assert await world.engine.firing_groups() == []


async def test_alert_firing_again_after_its_resolution_notifies_again(
    make_world: MakeWorld,
) -> None:
    world = make_world()
    await world.fire(DISK_A)
    await world.flush(5)
    await world.deliver(5)
    world.at(100)
    await world.resolve(DISK_A)
    assert [r.kind for r in await world.flush(100)] == ["update"]
    world.at(300)
    assert len((await world.fire(DISK_A)).new_firing) == 1
    assert kinds(await world.flush(300)) == [("notify", WARNING, {fp(DISK_A)})]


# -- routing ---------------------------------------------------------------------------------


async def test_routes_by_severity_from_chats_alerts(make_world: MakeWorld) -> None:
    world = make_world()
    # Another service than API_DOWN's, so that its critical holds nothing back here.
    info = {"alertname": "CertSoon", "severity": "info", "service": "api"}
    untagged = {"alertname": "NoSeverity", "service": "api"}  # no severity: a warning
    await world.fire(API_DOWN, DISK_A, info, untagged)
    rows = await world.flush(5)
    by_fp = {r.fingerprints: r.chat_id for r in rows}
    assert by_fp == {
        (fp(API_DOWN),): CRITICAL,
        (fp(DISK_A),): WARNING,
        (fp(info),): INFO,
        (fp(untagged),): WARNING,
    }


async def test_alert_without_any_chat_is_counted_and_not_stored(make_world: MakeWorld) -> None:
    # Only a critical chat, no default, no warning chat, no deploys chat: nowhere to show it.
    world = make_world(variant("warning = -1002\ninfo = -1003\n", ""))
    report = await world.fire(API_DOWN, DISK_A, {"alertname": "Untagged"})
    assert [a.fingerprint for a in report.new_firing] == [fp(API_DOWN)]
    assert report.unrouted == 2
    assert await world.count("alerts") == 1
    assert kinds(await world.flush(5)) == [("notify", CRITICAL, {fp(API_DOWN)})]


async def test_an_alert_no_route_matches_goes_to_the_default_chat(make_world: MakeWorld) -> None:
    text = variant("info = -1003\n", "").replace("[alerts]\n", "[alerts]\ndefault_chat = -1009\n")
    world = make_world(text)
    odd = {"alertname": "Odd", "severity": "error", "service": "api"}  # no route says "error"
    report = await world.fire(odd, API_DOWN)
    assert (len(report.new_firing), report.unrouted) == (2, 0)
    rows = await world.flush(5)
    assert {r.fingerprints[0]: r.chat_id for r in rows} == {fp(odd): -1009, fp(API_DOWN): CRITICAL}


def test_the_default_chat_is_the_warning_chat_else_the_deploys_chat() -> None:
    assert routes_of(parse_ops_text(BASE))[-1].chat == WARNING
    no_warning = variant("warning = -1002\n", "").replace(
        "[chats.alerts]", "[chats]\ndeploys = -1005\n[chats.alerts]"
    )
    assert routes_of(parse_ops_text(no_warning))[-1].chat == -1005


ROUTES = (
    BASE
    + """
[[alerts.routes]]
match = { severity = "critical", service = "db" }
chat = -2001
[[alerts.routes]]
match = { severity = "critical" }
chat = -2002
[[alerts.routes]]
match = { team = "payments" }
chat = -2003
"""
)


async def test_first_matching_route_wins(make_world: MakeWorld) -> None:
    world = make_world(ROUTES)
    db_down = {"alertname": "DbDown", "severity": "critical", "service": "db"}
    payments = {"alertname": "Refunds", "severity": "warning", "team": "payments"}
    payments_critical = {**payments, "severity": "critical"}  # route 2 comes first
    other = {"alertname": "Other", "severity": "warning", "team": "web"}
    report = await world.fire(db_down, API_DOWN, payments, payments_critical, other)
    # [chats.alerts] is not used once routes are configured, except its warning chat as
    # the default route for what no route matches.
    assert report.unrouted == 0
    rows = await world.flush(5)
    assert {r.fingerprints[0]: r.chat_id for r in rows} == {
        fp(db_down): -2001,
        fp(API_DOWN): -2002,
        fp(payments_critical): -2002,
        fp(payments): -2003,
        fp(other): WARNING,
    }
    routes = routes_of(world.ops)
    assert route_for(routes, dict(db_down)) == 0
    assert route_for(routes, {"alertname": "X", "team": "payments"}) == 2
    assert route_for(routes, dict(other)) == 3  # the default route, last


def test_routes_from_chats_alerts_are_one_per_configured_severity() -> None:
    ops = parse_ops_text(variant("info = -1003\n", ""))
    assert [(dict(r.match), r.chat) for r in routes_of(ops)] == [
        ({"severity": "critical"}, CRITICAL),
        ({"severity": "warning"}, WARNING),
        ({}, WARNING),  # the default route: whatever matched nothing
    ]


# -- silences --------------------------------------------------------------------------------


async def test_silenced_alert_is_not_notified(make_world: MakeWorld) -> None:
    world = make_world()
    silence = await world.engine.silence(
        parse_matchers("alertname=DiskFull host=~a|b"), timedelta(hours=2), "2", "swap full"
    )
    assert [s.id for s in await world.engine.silences()] == [silence.id]
    report = await world.fire(DISK_A, DISK_C)
    assert len(report.new_firing) == 2  # stored and listed, only not notified
    [row] = await world.flush(5)
    assert row.fingerprints == (fp(DISK_C),)  # host c is not matched
    [group] = await world.engine.firing_groups()
    assert {a.fingerprint for a in group.firing} == {fp(DISK_A), fp(DISK_C)}
    assert await world.flush(1000) == []


@pytest.mark.parametrize("ends", ["unsilence", "runs-out"])
async def test_alert_held_by_a_silence_is_notified_once_the_silence_ends(
    make_world: MakeWorld, ends: str
) -> None:
    world = make_world()
    silence = await world.engine.silence(
        parse_matchers("alertname=DiskFull"), timedelta(seconds=100), "2"
    )
    await world.fire(DISK_A)
    assert await world.flush(5) == []
    world.at(100 if ends == "runs-out" else 50)
    if ends == "unsilence":
        assert await world.engine.unsilence(silence.id, "2") is not None
    assert await world.engine.silences() == []
    # "its alerts notify again": still firing, so within a group_interval it is shown.
    assert kinds(await world.flush(160)) == [("notify", WARNING, {fp(DISK_A)})]


async def test_alert_firing_after_unsilence_is_notified(make_world: MakeWorld) -> None:
    world = make_world()
    silence = await world.engine.silence(
        parse_matchers("alertname=DiskFull"), timedelta(hours=2), "2"
    )
    await world.fire(DISK_A)
    assert await world.flush(5) == []
    world.at(100)
    await world.engine.unsilence(silence.id, "2")
    await world.fire(DISK_B)  # a change to the group: the held alert comes along
    rows = await world.flush(160)
    assert kinds(rows) == [("notify", WARNING, {fp(DISK_A), fp(DISK_B)})]


async def test_silenced_alert_that_resolves_updates_the_message_that_showed_it(
    make_world: MakeWorld,
) -> None:
    world = make_world()
    await world.fire(DISK_A)
    assert [r.kind for r in await world.flush(5)] == ["notify"]
    [sent] = await world.deliver(5)
    group = await world.engine.group(await world.group_of(DISK_A))
    assert group is not None and group.message_id == 101  # as the outbox recorded it

    world.at(30)
    await world.engine.silence(parse_matchers("alertname=DiskFull"), timedelta(hours=1), "2")
    world.at(50)
    await world.fire(DISK_B)  # never shown: silenced from the start
    assert await world.flush(65) == []
    world.at(100)
    await world.resolve(DISK_A, DISK_B)
    [update] = await world.flush(100)
    assert update.kind == "update" and update.group_id == sent.group_id
    assert fp(DISK_A) in update.fingerprints
    assert fp(DISK_B) not in update.fingerprints  # nobody was shown it firing


# -- inhibition ------------------------------------------------------------------------------


async def test_warning_waits_while_a_critical_fires_for_its_service(
    make_world: MakeWorld,
) -> None:
    world = make_world()
    await world.fire(API_DOWN)
    world.at(1)
    await world.fire(LATENCY, DISK_A)  # LATENCY: service web; DISK_A: worker, not held
    rows = await world.flush(6)
    assert sorted(kinds(rows), key=lambda k: k[1]) == [
        ("notify", WARNING, {fp(DISK_A)}),
        ("notify", CRITICAL, {fp(API_DOWN)}),
    ]
    await world.deliver(6)
    assert await world.flush(30) == []

    world.at(40)
    await world.resolve(API_DOWN)
    # The held warning goes out at once; the critical's edit waits for group_interval.
    assert kinds(await world.flush(40)) == [("notify", WARNING, {fp(LATENCY)})]
    assert kinds(await world.flush(66)) == [("update", CRITICAL, {fp(API_DOWN)})]


async def test_warning_held_by_a_critical_goes_out_once_the_critical_is_silenced(
    make_world: MakeWorld,
) -> None:
    world = make_world()
    await world.fire(API_DOWN, LATENCY)
    assert kinds(await world.flush(5)) == [("notify", CRITICAL, {fp(API_DOWN)})]
    world.at(30)
    await world.engine.silence(parse_matchers("alertname=ApiDown"), timedelta(hours=1), "2")
    # A silenced critical inhibits nothing (see below), so the warning is due to be shown.
    assert kinds(await world.flush(90)) == [("notify", WARNING, {fp(LATENCY)})]


async def test_a_silenced_critical_inhibits_nothing(make_world: MakeWorld) -> None:
    world = make_world()
    await world.engine.silence(parse_matchers("alertname=ApiDown"), timedelta(hours=1), "2")
    await world.fire(API_DOWN, LATENCY)
    assert kinds(await world.flush(5)) == [("notify", WARNING, {fp(LATENCY)})]


# -- repeat and escalation -------------------------------------------------------------------


async def test_unacked_group_repeats_after_repeat_interval(make_world: MakeWorld) -> None:
    world = make_world()
    await world.fire(DISK_A, LATENCY)
    assert len(await world.flush(5)) == 2
    await world.deliver(5)
    acked = await world.engine.ack(await world.group_of(LATENCY), "1")
    assert acked is not None and acked.acked_by == "1"

    assert await world.flush(3604.9) == []
    assert kinds(await world.flush(3605)) == [("repeat", WARNING, {fp(DISK_A)})]
    assert await world.flush(7205) == []  # the first repeat has not gone out yet: no second
    await world.deliver(7205)
    assert await world.flush(7300) == []
    assert kinds(await world.flush(10805)) == [("repeat", WARNING, {fp(DISK_A)})]

    await world.engine.ack(await world.group_of(DISK_A), "2")
    assert await world.flush(20000) == []


async def test_unacked_critical_escalates_then_calls_the_backup(make_world: MakeWorld) -> None:
    world = make_world()
    await world.fire(API_DOWN, DISK_A)
    assert len(await world.flush(5)) == 2
    assert await world.flush(604.9) == []
    assert kinds(await world.flush(605)) == [("escalate", CRITICAL, {fp(API_DOWN)})]
    assert await world.flush(1204.9) == []
    assert kinds(await world.flush(1205)) == [("backup", CRITICAL, {fp(API_DOWN)})]
    assert await world.flush(3000) == []  # each step once; the warning never escalates


async def test_acked_critical_does_not_escalate(make_world: MakeWorld) -> None:
    world = make_world()
    await world.fire(API_DOWN)
    await world.flush(5)
    world.at(300)
    await world.engine.ack(await world.group_of(API_DOWN), "1")
    assert await world.flush(605) == []
    assert await world.flush(1205) == []


async def test_ack_between_escalation_and_backup_stops_the_backup(
    make_world: MakeWorld,
) -> None:
    world = make_world()
    await world.fire(API_DOWN)
    await world.flush(5)
    assert [r.kind for r in await world.flush(605)] == ["escalate"]
    world.at(700)
    await world.engine.ack(await world.group_of(API_DOWN), "1")
    assert await world.flush(1205) == []


async def test_escalation_needs_its_roles(make_world: MakeWorld) -> None:
    no_oncall = make_world(variant('oncall_role = "oncall"\n', ""))
    await no_oncall.fire(API_DOWN)
    await no_oncall.flush(5)
    assert await no_oncall.flush(605) == []  # nobody to DM: straight to the backup at its time
    assert [r.kind for r in await no_oncall.flush(1205)] == ["backup"]


async def test_no_escalation_without_either_role(make_world: MakeWorld) -> None:
    text = variant('oncall_role = "oncall"\nbackup_role = "sre"\n', "")
    world = make_world(text)
    await world.fire(API_DOWN)
    await world.flush(5)
    assert await world.flush(5000) == []


async def test_repeats_do_not_postpone_escalation(make_world: MakeWorld) -> None:
    world = make_world(variant("repeat_interval_s = 3600", "repeat_interval_s = 300"))
    await world.fire(API_DOWN)
    await world.flush(5)
    await world.deliver(5)
    assert [r.kind for r in await world.flush(305)] == ["repeat"]
    await world.deliver(305)
    found = [r.kind for r in await world.flush(605)]
    assert "escalate" in found


# -- quiet hours and digests -----------------------------------------------------------------

QUIET = (
    BASE
    + """
[[alerts.routes]]
chat = -2001
quiet_hours = { start = 22:00:00, end = 08:00:00, timezone = "Europe/Kyiv" }
"""
)


@pytest.mark.parametrize(
    ("utc", "quiet"),
    [
        (datetime(2026, 3, 2, 21, 0, tzinfo=UTC), True),  # 23:00 in Kyiv (21:00 UTC)
        (datetime(2026, 3, 3, 5, 30, tzinfo=UTC), True),  # 07:30 in Kyiv
        (datetime(2026, 3, 3, 6, 30, tzinfo=UTC), False),  # 08:30 in Kyiv, quiet in UTC
        (datetime(2026, 3, 2, 19, 30, tzinfo=UTC), False),  # 21:30 in Kyiv
    ],
    ids=["late-evening", "early-morning", "after-end", "before-start"],
)
async def test_quiet_hours_make_warnings_silent_never_criticals(
    make_world: MakeWorld, utc: datetime, quiet: bool
) -> None:
    world = make_world(QUIET, start=utc - timedelta(seconds=5))
    await world.fire(API_DOWN, DISK_A)
    rows = await world.flush(5)
    assert {r.fingerprints[0]: r.silent for r in rows} == {
        fp(API_DOWN): False,
        fp(DISK_A): quiet,
    }
    assert {r.chat_id for r in rows} == {-2001}


DIGEST = (
    BASE
    + """
[[alerts.routes]]
match = { severity = "info" }
chat = -2003
digest_every_s = 600
[[alerts.routes]]
chat = -2004
"""
)


async def test_digest_route_writes_digest_rows(make_world: MakeWorld) -> None:
    world = make_world(DIGEST)
    cert = {"alertname": "CertSoon", "severity": "info", "service": "web"}
    backup = {"alertname": "BackupLate", "severity": "info", "service": "db"}
    await world.fire(cert)
    world.at(100)
    await world.fire(backup, DISK_A)
    assert kinds(await world.flush(105)) == [("notify", -2004, {fp(DISK_A)})]
    await world.deliver(105)
    assert await world.flush(599) == []
    assert kinds(await world.flush(600)) == [("digest", -2003, {fp(cert)})]
    assert kinds(await world.flush(700)) == [("digest", -2003, {fp(backup)})]

    # Two digest rows for one chat go out as one message naming both.
    [message] = await world.deliver(700)
    assert (message.kind, message.chat_id) == ("digest", -2003)
    assert set(message.fingerprints) == {fp(cert), fp(backup)}

    world.at(800)
    await world.resolve(cert)
    assert await world.flush(1199) == []  # digest_every_s since the last digest for the group
    assert kinds(await world.flush(1200)) == [("digest", -2003, {fp(cert)})]


# -- people ----------------------------------------------------------------------------------


async def test_ack_records_who_and_when_and_is_audited(make_world: MakeWorld) -> None:
    world = make_world()
    await world.fire(API_DOWN)
    await world.flush(5)
    group_id = await world.group_of(API_DOWN)
    world.at(42)
    acked = await world.engine.ack(group_id, "1")
    assert acked is not None
    assert (acked.acked_by, acked.acked_at) == ("1", T0 + timedelta(seconds=42))

    world.at(50)
    again = await world.engine.ack(group_id, "2")  # the first one to press keeps it
    assert again is not None and (again.acked_by, again.acked_at) == ("1", acked.acked_at)
    [event] = await world.audit.events(kind="alert.acked")
    assert (event.actor, event.subject) == ("1", acked.key)
    assert event.data == {"group": group_id, "labels": {"alertname": "ApiDown", "service": "web"}}

    assert await world.engine.ack(group_id + 100, "1") is None


async def test_ack_of_a_resolved_group_is_refused(make_world: MakeWorld) -> None:
    world = make_world()
    await world.fire(API_DOWN)
    world.at(10)
    await world.resolve(API_DOWN)
    assert await world.engine.ack(await world.group_of(API_DOWN), "1") is None
    assert await world.audit.events(kind="alert.acked") == []


async def test_firing_again_needs_a_new_ack(make_world: MakeWorld) -> None:
    world = make_world()
    await world.fire(API_DOWN)
    group_id = await world.group_of(API_DOWN)
    await world.engine.ack(group_id, "1")
    world.at(10)
    await world.resolve(API_DOWN)
    world.at(20)
    await world.fire(API_DOWN)
    group = await world.engine.group(group_id)
    assert group is not None and (group.acked_by, group.acked_at, group.escalation) == (
        None,
        None,
        0,
    )


async def test_silence_and_unsilence_are_audited(make_world: MakeWorld) -> None:
    world = make_world()
    silence = await world.engine.silence(
        parse_matchers("alertname=DiskFull service=~api|worker"),
        timedelta(hours=2),
        "2",
        "disk swap",
    )
    assert (silence.created_by, silence.comment, silence.ended_by) == ("2", "disk swap", None)
    assert (silence.starts_at, silence.ends_at) == (T0, T0 + timedelta(hours=2))
    [made] = await world.audit.events(kind="alert.silenced")
    assert made.actor == "2"
    assert made.data == {
        "silence": silence.id,
        "matchers": ["alertname=DiskFull", "service=~api|worker"],
        "until": (T0 + timedelta(hours=2)).isoformat(),
    }

    world.at(60)
    ended = await world.engine.unsilence(silence.id, "1")
    assert ended is not None and ended.id == silence.id
    [gone] = await world.audit.events(kind="alert.unsilenced")
    assert (gone.actor, gone.data) == ("1", {"silence": silence.id})
    assert await world.engine.silences() == []

    # Ending it again, or one that does not exist, changes nothing.
    assert await world.engine.unsilence(silence.id, "1") is None
    assert await world.engine.unsilence(silence.id + 1, "1") is None
    assert len(await world.audit.events(kind="alert.unsilenced")) == 1


async def test_silence_runs_out_on_its_own(make_world: MakeWorld) -> None:
    world = make_world()
    silence = await world.engine.silence(
        parse_matchers("alertname=DiskFull"), timedelta(minutes=10), "2"
    )
    world.at(599)
    assert [s.id for s in await world.engine.silences()] == [silence.id]
    world.at(600)
    assert await world.engine.silences() == []
    assert await world.engine.unsilence(silence.id, "2") is None  # nothing left to end
