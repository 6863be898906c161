"""Reading alert groups and silences from their tables."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from services.alerts.model import Alert, AlertGroup, AlertStatus, Matcher, Silence
from services.records.storage import Connection, Row


def _time(value: object) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def _at(value: object) -> datetime:
    return datetime.fromisoformat(str(value))


_ALERT_COLUMNS = (
    "fingerprint, group_id, labels, annotations, source, status, starts_at, ends_at,"
    " first_seen, last_seen"
)


def _alert(a: Row) -> Alert:
    return Alert(
        fingerprint=str(a[0]),
        group_id=int(a[1]),
        labels=json.loads(a[2]),
        annotations=json.loads(a[3]),
        source=str(a[4]),
        status=AlertStatus(str(a[5])),
        starts_at=_at(a[6]),
        ends_at=_time(a[7]),
        first_seen=_at(a[8]),
        last_seen=_at(a[9]),
    )


async def read_alerts(db: Connection, fingerprints: Sequence[str]) -> list[Alert]:
    """These alerts, in the order asked (unknown ones left out), one query per 500."""
    found: dict[str, Alert] = {}
    for start in range(0, len(fingerprints), 500):
        chunk = list(fingerprints[start : start + 500])
        marks = ",".join("?" * len(chunk))
        query = f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE fingerprint IN ({marks})"  # noqa: S608
        found.update((str(r[0]), _alert(r)) for r in await db.execute_fetchall(query, chunk))
    return [found[fp] for fp in fingerprints if fp in found]


async def read_group(db: Connection, group_id: int) -> AlertGroup | None:
    rows = list(
        await db.execute_fetchall(
            "SELECT id, key, labels, chat_id, route, message_id, notified_at, escalation,"
            " acked_by, acked_at, firing_since FROM alert_groups WHERE id = ?",
            (group_id,),
        )
    )
    if not rows:
        return None
    g = rows[0]
    alerts = tuple(
        _alert(a)
        for a in await db.execute_fetchall(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE group_id = ?"  # noqa: S608
            " ORDER BY first_seen, fingerprint",
            (group_id,),
        )
    )
    return AlertGroup(
        id=int(g[0]),
        key=str(g[1]),
        labels=json.loads(g[2]),
        chat_id=int(g[3]),
        route=int(g[4]),
        message_id=None if g[5] is None else int(g[5]),
        notified_at=_time(g[6]),
        firing_since=_time(g[10]),
        escalation=int(g[7]),
        acked_by=None if g[8] is None else str(g[8]),
        acked_at=_time(g[9]),
        alerts=alerts,
    )


async def read_silences(db: Connection) -> list[Silence]:
    rows = await db.execute_fetchall(
        "SELECT id, matchers, starts_at, ends_at, created_by, comment, ended_by FROM silences"
        " ORDER BY id"
    )
    return [
        Silence(
            id=int(r[0]),
            matchers=tuple(Matcher(str(m[0]), str(m[1]), bool(m[2])) for m in json.loads(r[1])),
            starts_at=_at(r[2]),
            ends_at=_at(r[3]),
            created_by=str(r[4]),
            comment=str(r[5]),
            ended_by=None if r[6] is None else str(r[6]),
        )
        for r in rows
    ]
