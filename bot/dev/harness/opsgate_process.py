"""`python -m bot run` (as `opsgate run`) as a real process for tests and benchmarks, and a safe
look into its SQLite database while it runs (or after it was killed half-way through a write)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from config.database import is_postgres_url
from services.records.postgres import translate

REPO = Path(__file__).resolve().parents[3]


@dataclass
class OpsgateProcess:
    """`python -m bot run` as a real process, logging into one file across restarts."""

    env: dict[str, str]
    cwd: Path
    log: IO[bytes]
    process: asyncio.subprocess.Process | None = None

    async def start(self, **env: str) -> None:
        """Start it; `env` adds or changes environment variables from now on."""
        self.env.update(env)
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "run",
            env=self.env,
            cwd=self.cwd,
            stdout=self.log,
            stderr=self.log,
        )

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(self.process.wait(), 10) == -signal.SIGKILL
        self.process = None

    async def restart(self, **env: str) -> None:
        """Stop it cleanly (SIGTERM) if it runs, then start it with `env` added."""
        await self.stop()
        await self.start(**env)

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


@asynccontextmanager
async def opsgate_process(directory: Path, **settings: str) -> AsyncIterator[OpsgateProcess]:
    """An OpsgateProcess (not started) with exactly these settings (`db="..."` is OPSGATE_DB;
    none inherited from the caller's environment), logging into directory/opsgate.log;
    stopped with SIGTERM at the end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSGATE_")}
    env.update({f"OPSGATE_{key.upper()}": value for key, value in settings.items()})
    env["PYTHONPATH"] = str(REPO)
    with (directory / "opsgate.log").open("ab") as log:
        running = OpsgateProcess(env, directory, log)
        try:
            yield running
        finally:
            await running.stop()


def read_db(db: Path | str, sql: str, *params: object) -> list[tuple[object, ...]]:
    """A fresh read-only look (the bot may have just died half-way through a write), at a
    SQLite file or a postgresql:// URL; `?` placeholders either way."""
    if is_postgres_url(str(db)):
        import psycopg

        query, order = translate(sql)
        with psycopg.connect(str(db), autocommit=True) as pg:
            values = [params[i] for i in order] if order else None
            return [tuple(row) for row in pg.execute(query, values).fetchall()]
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return conn.execute(sql, params).fetchall()


def db_has_schema(db: Path | str) -> bool:
    """Whether the bot has made its tables there yet."""
    if is_postgres_url(str(db)):
        return read_db(db, "SELECT to_regclass('deployments') IS NOT NULL") == [(True,)]
    return Path(db).exists()
