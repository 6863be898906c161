"""A private PostgreSQL cluster on loopback for the tests (Debian's `postgresql` package).

initdb and pg_ctl in a scratch directory, trust authentication for the `opsgate` role on
127.0.0.1 only, fsync off (tests only). As root the server runs as the `postgres` user, since
initdb refuses root. Each test gets a schema of its own in the one database (`schema_url`),
which is far cheaper than a database each; the URL's search_path puts everything there.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from bot.dev.harness.daemons import require
from bot.http.server import free_port

VERSIONS_DIR = Path("/usr/lib/postgresql")
START_TIMEOUT_S = 30


def bin_dir() -> Path | None:
    """The newest installed server's bin directory, or None."""
    found = sorted(VERSIONS_DIR.glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


def unavailable_reason() -> str | None:
    if bin_dir() is None:
        return "PostgreSQL is not installed (apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, but there is no postgres user to run the server as"
    return None


@dataclass(frozen=True)
class PostgresCluster:
    url: str  # postgresql://opsgate@127.0.0.1:PORT/opsgate
    port: int
    directory: Path
    bin: Path

    def schema_url(self, schema: str | None = None) -> str:
        """A URL whose tables all go into a new, empty schema (made here)."""
        name = schema or f"t_{uuid.uuid4().hex[:12]}"
        self.psql(f"CREATE SCHEMA {name}")
        return f"{self.url}?options={quote(f'-csearch_path={name}')}"

    def psql(self, sql: str) -> str:
        """One statement through psql (another client than opsgate's): its unaligned rows."""
        argv = [str(self.bin / "psql"), self.url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def _as_server_user(argv: Sequence[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)


@contextmanager
def running(durable: bool = False) -> Iterator[PostgresCluster]:
    """Start a cluster, yield it, stop it fast and remove it. Skips where PostgreSQL is not
    installed; under CI=true fails instead. `durable`: fsync and synchronous commits on, as
    in production (the tests leave them off: they need no durability across a power cut)."""
    require(unavailable_reason())
    binaries = bin_dir()
    assert binaries is not None
    directory = Path(tempfile.mkdtemp(prefix="opsgate-pg-"))
    directory.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    data, log = directory / "data", directory / "server.log"
    port = free_port()
    server_options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {directory} -c max_connections=200"
    )
    if not durable:
        server_options += " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
    run = _as_server_user
    try:
        initdb = [str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "opsgate"]
        subprocess.run(run([*initdb, "--no-sync", "-E", "UTF8"]), check=True, capture_output=True)
        pg_ctl = [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-w"]
        start = [*pg_ctl, "-t", str(START_TIMEOUT_S), "-o", server_options, "start"]
        subprocess.run(run(start), check=True, capture_output=True)
        try:
            createdb = [str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port)]
            subprocess.run([*createdb, "-U", "opsgate", "opsgate"], check=True)
            url = f"postgresql://opsgate@127.0.0.1:{port}/opsgate"
            yield PostgresCluster(url, port, directory, binaries)
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                stop = [str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]
                subprocess.run(run(stop), check=True, capture_output=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
