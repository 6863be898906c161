"""Which opsgate leads when several share one PostgreSQL.

The lead is a PostgreSQL session advisory lock, taken on the very connection every read and
write of that opsgate goes through (not on a connection of its own). Why: the lock and the
right to write then live and die together. If the leader's session ends (its process or host
dies, PostgreSQL terminates the backend, the network drops it), PostgreSQL releases the lock
and that process can write nothing more: it cannot record a step, so it cannot take one,
since every step that acts on production is recorded first. No epoch needs checking on each
write; the session is the fence. A follower polls for the lock and, once it holds it, starts as
a restarted opsgate does: deployments in flight are verified again or rolled back.

A leader that finds its connection gone stops at once (the process exits; systemd starts it
again, as a follower). With SQLite there is one process and it always leads.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from services.records.audit import utc_now
from services.records.storage import Storage, is_database_error

log = logging.getLogger(__name__)

LEAD_LOCK = 0x6F70736C  # "opsl": any constant, the same for every opsgate on the database
_STATE_KEY = "leader"


@dataclass(frozen=True)
class Leader:
    name: str  # host:pid of the process
    since: datetime

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "since": self.since.isoformat()}


class Leadership:
    def __init__(
        self,
        storage: Storage,
        name: str,
        clock: Callable[[], datetime] = utc_now,
        poll_s: float = 0.5,
        check_s: float = 1.0,
    ) -> None:
        self._storage = storage
        self.name = name
        self._clock = clock
        self._poll_s = poll_s
        self._check_s = check_s
        self.shared = storage.url is not None  # several opsgates may use this database
        self.leading: Leader | None = None

    async def wait_to_lead(self) -> Leader:
        """Take the lead, waiting as long as another opsgate holds it."""
        waited = False
        while self.shared:
            rows = list(
                await self._storage.db.execute_fetchall(
                    "SELECT pg_try_advisory_lock(?)", (LEAD_LOCK,)
                )
            )
            if rows[0][0]:
                break
            if not waited:
                current = await self.current()
                held_by = f"{current.name} leads" if current else "another opsgate leads"
                log.info("following: %s; taking over when it stops", held_by)
                waited = True
            await asyncio.sleep(self._poll_s)
        self.leading = Leader(self.name, self._clock())
        await self._storage.write(
            "INSERT INTO bot_state (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (key)"
            " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (_STATE_KEY, json.dumps(self.leading.as_json()), self.leading.since.isoformat()),
        )
        if self.shared:
            log.info("leading, as %s", self.name)
        return self.leading

    async def current(self) -> Leader | None:
        """The opsgate that leads, as it recorded itself when it took the lead."""
        rows = list(
            await self._storage.db.execute_fetchall(
                "SELECT value FROM bot_state WHERE key = ?", (_STATE_KEY,)
            )
        )
        if not rows:
            return None
        value = json.loads(rows[0][0])
        return Leader(str(value["name"]), datetime.fromisoformat(value["since"]))

    async def watch(self, lost: Callable[[str], None]) -> None:
        """While leading a shared database: check the session each `check_s`; when it is gone
        (and the lock with it), call `lost` with why, once, and return."""
        if not self.shared:
            return
        while True:
            await asyncio.sleep(self._check_s)
            try:
                await self._storage.db.execute_fetchall("SELECT 1")
            except Exception as exc:
                if not is_database_error(exc):
                    raise
                reason = " ".join(str(exc).split()) or type(exc).__name__
                log.error("lost the database, and with it the lead: %s", reason)
                self.leading = None
                lost(reason)
                return
