"""The persistent queue of outgoing webhook deliveries: one row per event and subscription.

Rows are written by the audit log in the transaction of the event they carry (so an event is
never acknowledged without its deliveries), taken head-first per subject by the sender, and
deleted once delivered. A row given up stays, state 'gave_up', for people to see.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from config.integrations import Webhook
from services.records.audit import Event, utc_now
from services.records.storage import Storage

OWN_KINDS = "webhook."  # the queue's own events are not sent out (no feedback loops)

Subscriptions = Callable[[], Mapping[str, Webhook]]


@dataclass(frozen=True)
class Delivery:
    id: int
    subscription: str
    event_id: int
    kind: str
    subject: str
    message_id: str
    body: str
    created_at: datetime
    attempts: int
    next_at: datetime


@dataclass(frozen=True)
class SubscriptionStatus:
    name: str
    pending: int
    gave_up: int  # rows given up (kept)
    delivered: int  # running totals, kept across restarts
    failed: int  # failed attempts, retried or not
    gave_up_total: int  # deliveries ever given up
    last_error: str
    last_error_at: str | None
    last_delivered_at: str | None

    @property
    def failing(self) -> bool:
        """The last attempt failed (a wrong secret, a receiver down): shown, not silent."""
        if self.last_error_at is None:
            return False
        return self.last_delivered_at is None or self.last_error_at > self.last_delivered_at


def payload(event: Event) -> str:
    """The JSON body: {"type", "timestamp", "data"}, as the Standard Webhooks spec shapes it."""
    at = event.at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    data: dict[str, Any] = {
        "audit_id": event.id,
        "actor": event.actor,
        "subject": event.subject,
        "details": event.data,
    }
    return json.dumps(
        {"type": event.kind, "timestamp": at, "data": data},
        separators=(",", ":"),
        sort_keys=True,
        default=str,
    )


def backoff(hook: Webhook, attempts: int) -> float:
    """Seconds before the next try after `attempts` failed ones: doubling, capped."""
    return float(min(hook.backoff_s * 2 ** min(attempts - 1, 30), hook.backoff_max_s))


def _delivery(row: Any) -> Delivery:
    return Delivery(
        row["id"],
        row["subscription"],
        row["event_id"],
        row["kind"],
        row["subject"],
        row["message_id"],
        row["body"],
        datetime.fromisoformat(row["created_at"]),
        row["attempts"],
        datetime.fromisoformat(row["next_at"]),
    )


class WebhookQueue:
    """The audit log's tap: which events go out, and their rows until delivered."""

    def __init__(
        self,
        storage: Storage,
        subscriptions: Subscriptions,
        clock: Callable[[], datetime] = utc_now,  # wall time: retries wait real seconds
        on_enqueue: Callable[[], None] = lambda: None,
    ) -> None:
        self._storage = storage
        self._subscriptions = subscriptions
        self._clock = clock
        self.on_enqueue = on_enqueue  # wakes the sender; it reads after the commit

    def wants(self, kind: str) -> bool:
        if kind.startswith(OWN_KINDS):
            return False
        return any(hook.wants(kind) for hook in self._subscriptions().values())

    async def enqueue(self, event: Event) -> None:
        """One row per subscription that wants it, in the caller's open transaction."""
        now = self._clock().isoformat()
        body = payload(event)
        for name, hook in sorted(self._subscriptions().items()):
            if not hook.wants(event.kind):
                continue
            await self._storage.write(
                "INSERT INTO webhook_deliveries (subscription, event_id, kind, subject,"
                " message_id, body, created_at, next_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    event.id,
                    event.kind,
                    event.subject,
                    f"msg_{uuid.uuid4().hex}",
                    body,
                    now,
                    now,
                    now,
                ),
            )
        self.on_enqueue()

    async def heads(self) -> list[Delivery]:
        """The oldest pending row of each subscription and subject, soonest due first.

        Read alone on the connection, so another task's uncommitted rows are never seen.
        """
        configured = self._subscriptions()
        if not configured:
            return []  # no write lock taken every second where nobody subscribes
        async with self._storage.transaction() as db:
            rows = await db.execute_fetchall(
                "SELECT d.* FROM webhook_deliveries d JOIN (SELECT min(id) AS id"
                " FROM webhook_deliveries WHERE state = 'pending'"
                " GROUP BY subscription, subject) h ON d.id = h.id ORDER BY d.next_at, d.id"
            )
        return [d for d in map(_delivery, rows) if d.subscription in configured]

    async def delivered(self, delivery: Delivery) -> None:
        now = self._clock().isoformat()
        async with self._storage.transaction() as db:
            await db.execute("DELETE FROM webhook_deliveries WHERE id = ?", (delivery.id,))
            await db.execute(
                "INSERT INTO webhook_totals (subscription, delivered, last_delivered_at)"
                " VALUES (?, 1, ?) ON CONFLICT (subscription) DO UPDATE SET"
                " delivered = webhook_totals.delivered + 1,"
                " last_delivered_at = excluded.last_delivered_at",
                (delivery.subscription, now),
            )

    async def failed(self, delivery: Delivery, hook: Webhook, error: str) -> bool:
        """Count a failed attempt and schedule the next; True when it is given up."""
        now = self._clock()
        attempts = delivery.attempts + 1
        too_old = now - delivery.created_at >= timedelta(hours=hook.max_age_h)
        gave_up = attempts >= hook.max_attempts or too_old
        next_at = now + timedelta(seconds=backoff(hook, attempts))
        async with self._storage.transaction() as db:
            await db.execute(
                "UPDATE webhook_deliveries SET attempts = ?, state = ?, next_at = ?,"
                " last_error = ?, updated_at = ? WHERE id = ?",
                (
                    attempts,
                    "gave_up" if gave_up else "pending",
                    next_at.isoformat(),
                    error,
                    now.isoformat(),
                    delivery.id,
                ),
            )
            await db.execute(
                "INSERT INTO webhook_totals (subscription, failed, gave_up, last_error,"
                " last_error_at) VALUES (?, 1, ?, ?, ?) ON CONFLICT (subscription) DO UPDATE"
                " SET failed = webhook_totals.failed + 1,"
                " gave_up = webhook_totals.gave_up + excluded.gave_up,"
                " last_error = excluded.last_error, last_error_at = excluded.last_error_at",
                (delivery.subscription, int(gave_up), error, now.isoformat()),
            )
        return gave_up

    async def status(self) -> list[SubscriptionStatus]:
        """Each configured subscription's queue and totals, by name."""
        db = self._storage.db
        counts: dict[tuple[str, str], int] = {
            (name, state): count
            for name, state, count in await db.execute_fetchall(
                "SELECT subscription, state, count(*) FROM webhook_deliveries GROUP BY 1, 2"
            )
        }
        totals = {
            row[0]: row
            for row in await db.execute_fetchall(
                "SELECT subscription, delivered, failed, last_error, last_error_at,"
                " last_delivered_at, gave_up FROM webhook_totals"
            )
        }
        result = []
        for name in sorted(self._subscriptions()):
            total = totals.get(name)
            result.append(
                SubscriptionStatus(
                    name,
                    pending=counts.get((name, "pending"), 0),
                    gave_up=counts.get((name, "gave_up"), 0),
                    delivered=total[1] if total else 0,
                    failed=total[2] if total else 0,
                    gave_up_total=total[6] if total else 0,
                    last_error=total[3] if total else "",
                    last_error_at=total[4] if total else None,
                    last_delivered_at=total[5] if total else None,
                )
            )
        return result
