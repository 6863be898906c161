"""Manual environment locks (`/lock ENV reason`, `/unlock ENV`, `/halt`): who, why, since when.

A locked environment refuses every new deployment with the lock's own text. One row per locked
environment; each change and its audit event are written in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from config.opsfile import is_valid_name
from services.deploy.errors import DeployError
from services.records.audit import AuditLog, utc_now
from services.records.storage import Connection, Row, Storage

MAX_REASON = 200


class EnvLockError(DeployError):
    """A lock command that cannot be carried out; the text is fit for chat."""


@dataclass(frozen=True)
class EnvLock:
    environment: str
    locked_by: str
    reason: str
    since: datetime

    def describe(self, who: str | None = None) -> str:
        """`who`: the person's name, when the caller knows it (else their id)."""
        since = self.since.strftime("%Y-%m-%d %H:%M UTC")
        by = who or self.locked_by
        return f"{self.environment} is locked by {by} since {since}: {self.reason}"


class EnvironmentLocked(EnvLockError):
    """The environment is locked by hand; the message says who, why and since when."""

    def __init__(self, lock: EnvLock, who: str | None = None) -> None:
        super().__init__(lock.describe(who))
        self.lock = lock


def check_environment(environment: str) -> str:
    if not is_valid_name(environment):
        raise EnvLockError(f"not an environment name: {environment[:40]!r}")
    return environment


def check_reason(reason: str) -> str:
    # One line, so the text renders the same in chat, logs and the audit trail.
    text = " ".join(reason.split())
    if not text:
        raise EnvLockError("a lock needs a reason")
    if len(text) > MAX_REASON:
        raise EnvLockError(f"the reason is too long ({len(text)} > {MAX_REASON} characters)")
    return text


async def read_lock(db: Connection, environment: str) -> EnvLock | None:
    """The lock on `environment`, read on `db` (so a caller's open transaction sees its own)."""
    async with db.execute("SELECT * FROM env_locks WHERE environment = ?", (environment,)) as cur:
        row = await cur.fetchone()
    return _lock(row) if row is not None else None


class EnvironmentLocks:
    def __init__(
        self, storage: Storage, audit: AuditLog, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._storage = storage
        self._audit = audit
        self._clock = clock

    async def lock(self, environment: str, actor: str, reason: str) -> EnvLock:
        """Lock one environment; refuses (naming the holder) when it is locked already."""
        check_environment(environment)
        text = check_reason(reason)
        async with self._storage.transaction() as db:
            held = await read_lock(db, environment)
            if held is not None:
                raise EnvironmentLocked(held)
            return await self._insert(db, environment, actor, text)

    async def lock_all(self, environments: Sequence[str], actor: str, reason: str) -> list[EnvLock]:
        """Lock every environment not locked yet (for `/halt`); existing locks keep their holder.

        Returns the locks it took. All or nothing: one transaction for the whole set.
        """
        for environment in environments:
            check_environment(environment)
        text = check_reason(reason)
        taken: list[EnvLock] = []
        async with self._storage.transaction() as db:
            for environment in dict.fromkeys(environments):  # once each, in the given order
                if await read_lock(db, environment) is None:
                    taken.append(await self._insert(db, environment, actor, text))
        return taken

    async def unlock(self, environment: str, actor: str) -> EnvLock:
        """Remove the lock; returns it, so the reply can say whose lock ended."""
        check_environment(environment)
        async with self._storage.transaction() as db:
            held = await read_lock(db, environment)
            if held is None:
                raise EnvLockError(f"{environment} is not locked")
            await db.execute("DELETE FROM env_locks WHERE environment = ?", (environment,))
            data = {"locked_by": held.locked_by, "reason": held.reason}
            await self._audit.record("env.unlocked", actor, environment, data)
        return held

    async def get(self, environment: str) -> EnvLock | None:
        return await read_lock(self._storage.db, environment)

    async def all(self) -> list[EnvLock]:
        rows = await self._storage.db.execute_fetchall(
            "SELECT * FROM env_locks ORDER BY environment"
        )
        return [_lock(row) for row in rows]

    async def _insert(self, db: Connection, environment: str, actor: str, reason: str) -> EnvLock:
        lock = EnvLock(environment, actor, reason, self._clock())
        await db.execute(
            "INSERT INTO env_locks (environment, locked_by, reason, since) VALUES (?, ?, ?, ?)",
            (environment, actor, reason, lock.since.isoformat()),
        )
        await self._audit.record("env.locked", actor, environment, {"reason": reason})
        return lock


def _lock(row: Row) -> EnvLock:
    return EnvLock(
        environment=row["environment"],
        locked_by=row["locked_by"],
        reason=row["reason"],
        since=datetime.fromisoformat(row["since"]),
    )
