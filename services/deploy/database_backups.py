"""A service's database copied to a file on its host, and back: SQLite, or any command.

SQLite goes through its online backup API, which gives a consistent copy while the service
keeps writing: Python's `Connection.backup` (in a thread) when the host is this machine, the
sqlite3 CLI's `.backup` / `.restore` (the same API) on any other host. Any other database
brings its own argv, e.g. `pg_dump --format=custom --file={dest} app` and
`pg_restore --clean --dbname=app {src}`. Failures raise DatabaseBackupError or
services.release_build.HostCommandFailed.
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from services.deploy.errors import DeployError
from services.hosts.primitives import run_checked, validate_path
from services.hosts.runner import Host, LocalHost, validate_argv

SQLITE_TIMEOUT_S = 600.0


class DatabaseBackupError(DeployError):
    """A backup or restore did not produce what it should; `str()` fits a chat reply."""


@dataclass(frozen=True)
class SqliteDatabase:
    path: str

    def __post_init__(self) -> None:
        validate_path(self.path)  # also keeps it safe inside sqlite3's quoted dot-commands

    @property
    def description(self) -> str:
        return self.path


@dataclass(frozen=True)
class CommandDatabase:
    """Backup and restore argv; "{dest}" / "{src}" inside an argument become the file's path."""

    backup_argv: tuple[str, ...]
    restore_argv: tuple[str, ...]
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        for argv, mark in ((self.backup_argv, "{dest}"), (self.restore_argv, "{src}")):
            if not any(mark in arg for arg in validate_argv(argv)):
                raise ValueError(f"{' '.join(argv)!r} does not mention {mark}")

    @property
    def description(self) -> str:
        return f"command {self.backup_argv[0]}"  # the rest may hold credentials


DatabaseSpec = SqliteDatabase | CommandDatabase


async def backup_database(host: Host, database: DatabaseSpec, dest: str) -> None:
    """Write a backup of `database` to the path `dest` (absolute, plain) on `host`."""
    validate_path(dest)
    if isinstance(database, CommandDatabase):
        argv = [arg.replace("{dest}", dest) for arg in database.backup_argv]
        await run_checked(host, argv, timeout=database.timeout_s)
    elif isinstance(host, LocalHost):
        await asyncio.to_thread(_sqlite_copy, database.path, dest, check=True)
    else:  # -readonly: a wrong path fails instead of creating an empty database
        argv = ["sqlite3", "-readonly", database.path, f".backup '{dest}'"]
        await run_checked(host, argv, timeout=SQLITE_TIMEOUT_S)


async def restore_database(host: Host, database: DatabaseSpec, src: str) -> None:
    """Replace the live database's content with the backup at `src` on `host`."""
    validate_path(src)
    if isinstance(database, CommandDatabase):
        argv = [arg.replace("{src}", src) for arg in database.restore_argv]
        await run_checked(host, argv, timeout=database.timeout_s)
    elif isinstance(host, LocalHost):
        await asyncio.to_thread(_sqlite_copy, src, database.path, check=False)
    else:
        argv = ["sqlite3", database.path, f".restore '{src}'"]
        await run_checked(host, argv, timeout=SQLITE_TIMEOUT_S)


async def check_sqlite(host: Host, path: str, query: str | None = None) -> list[str]:
    """Open the SQLite file at `path` read-only and run `PRAGMA integrity_check` (then
    `query`, if given); the answer's lines, ["ok", ...] when the file is sound."""
    validate_path(path)
    statements = ["PRAGMA integrity_check", *([query] if query else [])]
    if isinstance(host, LocalHost):
        return await asyncio.to_thread(_sqlite_check, path, statements)
    lines: list[str] = []
    for statement in statements:
        argv = ["sqlite3", "-readonly", path, statement]
        lines += (await run_checked(host, argv, timeout=SQLITE_TIMEOUT_S)).stdout.splitlines()
    return lines


def _sqlite_check(path: str, statements: list[str]) -> list[str]:
    """Blocking: run it in a thread."""
    try:
        uri = Path(path).as_uri() + "?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as db:
            return [
                "|".join(str(value) for value in row)
                for statement in statements
                for row in db.execute(statement).fetchall()
            ]
    except sqlite3.Error as exc:
        raise DatabaseBackupError(f"SQLite cannot read {path}: {exc}") from exc


def _sqlite_copy(source: str, destination: str, *, check: bool) -> None:
    """Blocking: run it in a thread. mode=ro makes a missing source an error, not a new file."""
    try:
        uri = Path(source).as_uri() + "?mode=ro"
        with (
            closing(sqlite3.connect(uri, uri=True)) as src,
            closing(sqlite3.connect(destination)) as dst,
        ):
            src.backup(dst)
            if check and dst.execute("PRAGMA quick_check").fetchone() != ("ok",):
                raise DatabaseBackupError(f"The copy of {source} fails SQLite's quick_check.")
    except sqlite3.Error as exc:
        raise DatabaseBackupError(f"SQLite backup from {source} failed: {exc}") from exc
