"""The alert engine: alerts stored by fingerprint, grouped and routed, silenced, inhibited,
and turned into outbox rows when a group is due.

    ingest   new firing alerts and resolutions (a repeat of what is known changes nothing)
             mark their group dirty: due after group_wait (a new group) or group_interval
    flush    each due group: new firing alerts -> a new message ("notify"); only
             resolutions -> an edit of the group's message ("update"); a group still firing
             and unacknowledged after repeat_interval -> "repeat"; an unacknowledged critical
             -> "escalate" (the on-call person, directly) then "backup" (the backup role)
    silences alerts matching an active silence are not notified; a silenced alert that
             resolves still updates a message that showed it
    inhibit  a warning or info for a service with a firing critical waits for that critical

Routes come from [alerts.routes], else from [chats.alerts] by severity. Everything that
changes is written in one transaction with its outbox rows, before the sender is answered.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from config.alerts import AlertRoute
from config.opsfile import OpsConfig
from services.alerts.model import (
    Alert,
    AlertGroup,
    AlertStatus,
    IncomingAlert,
    Matcher,
    Silence,
    severity_of,
)
from services.alerts.rows import read_alerts, read_group, read_silences
from services.records.audit import AuditLog, utc_now
from services.records.storage import Connection, Storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestReport:
    new_firing: tuple[IncomingAlert, ...]
    resolved: tuple[IncomingAlert, ...]
    unchanged: int
    unrouted: int


def routes_of(ops: OpsConfig) -> list[AlertRoute]:
    """The configured routes, or one per severity from [chats.alerts]; then the default
    route that takes whatever no other matched (an unknown severity, a missing label), so
    an accepted alert is always stored and shown somewhere."""
    chats = ops.chats.alerts
    if ops.alerts.routes:
        routes = list(ops.alerts.routes)
    else:
        by_severity = (
            ("critical", chats.critical),
            ("warning", chats.warning),
            ("info", chats.info),
        )
        routes = [
            AlertRoute(match={"severity": severity}, chat=chat)
            for severity, chat in by_severity
            if chat is not None
        ]
    default = default_chat(ops)
    if default is not None:
        routes.append(AlertRoute(match={}, chat=default))
    return routes


def routing_warnings(ops: OpsConfig) -> list[str]:
    """Severities opsgate's own rules raise that no route names: they reach only the default
    chat (or nowhere without one). For check-config; not errors, the file still loads."""
    routes = routes_of(ops)
    default = len(routes) - 1 if default_chat(ops) is not None else None
    warnings = []
    for index, rule in enumerate(ops.alerts.rules):
        labels = {"alertname": rule.name, "severity": rule.severity}
        route = route_for(routes, labels)
        if route is None:
            where = "no chat at all: set [alerts] default_chat or [chats.alerts]"
        elif route == default:
            where = f"only the default chat {routes[route].chat}"
        else:
            continue
        warnings.append(
            f"alerts.rules[{index}].severity: no route for {rule.severity!r}; it reaches {where}"
        )
    return warnings


def default_chat(ops: OpsConfig) -> int | None:
    """Where unmatched alerts go: [alerts] default_chat, else the warning chat, else deploys."""
    return ops.alerts.default_chat or ops.chats.alerts.warning or ops.chats.deploys


def route_for(routes: Sequence[AlertRoute], labels: dict[str, str]) -> int | None:
    labels = {"severity": severity_of(labels), **labels}
    for index, route in enumerate(routes):
        if all(labels.get(k) == v for k, v in route.match.items()):
            return index
    return None


class AlertEngine:
    def __init__(
        self,
        storage: Storage,
        audit: AuditLog,
        ops: Callable[[], OpsConfig],
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._storage = storage
        self._audit = audit
        self._ops = ops
        self._clock = clock

    # -- intake ----------------------------------------------------------------------------

    async def ingest(self, incoming: Sequence[IncomingAlert]) -> IngestReport:
        ops = self._ops()
        options, routes = ops.alerts, routes_of(ops)
        now = self._clock()
        new: list[IncomingAlert] = []
        resolved: list[IncomingAlert] = []
        unchanged = unrouted = 0
        async with self._storage.transaction() as db:
            for alert in incoming:
                labels = dict(alert.labels)
                route = route_for(routes, labels)
                if route is None:  # no chat at all for it (no default either): said, not hidden
                    log.error("alert %s has no chat to go to: set [alerts] default_chat", labels)
                    unrouted += 1
                    continue
                group_labels = {k: labels[k] for k in options.group_by if k in labels}
                group_id, wait = await self._group(db, route, routes[route].chat, group_labels)
                if alert.source == "alertmanager":
                    wait = 0.0  # Alertmanager grouped and waited already: not held twice
                changed = await self._upsert(db, alert, group_id, now)
                if changed is None:
                    unchanged += 1
                    continue
                (new if changed is AlertStatus.FIRING else resolved).append(alert)
                await self._mark_due(db, group_id, now, wait)
                if changed is AlertStatus.RESOLVED and severity_of(labels) == "critical":
                    await self._wake_inhibited(db, labels.get("service"), now)
        return IngestReport(tuple(new), tuple(resolved), unchanged, unrouted)

    async def _group(
        self, db: Connection, route: int, chat_id: int, labels: dict[str, str]
    ) -> tuple[int, float]:
        """The group's id, and how long a change to it waits (group_wait when it is new)."""
        key = f"{route}:{json.dumps(sorted(labels.items()))}"
        rows = list(
            await db.execute_fetchall(
                "SELECT id, notified_at FROM alert_groups WHERE key = ?", (key,)
            )
        )
        options = self._ops().alerts
        found = self._route(route)
        digest = found.digest_every_s if found is not None else None
        if rows:
            notified = rows[0][1] is not None
            wait = digest or (options.group_interval_s if notified else options.group_wait_s)
            return int(rows[0][0]), wait
        cursor = await db.execute(
            "INSERT INTO alert_groups (key, labels, chat_id, route) VALUES (?, ?, ?, ?)",
            (key, json.dumps(labels), chat_id, route),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid, digest or options.group_wait_s

    def _route(self, index: int) -> AlertRoute | None:
        routes = routes_of(self._ops())
        return routes[index] if 0 <= index < len(routes) else None

    async def _upsert(
        self, db: Connection, alert: IncomingAlert, group_id: int, now: datetime
    ) -> AlertStatus | None:
        """Store the alert; returns its new status when it changed, None for a repeat."""
        fp = alert.fingerprint
        rows = list(
            await db.execute_fetchall("SELECT status FROM alerts WHERE fingerprint = ?", (fp,))
        )
        ends = alert.ends_at.isoformat() if alert.ends_at else None
        if not rows:
            await db.execute(
                "INSERT INTO alerts (fingerprint, group_id, labels, annotations, source, status,"
                " starts_at, ends_at, first_seen, last_seen) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    fp,
                    group_id,
                    json.dumps(dict(alert.labels)),
                    json.dumps(dict(alert.annotations)),
                    alert.source,
                    alert.status.value,
                    alert.starts_at.isoformat(),
                    ends,
                    now.isoformat(),
                    now.isoformat(),
                ),
            )
            # A resolution for an alert never seen firing tells nobody anything new.
            return alert.status if alert.status is AlertStatus.FIRING else None
        if rows[0][0] == alert.status.value:
            await db.execute(
                "UPDATE alerts SET last_seen = ?, annotations = ? WHERE fingerprint = ?",
                (now.isoformat(), json.dumps(dict(alert.annotations)), fp),
            )
            return None
        await db.execute(
            "UPDATE alerts SET status = ?, ends_at = ?, last_seen = ?, annotations = ?,"
            " starts_at = CASE WHEN ? = 'firing' THEN ? ELSE starts_at END WHERE fingerprint = ?",
            (
                alert.status.value,
                ends,
                now.isoformat(),
                json.dumps(dict(alert.annotations)),
                alert.status.value,
                alert.starts_at.isoformat(),
                fp,
            ),
        )
        if alert.status is AlertStatus.FIRING:  # it fired again: a new ack is needed
            await db.execute(
                "UPDATE alert_groups SET acked_by = NULL, acked_at = NULL, escalation = 0,"
                " firing_since = NULL WHERE id = ?",
                (group_id,),
            )
        return alert.status

    async def _mark_due(self, db: Connection, group_id: int, now: datetime, wait: float) -> None:
        rows = list(
            await db.execute_fetchall(
                "SELECT dirty, due_at, notified_at FROM alert_groups WHERE id = ?", (group_id,)
            )
        )
        dirty, _, notified_at = rows[0]
        if dirty:
            return  # already due at its own time: later changes ride along
        base = datetime.fromisoformat(notified_at) if notified_at else now
        due = (
            max(now, base + timedelta(seconds=wait))
            if notified_at
            else now + timedelta(seconds=wait)
        )
        await db.execute(
            "UPDATE alert_groups SET dirty = 1, due_at = ? WHERE id = ?",
            (due.isoformat(), group_id),
        )

    async def _wake_inhibited(self, db: Connection, service: str | None, now: datetime) -> None:
        """A critical resolved: warnings it held for the same service may go out now."""
        if not service:
            return
        await db.execute(
            "UPDATE alert_groups SET dirty = 1, due_at = ? WHERE id IN (SELECT group_id FROM"
            " alerts WHERE status = 'firing' AND json_extract(labels, '$.service') = ?"
            " AND notified = '')",
            (now.isoformat(), service),
        )

    # -- reading ---------------------------------------------------------------------------

    async def group(self, group_id: int) -> AlertGroup | None:
        return await read_group(self._storage.db, group_id)

    async def firing_groups(self) -> list[AlertGroup]:
        rows = await self._storage.db.execute_fetchall(
            "SELECT DISTINCT group_id FROM alerts WHERE status = 'firing' ORDER BY group_id"
        )
        groups = [await read_group(self._storage.db, int(r[0])) for r in rows]
        return [g for g in groups if g is not None]

    async def silences(self) -> list[Silence]:
        now = self._clock()
        return [s for s in await read_silences(self._storage.db) if s.active(now)]

    async def alerts(self, fingerprints: Sequence[str]) -> list[Alert]:
        """The alerts an outbox row names, in its order."""
        return await read_alerts(self._storage.db, fingerprints)

    # -- people ----------------------------------------------------------------------------

    async def ack(self, group_id: int, user_id: str) -> AlertGroup | None:
        """Someone is on it: recorded, stops escalation; None for an unknown group."""
        async with self._storage.transaction() as db:
            group = await read_group(db, group_id)
            if group is None or not group.firing:
                return None
            if group.acked_by is None:
                await db.execute(
                    "UPDATE alert_groups SET acked_by = ?, acked_at = ? WHERE id = ?",
                    (user_id, self._clock().isoformat(), group_id),
                )
                await self._audit.record(
                    "alert.acked",
                    user_id,
                    group.key,
                    {"group": group_id, "labels": dict(group.labels)},
                )
            return await read_group(db, group_id)

    async def silence(
        self, matchers: Sequence[Matcher], duration: timedelta, user_id: str, comment: str = ""
    ) -> Silence:
        now = self._clock()
        text = json.dumps([[m.name, m.value, m.regex] for m in matchers])
        async with self._storage.transaction() as db:
            cursor = await db.execute(
                "INSERT INTO silences (matchers, starts_at, ends_at, created_by, comment)"
                " VALUES (?, ?, ?, ?, ?)",
                (text, now.isoformat(), (now + duration).isoformat(), user_id, comment[:200]),
            )
            assert cursor.lastrowid is not None
            silence_id = cursor.lastrowid
            data = {"silence": silence_id, "matchers": [str(m) for m in matchers]}
            data["until"] = (now + duration).isoformat()
            await self._audit.record("alert.silenced", user_id, "", data)
        return next(s for s in await read_silences(self._storage.db) if s.id == silence_id)

    async def unsilence(self, silence_id: int, user_id: str) -> Silence | None:
        async with self._storage.transaction() as db:
            found = [s for s in await read_silences(db) if s.id == silence_id]
            if not found or not found[0].active(self._clock()):
                return None
            await db.execute(
                "UPDATE silences SET ended_by = ?, ends_at = ? WHERE id = ?",
                (user_id, self._clock().isoformat(), silence_id),
            )
            await self._audit.record("alert.unsilenced", user_id, "", {"silence": silence_id})
        return found[0]
