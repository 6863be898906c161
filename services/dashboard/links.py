"""One-time login links: the bot sends one in a private chat; the first visit signs that
person in, any later one is refused. Only the token's sha256 is stored."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from services.records.audit import AuditLog, utc_now
from services.records.storage import Storage


class LoginLinks:
    def __init__(
        self, storage: Storage, audit: AuditLog, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._storage = storage
        self._audit = audit
        self._clock = clock

    async def issue(self, person: int, ttl_s: int) -> str:
        """A fresh token for `person`, valid once for `ttl_s` seconds."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        await self._storage.write(
            "INSERT INTO dashboard_links (token_sha256, person, created_at, expires_at)"
            " VALUES (?, ?, ?, ?)",
            (_digest(token), person, now.isoformat(), (now + timedelta(seconds=ttl_s)).isoformat()),
        )
        return token

    async def redeem(self, token: str) -> int | None:
        """The person the link was made for, the first time, while it is fresh; else None.
        Used links and old ones are forgotten a day after they expire."""
        if not 20 <= len(token) <= 100:
            return None
        now = self._clock().isoformat()
        async with self._storage.transaction() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT person FROM dashboard_links WHERE token_sha256 = ?"
                    " AND used_at IS NULL AND expires_at > ?",
                    (_digest(token), now),
                )
            )
            if rows:
                await db.execute(
                    "UPDATE dashboard_links SET used_at = ? WHERE token_sha256 = ?",
                    (now, _digest(token)),
                )
            forget = (self._clock() - timedelta(days=1)).isoformat()
            await db.execute("DELETE FROM dashboard_links WHERE expires_at < ?", (forget,))
        if not rows:
            return None
        person = int(rows[0][0])
        await self._audit.record("dashboard.signed_in", str(person), "", {"by": "login link"})
        return person


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
