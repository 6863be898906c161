"""Database backups with real SQLite files, the sqlite3 CLI and plain commands."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from services.deploy.database_backups import (
    CommandDatabase,
    DatabaseBackupError,
    SqliteDatabase,
    backup_database,
    restore_database,
)
from services.hosts.primitives import HostCommandFailed
from services.hosts.runner import LocalHost, PrefixHost
from tests.services.releases.test_layout import ForbiddenHost


def rows(path: Path) -> list[int]:
    with closing(sqlite3.connect(path)) as db:
        return [n for (n,) in db.execute("SELECT n FROM t ORDER BY n")]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "live.db"
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE t (n INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
    return path


async def test_local_backup_is_a_consistent_snapshot_during_a_write(db: Path) -> None:
    """The online backup copies committed data only, even while a writer is mid-transaction."""
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("BEGIN")
        writer.execute("INSERT INTO t VALUES (3)")
        await backup_database(LocalHost(), SqliteDatabase(str(db)), str(db.parent / "copy.db"))
        writer.execute("COMMIT")
    finally:
        writer.close()
    assert rows(db.parent / "copy.db") == [1, 2] and rows(db) == [1, 2, 3]
    await restore_database(LocalHost(), SqliteDatabase(str(db)), str(db.parent / "copy.db"))
    assert rows(db) == [1, 2]


async def test_a_missing_database_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    missing = SqliteDatabase(str(tmp_path / "missing.db"))
    with pytest.raises(DatabaseBackupError, match=r"missing\.db"):
        await backup_database(LocalHost(), missing, str(tmp_path / "copy.db"))
    with pytest.raises(HostCommandFailed, match="sqlite3 failed"):
        await backup_database(PrefixHost(["env"]), missing, str(tmp_path / "copy.db"))
    assert not (tmp_path / "missing.db").exists()


async def test_other_hosts_use_the_sqlite3_cli_and_commands_their_argv(db: Path) -> None:
    copy = db.parent / "cli.db"
    host = PrefixHost(["env"])
    await backup_database(host, SqliteDatabase(str(db)), str(copy))
    assert rows(copy) == [1, 2]
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DELETE FROM t")
    await restore_database(host, SqliteDatabase(str(db)), str(copy))
    assert rows(db) == [1, 2]
    plain = CommandDatabase(("cp", "--", str(db), "{dest}"), ("cp", "--", "{src}", str(db)))
    await backup_database(host, plain, str(db.parent / "plain.db"))
    assert rows(db.parent / "plain.db") == [1, 2]
    assert plain.description == "command cp"


def test_commands_must_name_where_the_backup_goes() -> None:
    with pytest.raises(ValueError, match="dest"):
        CommandDatabase(("pg_dump", "app"), ("pg_restore", "{src}"))
    with pytest.raises(ValueError, match="src"):
        CommandDatabase(("pg_dump", "--file={dest}"), ("pg_restore", "app"))
    with pytest.raises(ValueError):
        CommandDatabase((), ("pg_restore", "{src}"))
    with pytest.raises(ValueError):
        SqliteDatabase("relative.db")


@pytest.mark.parametrize("path", ["relative.db", "/tmp/x'; .shell id; '", "/tmp/../etc/x", ""])
async def test_unsafe_backup_paths_are_refused_before_any_command(path: str) -> None:
    host = ForbiddenHost()
    with pytest.raises(ValueError):
        await backup_database(host, SqliteDatabase("/srv/app.db"), path)
    with pytest.raises(ValueError):
        await restore_database(host, SqliteDatabase("/srv/app.db"), path)
    assert host.calls == []
