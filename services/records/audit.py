"""The audit log: an append-only table of events that every feature writes its trail to."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from services.records.storage import Row, Storage


@dataclass(frozen=True)
class Event:
    id: int
    at: datetime
    kind: str
    actor: str
    subject: str
    data: dict[str, Any] = field(default_factory=dict)


def event_from_row(row: Row) -> Event:
    """An events row (id, at, kind, actor, subject, data) as an Event."""
    return Event(
        row["id"],
        datetime.fromisoformat(row["at"]),
        row["kind"],
        row["actor"],
        row["subject"],
        json.loads(row["data"]),
    )


def utc_now() -> datetime:
    return datetime.now(UTC)


class EventTap(Protocol):
    """What else an event becomes in the same transaction (outgoing webhooks' queue rows)."""

    def wants(self, kind: str) -> bool: ...

    async def enqueue(self, event: Event) -> None:
        """Write its rows through the storage: they join the transaction the event is in."""


class AuditLog:
    """Writes are committed before `record` returns: an acknowledged action is never lost.

    An event a tap wants is written with the tap's rows in one transaction: the caller's, when
    it records inside one, else one of its own. Both are kept, or neither.
    """

    def __init__(
        self,
        storage: Storage,
        clock: Callable[[], datetime] = utc_now,
        tap: EventTap | None = None,
    ) -> None:
        self._storage = storage
        self._clock = clock  # the same clock as the rows the events describe
        self.tap = tap

    async def record(
        self,
        kind: str,
        actor: str,
        subject: str = "",
        data: dict[str, Any] | None = None,
    ) -> Event:
        at = self._clock()
        payload = json.dumps(data or {}, sort_keys=True, default=str)
        tap = self.tap
        if tap is None or not tap.wants(kind):
            return await self._insert(at, kind, actor, subject, payload)
        if self._storage.in_transaction():
            event = await self._insert(at, kind, actor, subject, payload)
            await tap.enqueue(event)
            return event
        async with self._storage.transaction():
            event = await self._insert(at, kind, actor, subject, payload)
            await tap.enqueue(event)
        return event

    async def _insert(
        self, at: datetime, kind: str, actor: str, subject: str, payload: str
    ) -> Event:
        written = await self._storage.write(
            "INSERT INTO events (at, kind, actor, subject, data) VALUES (?, ?, ?, ?, ?)",
            (at.isoformat(), kind, actor, subject, payload),
        )
        event_id = written.lastrowid
        assert event_id is not None
        return Event(event_id, at, kind, actor, subject, json.loads(payload))

    async def events(
        self,
        *,
        subject: str | None = None,
        kind: str | None = None,
        after_id: int = 0,
        limit: int = 1000,
    ) -> list[Event]:
        """Events in the order they happened, optionally for one subject or kind."""
        clauses = ["id > ?"]
        params: list[Any] = [after_id]
        if subject is not None:
            clauses.append("subject = ?")
            params.append(subject)
        if kind is not None:
            clauses.append("kind = ?")
            params.append(kind)
        params.append(limit)
        # The clauses are constants above; every value is a bound parameter.
        where = " AND ".join(clauses)
        query = f"SELECT id, at, kind, actor, subject, data FROM events WHERE {where} ORDER BY id LIMIT ?"  # noqa: S608, E501
        async with self._storage.db.execute(query, params) as cursor:
            rows = await cursor.fetchall()
        return [event_from_row(row) for row in rows]
