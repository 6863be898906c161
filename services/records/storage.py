"""Storage: SQLite (one aiosqlite connection in WAL mode), or PostgreSQL at a postgresql:// URL;
versioned forward-only migrations.

SQLite is the default: one file, nothing to set up. PostgreSQL (services/records/postgres.py)
runs the same queries and migrations, for several opsgates sharing one database. The schema
version is SQLite's `PRAGMA user_version`, or PostgreSQL's `schema_version` row. Migration N
turns a version N-1 database into a version N one; released migrations are never edited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeAlias

import aiosqlite

from config.database import is_postgres_url, looks_like_url, redact_url
from services.errors import OpsgateError
from services.records.migrations import LATEST_VERSION, MIGRATIONS, Migration
from services.records.postgres import (
    MIGRATION_LOCK,
    SCHEMA_VERSION_TABLE,
    IntegrityViolation,
    PgConnection,
    ddl,
)

# What the services query through: aiosqlite's connection, or its PostgreSQL stand-in.
Connection: TypeAlias = aiosqlite.Connection | PgConnection
# A row of either: read by position or by column name.
Row: TypeAlias = Any
# A write a constraint refused, on either database.
INTEGRITY_ERRORS = (sqlite3.IntegrityError, IntegrityViolation)

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
    current = _not_newer(await schema_version(db))
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


async def pg_schema_version(db: PgConnection) -> int:
    exists = await db.execute_fetchall("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists[0][0]:
        return 0
    rows = await db.execute_fetchall("SELECT version FROM schema_version")
    return int(rows[0][0]) if rows else 0


async def migrate_postgres(
    db: PgConnection,
    target: int = LATEST_VERSION,
    migrations: Sequence[Migration] = MIGRATIONS,
) -> int:
    """migrate() for PostgreSQL: every step in one transaction (DDL is transactional there), so
    a failed step leaves the database as it was; under an advisory lock, so that opsgates
    starting together migrate once."""
    await db.execute("BEGIN")
    try:
        await db.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
        await db.execute(SCHEMA_VERSION_TABLE)
        rows = await db.execute_fetchall("SELECT version FROM schema_version")
        if not rows:
            await db.execute("INSERT INTO schema_version (version) VALUES (0)")
        current = _not_newer(int(rows[0][0]) if rows else 0)
        start = current
        for migration in migrations:
            if current < migration.version <= target:
                await db.execute_script(migration.postgres or ddl(migration.sql))
                await db.execute("UPDATE schema_version SET version = ?", (migration.version,))
                current = migration.version
        await db.commit()
    except BaseException:
        await db.rollback()
        raise
    if current != start:
        log.info("database migrated from version %d to %d", start, current)
    return current


def _not_newer(version: int) -> int:
    if version > LATEST_VERSION:
        raise StorageError(
            f"database schema version {version} is newer than this opsgate ({LATEST_VERSION})"
        )
    return version


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
    """Owns the connection; opened once at start-up, closed at shutdown.

    `target` is a SQLite file (or ":memory:"), or a postgresql:// URL. Any other URL is
    refused: a mistyped DSN must not quietly become a local file named after it.
    """

    def __init__(self, target: Path | str) -> None:
        text = str(target)
        self.url: str | None = None
        self.path: Path | str | None = Path(target) if text != ":memory:" else text
        if looks_like_url(text):
            if not is_postgres_url(text):
                scheme = text.split("://", 1)[0]
                raise StorageError(
                    f"the database {redact_url(text)} is a {scheme}:// URL: opsgate stores in"
                    " PostgreSQL (postgresql://user@host:port/database) or in a SQLite file path"
                )
            self.url, self.path = text, None
        self._db: Connection | None = None
        # One connection is shared by every coroutine: a transaction must not take in another
        # coroutine's statements, nor be rolled back with them. So every write takes this lock,
        # except writes made by the task that holds an open transaction (they belong to it).
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[object] | None = None

    @property
    def db(self) -> Connection:
        if self._db is None:
            raise StorageError("storage is not open")
        return self._db

    async def version(self) -> int:
        """The schema version the database is at."""
        if isinstance(self.db, PgConnection):
            return await pg_schema_version(self.db)
        return await schema_version(self.db)

    @property
    def sqlite_file(self) -> Path | None:
        """The SQLite database's file; None in memory or on PostgreSQL."""
        return self.path if isinstance(self.path, Path) else None

    @property
    def begin(self) -> str:
        # SQLite: take the write lock at BEGIN, not at the first write, so a transaction
        # cannot fail half-way on a lock another connection holds.
        return "BEGIN" if self.url else "BEGIN IMMEDIATE"

    async def open(self) -> Storage:
        if self.url is not None:
            db = await PgConnection.connect(self.url)
            self._db = db
            try:
                await migrate_postgres(db)
                await db.learn_schema()
            except BaseException:
                await self.close()
                raise
            return self
        if isinstance(self.path, Path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN ourselves, so multi-statement writes are atomic.
        sqlite = await aiosqlite.connect(str(self.path), isolation_level=None)
        self._db = sqlite
        sqlite.row_factory = aiosqlite.Row
        try:
            for pragma in _PRAGMAS:
                await sqlite.execute(pragma)
            await migrate(sqlite)
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
    async def transaction(self) -> AsyncIterator[Connection]:
        """BEGIN ... COMMIT (or ROLLBACK on any error), alone on the connection."""
        if self._owner is not None and self._owner is asyncio.current_task():
            raise StorageError("a transaction is already open in this task")
        async with self._lock:
            self._owner = asyncio.current_task()
            try:
                await self.db.execute(self.begin)
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

    async def write_returning(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """One statement that writes and gives rows back (`... RETURNING ...`), committed on
        return (or part of this task's open transaction)."""
        if self._owner is not None and self._owner is asyncio.current_task():
            return list(await self.db.execute_fetchall(sql, params))
        async with self._lock:
            return list(await self.db.execute_fetchall(sql, params))

    async def _execute(self, sql: str, params: Sequence[object]) -> WriteResult:
        cursor = await self.db.execute(sql, params)
        result = WriteResult(cursor.lastrowid, cursor.rowcount)
        await cursor.close()
        return result

    async def is_writable(self) -> bool:
        """A real write lock taken (and released), for health checks and `opsgate doctor`."""
        async with self._lock:
            try:
                await self.db.execute(self.begin)
                if self.url:  # a write PostgreSQL must accept: not a read-only standby
                    await self.db.execute("CREATE TEMP TABLE opsgate_probe (x int) ON COMMIT DROP")
            except Exception as exc:
                if not is_database_error(exc):
                    raise
                ok = False
            else:
                ok = True
            with contextlib.suppress(Exception):
                await self.db.execute("ROLLBACK")
        return ok


def is_database_error(exc: BaseException) -> bool:
    """An error of the database itself (SQLite's, or PostgreSQL's when it is in use)."""
    if isinstance(exc, sqlite3.Error | IntegrityViolation):
        return True
    psycopg = sys.modules.get("psycopg")  # loaded only with PostgreSQL
    return psycopg is not None and isinstance(exc, psycopg.Error)
