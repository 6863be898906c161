import asyncio
from pathlib import Path

import aiosqlite
import pytest

from services.records.storage import (
    LATEST_VERSION,
    MIGRATIONS,
    Migration,
    Storage,
    StorageError,
    migrate,
    schema_version,
)


async def schema_of(path: Path) -> list[tuple[str, str, str]]:
    """The whole schema, as SQLite records it, for comparing two databases."""
    async with aiosqlite.connect(path) as db:
        rows = await db.execute_fetchall(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    return [(t, n, " ".join((s or "").split())) for t, n, s in rows]


async def test_new_database_is_latest_and_wal(tmp_path: Path) -> None:
    async with Storage(tmp_path / "db" / "opsgate.db") as storage:
        assert await schema_version(storage.db) == LATEST_VERSION
        async with storage.db.execute("PRAGMA journal_mode") as cursor:
            row = await cursor.fetchone()
        assert row is not None and row[0] == "wal"
        assert await storage.is_writable()


@pytest.mark.parametrize("start", range(LATEST_VERSION))
async def test_upgrade_from_every_earlier_version(tmp_path: Path, start: int) -> None:
    fresh = tmp_path / "fresh.db"
    async with Storage(fresh):
        pass
    old = tmp_path / "old.db"
    async with aiosqlite.connect(old, isolation_level=None) as db:
        assert await migrate(db, target=start) == start
        if start >= 1:
            await db.execute(
                "INSERT INTO events (at, kind, actor) VALUES ('2026-01-01T00:00Z', 'x', 'y')"
            )
    async with Storage(old) as storage:
        assert await schema_version(storage.db) == LATEST_VERSION
        rows = await storage.db.execute_fetchall("SELECT kind FROM events")
        assert [r[0] for r in rows] == (["x"] if start >= 1 else [])
    assert await schema_of(old) == await schema_of(fresh)


async def test_migrations_are_numbered_without_gaps() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST_VERSION + 1))


async def test_events_are_append_only(tmp_path: Path) -> None:
    async with Storage(tmp_path / "a.db") as storage:
        await storage.db.execute("INSERT INTO events (at, kind, actor) VALUES ('t', 'k', 'a')")
        with pytest.raises(aiosqlite.IntegrityError, match="append-only"):
            await storage.db.execute("UPDATE events SET actor = 'someone else'")
        with pytest.raises(aiosqlite.IntegrityError, match="append-only"):
            await storage.db.execute("DELETE FROM events")


async def test_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    async with aiosqlite.connect(path) as db:
        await db.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
        await db.commit()
    with pytest.raises(StorageError, match="newer than this opsgate"):
        await Storage(path).open()


async def test_failed_migration_keeps_previous_version(tmp_path: Path) -> None:
    broken = (*MIGRATIONS, Migration(LATEST_VERSION + 1, "broken", "CREATE TABLE t (a);\nNOPE;"))
    async with aiosqlite.connect(tmp_path / "b.db", isolation_level=None) as db:
        await migrate(db)
        with pytest.raises(aiosqlite.OperationalError):
            await migrate(db, target=LATEST_VERSION + 1, migrations=broken)
        assert await schema_version(db) == LATEST_VERSION
        rows = await db.execute_fetchall("SELECT name FROM sqlite_master WHERE name = 't'")
        assert list(rows) == []


async def test_a_failed_transaction_never_takes_another_coroutines_write(tmp_path: Path) -> None:
    async with Storage(tmp_path / "t.db") as storage:
        inside = asyncio.Event()

        async def failing_transaction() -> None:
            async with storage.transaction() as db:
                await db.execute("INSERT INTO events (at, kind, actor) VALUES ('t', 'tx', 'a')")
                inside.set()
                await asyncio.sleep(0.05)  # another coroutine writes meanwhile
                raise RuntimeError("boom")

        async def plain_write() -> None:
            await inside.wait()
            await storage.write("INSERT INTO events (at, kind, actor) VALUES ('t', 'other', 'b')")

        results = await asyncio.gather(failing_transaction(), plain_write(), return_exceptions=True)
        assert isinstance(results[0], RuntimeError) and results[1] is None
        rows = await storage.db.execute_fetchall("SELECT kind FROM events")
        assert [r[0] for r in rows] == ["other"]
        with pytest.raises(StorageError, match="already open"):
            async with storage.transaction(), storage.transaction():
                pass
