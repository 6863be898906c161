"""SQLite storage: one aiosqlite connection in WAL mode, versioned forward-only migrations.

The schema version is SQLite's `PRAGMA user_version`. Migration N turns a version N-1
database into a version N one; released migrations are never edited, only appended to.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import aiosqlite

from services.errors import OpsgateError
from services.records.migrations import LATEST_VERSION, MIGRATIONS, Migration

log = logging.getLogger(__name__)


_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",  # an acknowledged write survives power loss too
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 5000",
)


@dataclass(frozen=True)
class WriteResult:
    lastrowid: int | None
    rowcount: int


class StorageError(OpsgateError):
    """The database cannot be used as it is (e.g. it is newer than this opsgate)."""


async def schema_version(db: aiosqlite.Connection) -> int:
    async with db.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def migrate(
    db: aiosqlite.Connection,
    target: int = LATEST_VERSION,
    migrations: Sequence[Migration] = MIGRATIONS,
) -> int:
    """Apply every migration above the current version up to `target`; returns the version."""
    current = await schema_version(db)
    if current > LATEST_VERSION:
        raise StorageError(
            f"database schema version {current} is newer than this opsgate ({LATEST_VERSION})"
        )
    start = current
    for migration in migrations:
        if current < migration.version <= target:
            # One transaction per step, so a failed step leaves the previous version intact.
            await db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _split_statements(migration.sql):
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {int(migration.version)}")
                await db.commit()
            except BaseException:
                await db.rollback()
                raise
            log.debug(
                "database migrated to version %d: %s", migration.version, migration.description
            )
            current = migration.version
    if current != start:  # one line at INFO however many steps it took
        log.info("database migrated from version %d to %d", start, current)
    return current


def _split_statements(sql: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies (BEGIN ... END;) whole."""
    statements: list[str] = []
    buffer = ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements


class Storage:
    """Owns the connection; opened once at start-up, closed at shutdown."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path) if str(path) != ":memory:" else path
        self._db: aiosqlite.Connection | None = None
        # One connection is shared by every coroutine: a transaction must not take in another
        # coroutine's statements, nor be rolled back with them. So every write takes this lock,
        # except writes made by the task that holds an open transaction (they belong to it).
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[object] | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StorageError("storage is not open")
        return self._db

    async def open(self) -> Storage:
        if isinstance(self.path, Path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN ourselves, so multi-statement writes are atomic.
        self._db = await aiosqlite.connect(str(self.path), isolation_level=None)
        self._db.row_factory = aiosqlite.Row
        try:
            for pragma in _PRAGMAS:
                await self._db.execute(pragma)
            await migrate(self._db)
        except BaseException:
            await self.close()  # an open connection's thread would keep the process alive
            raise
        return self

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def __aenter__(self) -> Storage:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK on any error), alone on the connection."""
        if self._owner is not None and self._owner is asyncio.current_task():
            raise StorageError("a transaction is already open in this task")
        async with self._lock:
            self._owner = asyncio.current_task()
            try:
                await self.db.execute("BEGIN IMMEDIATE")
                try:
                    yield self.db
                except BaseException:
                    await self.db.rollback()
                    raise
                await self.db.commit()
            finally:
                self._owner = None

    def in_transaction(self) -> bool:
        """Whether the calling task holds the open transaction (its writes join it)."""
        return self._owner is not None and self._owner is asyncio.current_task()

    async def write(self, sql: str, params: Sequence[object] = ()) -> WriteResult:
        """One statement, committed on return (or part of this task's open transaction)."""
        if self._owner is not None and self._owner is asyncio.current_task():
            return await self._execute(sql, params)
        async with self._lock:
            return await self._execute(sql, params)

    async def _execute(self, sql: str, params: Sequence[object]) -> WriteResult:
        cursor = await self.db.execute(sql, params)
        result = WriteResult(cursor.lastrowid, cursor.rowcount)
        await cursor.close()
        return result

    async def is_writable(self) -> bool:
        """A real write lock taken (and released), for health checks and `opsgate doctor`."""
        try:
            async with self._lock:
                await self.db.execute("BEGIN IMMEDIATE")
                await self.db.execute("ROLLBACK")
        except aiosqlite.Error:
            return False
        return True
