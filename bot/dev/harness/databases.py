"""What another connection sees of a test's database, SQLite file or PostgreSQL alike."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any

from services.records.storage import Storage


def committed_rows(storage: Storage, query: str) -> list[tuple[Any, ...]]:
    """Rows as a second, independent connection sees them: only what was committed."""
    if storage.url is not None:
        import psycopg

        with psycopg.connect(storage.url) as pg:
            return [tuple(row) for row in pg.execute(query).fetchall()]
    assert storage.sqlite_file is not None
    with closing(sqlite3.connect(storage.sqlite_file)) as db:
        return db.execute(query).fetchall()
