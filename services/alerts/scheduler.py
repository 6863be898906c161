"""When alert groups are due, what goes into the outbox: one transaction per flush.

notify   a group has firing alerts nobody was shown yet (not silenced, not inhibited)
update   only resolutions since: the group's message is edited (silenced ones too)
repeat   still firing and unacknowledged after repeat_interval
escalate an unacknowledged critical after escalate_after_s: the on-call people, directly
backup   still unacknowledged after backup_after_s: the backup role, in the group's chat
digest   a route with digest_every_s: one line per change, folded per chat on delivery
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from config.alerts import AlertRoute, QuietHours
from config.opsfile import OpsConfig
from services.alerts.engine import routes_of
from services.alerts.model import Alert, AlertGroup, AlertStatus, Silence
from services.alerts.rows import read_group, read_silences
from services.records.audit import utc_now
from services.records.storage import Connection, Storage


def is_quiet(quiet: QuietHours | None, now: datetime) -> bool:
    if quiet is None:
        return False
    clock: time = now.astimezone(ZoneInfo(quiet.timezone)).time().replace(tzinfo=None)
    if quiet.start <= quiet.end:
        return quiet.start <= clock < quiet.end
    return clock >= quiet.start or clock < quiet.end


def inhibited(alert: Alert, firing_critical_services: set[str]) -> bool:
    """A warning or info waits while its service has a critical firing."""
    service = alert.labels.get("service")
    return (
        alert.severity != "critical"
        and service is not None
        and (service in firing_critical_services)
    )


class AlertScheduler:
    def __init__(
        self,
        storage: Storage,
        ops: Callable[[], OpsConfig],
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._storage = storage
        self._ops = ops
        self._clock = clock

    async def waiting(self) -> int:
        """Groups with a change not yet written to the outbox (held by group_wait/interval)."""
        rows = list(
            await self._storage.db.execute_fetchall(
                "SELECT count(*) FROM alert_groups WHERE dirty = 1"
            )
        )
        return int(rows[0][0])

    async def flush(self) -> int:
        """Outbox rows for every group that is due; returns how many were written."""
        now = self._clock()
        options = self._ops().alerts
        written = 0
        async with self._storage.transaction() as db:
            silences = [s for s in await read_silences(db) if s.active(now)]
            critical = await _firing_critical_services(db, silences)
            due = await db.execute_fetchall(
                "SELECT id FROM alert_groups WHERE dirty = 1 AND due_at <= ? ORDER BY id",
                (now.isoformat(),),
            )
            for (group_id,) in list(due):
                group = await read_group(db, int(group_id))
                if group is not None:
                    written += await self._changes(db, group, silences, critical, now)
            # Firing alerts nobody was shown (a silence that ended, a critical that holds
            # nothing back any more): out as soon as they are visible.
            held = await db.execute_fetchall(
                "SELECT DISTINCT a.group_id FROM alerts a JOIN alert_groups g"
                " ON g.id = a.group_id WHERE a.status = 'firing' AND a.notified != 'firing'"
                " AND g.dirty = 0"
            )
            for (group_id,) in list(held):
                group = await read_group(db, int(group_id))
                if group is not None:
                    written += await self._changes(db, group, silences, critical, now)
            repeat_before = (now - timedelta(seconds=options.repeat_interval_s)).isoformat()
            stale = await db.execute_fetchall(  # sent, not just queued: then repeated
                "SELECT id FROM alert_groups g WHERE dirty = 0 AND acked_by IS NULL AND"
                " notified_at <= ? AND NOT EXISTS (SELECT 1 FROM alert_outbox o WHERE"
                " o.group_id = g.id AND o.state = 'pending')",
                (repeat_before,),
            )
            for (group_id,) in list(stale):
                group = await read_group(db, int(group_id))
                if group is not None and _shown_firing(group, silences, critical):
                    written += await self._enqueue(db, group, "repeat", group.firing, now)
            written += await self._escalations(db, silences, critical, now)
        return written

    async def _changes(
        self,
        db: Connection,
        group: AlertGroup,
        silences: list[Silence],
        critical: set[str],
        now: datetime,
    ) -> int:
        notified = await _notified(db, group.id)
        show = [a for a in group.firing if _visible(a, silences, critical)]
        new = [a for a in show if notified.get(a.fingerprint) != "firing"]
        resolved = [
            a
            for a in group.alerts
            if a.status is AlertStatus.RESOLVED and notified.get(a.fingerprint) == "firing"
        ]
        await db.execute("UPDATE alert_groups SET dirty = 0 WHERE id = ?", (group.id,))
        route = self._route(group.route)
        if route is not None and route.digest_every_s and (new or resolved):
            kind = "digest"
        elif new:
            kind = "notify"
        elif resolved:  # an edit of its message; a new one if it was only in a digest
            kind = "update" if group.message_id is not None else "notify"
        else:
            return 0
        shown = [*show, *resolved] if kind != "digest" else [*new, *resolved]
        for alert in shown:
            await db.execute(
                "UPDATE alerts SET notified = ? WHERE fingerprint = ?",
                (alert.status.value, alert.fingerprint),
            )
        return await self._enqueue(db, group, kind, shown, now)

    async def _escalations(
        self,
        db: Connection,
        silences: list[Silence],
        critical: set[str],
        now: datetime,
    ) -> int:
        options = self._ops().alerts
        written = 0
        if not options.oncall_role and not options.backup_role:
            return 0  # nobody to escalate to
        # Only groups with a critical firing: the scan stays as small as what matters.
        rows = await db.execute_fetchall(
            "SELECT id FROM alert_groups g WHERE acked_by IS NULL AND firing_since IS NOT NULL"
            " AND escalation < 2 AND EXISTS (SELECT 1 FROM alerts a WHERE a.group_id = g.id"
            " AND a.status = 'firing' AND json_extract(a.labels, '$.severity') = 'critical')"
        )
        for (group_id,) in list(rows):
            group = await read_group(db, int(group_id))
            if group is None or group.firing_since is None or group.severity != "critical":
                continue
            if not _shown_firing(group, silences, critical):
                continue
            waited = (now - group.firing_since).total_seconds()  # repeats do not reset it
            level = group.escalation
            if level == 0 and waited >= options.escalate_after_s and options.oncall_role:
                written += await self._enqueue(db, group, "escalate", group.firing, now)
                await db.execute("UPDATE alert_groups SET escalation = 1 WHERE id = ?", (group.id,))
            elif level <= 1 and waited >= options.backup_after_s and options.backup_role:
                written += await self._enqueue(db, group, "backup", group.firing, now)
                await db.execute("UPDATE alert_groups SET escalation = 2 WHERE id = ?", (group.id,))
        return written

    def _route(self, index: int) -> AlertRoute | None:
        routes = routes_of(self._ops())
        return routes[index] if 0 <= index < len(routes) else None

    async def _enqueue(
        self,
        db: Connection,
        group: AlertGroup,
        kind: str,
        alerts: tuple[Alert, ...] | list[Alert],
        now: datetime,
    ) -> int:
        route = self._route(group.route)
        silent = group.severity != "critical" and is_quiet(
            route.quiet_hours if route else None, now
        )
        await db.execute(
            "INSERT INTO alert_outbox (chat_id, group_id, kind, fingerprints, silent, state,"
            " next_at, created_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
            (
                group.chat_id,
                group.id,
                kind,
                json.dumps([a.fingerprint for a in alerts]),
                silent,
                now.isoformat(),
                now.isoformat(),
            ),
        )
        if kind in ("notify", "repeat", "digest"):
            await db.execute(
                "UPDATE alert_groups SET notified_at = ?, firing_since = COALESCE(firing_since,"
                " ?) WHERE id = ?",
                (now.isoformat(), now.isoformat(), group.id),
            )
        if not group.firing:  # all resolved: the next firing spell escalates afresh
            await db.execute(
                "UPDATE alert_groups SET firing_since = NULL, escalation = 0 WHERE id = ?",
                (group.id,),
            )
        return 1


async def _notified(db: Connection, group_id: int) -> dict[str, str]:
    rows = await db.execute_fetchall(
        "SELECT fingerprint, notified FROM alerts WHERE group_id = ?", (group_id,)
    )
    return {str(r[0]): str(r[1]) for r in rows}


async def _firing_critical_services(db: Connection, silences: list[Silence]) -> set[str]:
    if not silences:  # the common case: SQL alone answers it
        rows = await db.execute_fetchall(
            "SELECT DISTINCT json_extract(labels, '$.service') FROM alerts WHERE status ="
            " 'firing' AND json_extract(labels, '$.severity') = 'critical'"
            " AND json_extract(labels, '$.service') IS NOT NULL"
        )
        return {str(r[0]) for r in rows}
    rows = await db.execute_fetchall(
        "SELECT labels FROM alerts WHERE status = 'firing'"
        " AND json_extract(labels, '$.severity') = 'critical'"
    )
    services = set()
    for (text,) in rows:
        labels = json.loads(text)
        if labels.get("service") and not any(s.matches(labels) for s in silences):
            services.add(labels["service"])
    return services


def _visible(alert: Alert, silences: list[Silence], critical: set[str]) -> bool:
    return not any(s.matches(alert.labels) for s in silences) and not inhibited(alert, critical)


def _shown_firing(group: AlertGroup, silences: list[Silence], critical: set[str]) -> bool:
    return any(_visible(a, silences, critical) for a in group.firing)
