"""Confirm buttons backed by rows: a press is honoured once, by someone allowed, before expiry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from services.deploy.errors import DeployError
from services.records.audit import AuditLog, utc_now
from services.records.storage import Storage


class ConfirmationState(StrEnum):
    OPEN = "open"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"


class StaleConfirmation(DeployError):
    """The confirmation is unknown, already decided or expired: the button is no longer valid."""


@dataclass(frozen=True)
class Confirmation:
    id: int
    action: str
    subject: str
    requested_by: int
    chat_id: int
    created_at: datetime
    expires_at: datetime
    state: ConfirmationState
    decided_by: int | None


class Confirmations:
    def __init__(self, storage: Storage, audit: AuditLog) -> None:
        self._storage = storage
        self._audit = audit

    async def open(
        self, action: str, subject: str, requested_by: int, chat_id: int, ttl: timedelta
    ) -> Confirmation:
        now = utc_now()
        written = await self._storage.write(
            "INSERT INTO confirmations (action, subject, requested_by, chat_id, created_at,"
            " expires_at) VALUES (?, ?, ?, ?, ?, ?)",
            (action, subject, requested_by, chat_id, now.isoformat(), (now + ttl).isoformat()),
        )
        row_id = written.lastrowid
        assert row_id is not None
        await self._audit.record(
            f"{action}.requested", str(requested_by), subject, {"confirmation": row_id}
        )
        return await self.get(row_id)

    async def get(self, confirmation_id: int) -> Confirmation:
        async with self._storage.db.execute(
            "SELECT * FROM confirmations WHERE id = ?", (confirmation_id,)
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            raise StaleConfirmation(f"no confirmation {confirmation_id}")
        return Confirmation(
            id=row["id"],
            action=row["action"],
            subject=row["subject"],
            requested_by=row["requested_by"],
            chat_id=row["chat_id"],
            created_at=datetime.fromisoformat(row["created_at"]),
            expires_at=datetime.fromisoformat(row["expires_at"]),
            state=ConfirmationState(row["state"]),
            decided_by=row["decided_by"],
        )

    async def decide(
        self, confirmation_id: int, action: str, decision: ConfirmationState, by: int
    ) -> Confirmation:
        """Move an open, unexpired confirmation of `action` to `decision`, exactly once."""
        now = utc_now()
        # One conditional UPDATE: of two presses racing, only one changes the row.
        written = await self._storage.write(
            "UPDATE confirmations SET state = ?, decided_by = ?, decided_at = ?"
            " WHERE id = ? AND action = ? AND state = 'open' AND expires_at > ?",
            (decision.value, by, now.isoformat(), confirmation_id, action, now.isoformat()),
        )
        changed = written.rowcount
        if changed != 1:
            raise StaleConfirmation(f"confirmation {confirmation_id} is no longer open")
        confirmation = await self.get(confirmation_id)
        await self._audit.record(
            f"{action}.{decision.value}",
            str(by),
            confirmation.subject,
            {"confirmation": confirmation_id},
        )
        return confirmation
