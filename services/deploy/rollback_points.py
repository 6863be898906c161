"""Rollback points: what a deployment can go back to, recorded before every switch.

A point lives in `ROOT/rollback/<deployment-id>/` on the host: the previous release's version,
copies of the configured config files under `files/`, optionally a database backup
(services.deploy.database_backups), and `manifest.json`, written last, so a directory without one is
an interrupted recording. Every copy carries a SHA-256 computed on the host with sha256sum; a
copy that no longer matches is reported and never restored. Config files come back with
`restore`; a database only through the separate, explicit `restore_database` (a restore
through the front door, services/deploy/restores.py, or a drill into a scratch copy).

    RollbackPointError       str() is a sentence fit for a chat reply
     +-- RollbackPointNotFound
     +-- BackupFailed        a copy or backup failed, or the source changed while copied
     +-- CorruptBackup       the database copy fails its checksum; nothing was restored
    (other host command failures raise services.release_build.HostCommandFailed)
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath

from services.deploy.database_backups import (
    DatabaseBackupError,
    DatabaseSpec,
    backup_database,
    restore_database,
)
from services.deploy.errors import DeployError
from services.hosts.primitives import HostCommandFailed, run_checked, validate_path, write_file
from services.hosts.runner import Host
from services.releases.build import validate_version

MANIFEST = "manifest.json"
DATABASE_COPY = "database.backup"
DEPLOYMENT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_SHA256_LINE = re.compile(r"\\?([0-9a-f]{64})  (.*)")


class RollbackPointError(DeployError):
    """Recording or restoring a rollback point failed; `str()` is one sentence for a chat."""


class RollbackPointNotFound(RollbackPointError):
    """No (complete) rollback point, or no database backup in it."""

    kind = "not_found"


class BackupFailed(RollbackPointError):
    """A copy could not be made or did not match its source."""


class CorruptBackup(RollbackPointError):
    """A stored copy no longer matches the checksum taken when it was made."""


def validate_deployment_id(deployment_id: object) -> str:
    text = str(deployment_id) if isinstance(deployment_id, int | str) else ""
    if DEPLOYMENT_ID_PATTERN.fullmatch(text) is None:
        raise ValueError(f"not a valid deployment id: {text[:40]!r}")
    return text


@dataclass(frozen=True)
class SavedFile:
    source: str  # the config file's path, or a description of the database
    copy: str
    sha256: str


@dataclass(frozen=True)
class RollbackPoint:
    deployment_id: str
    directory: str
    previous_version: str | None
    created_at: str
    files: tuple[SavedFile, ...]
    database: SavedFile | None


@dataclass(frozen=True)
class RestoreReport:
    restored: tuple[str, ...]
    unchanged: tuple[str, ...]  # already identical to the saved copy
    corrupted: tuple[str, ...]  # the saved copy fails its checksum: left as it is

    @property
    def ok(self) -> bool:
        return not self.corrupted

    def summary(self) -> str:
        parts = [f"Restored {len(self.restored)} config file(s)"]
        if self.unchanged:
            parts.append(f"{len(self.unchanged)} unchanged")
        if self.corrupted:
            parts.append("NOT restored (backup corrupted): " + ", ".join(self.corrupted))
        return "; ".join(parts) + "."


class RollbackPoints:
    """The rollback points of one service on one host, under `ROOT/rollback`."""

    def __init__(self, host: Host, root: str, *, timeout_s: float = 120.0) -> None:
        self.host = host
        self.base = f"{validate_path(root.rstrip('/'))}/rollback"
        self.timeout_s = timeout_s

    def directory(self, deployment_id: object) -> str:
        return f"{self.base}/{validate_deployment_id(deployment_id)}"

    async def _run(self, *argv: str, timeout: float | None = None) -> str:
        return (await run_checked(self.host, argv, timeout=timeout or self.timeout_s)).stdout

    async def _sha256(self, paths: Sequence[str]) -> dict[str, str]:
        """path -> checksum of each readable path (our paths never need sha256sum's escapes)."""
        if not paths:
            return {}
        result = await self.host.run(["sha256sum", "--", *paths], timeout=self.timeout_s)
        if result.timed_out or result.connection_failed or result.exit_status not in (0, 1):
            raise HostCommandFailed(result)
        matches = (_SHA256_LINE.fullmatch(line) for line in result.stdout.splitlines())
        return {m.group(2): m.group(1) for m in matches if m is not None}

    async def record(
        self,
        deployment_id: object,
        *,
        previous_version: str | None,
        config_files: Sequence[str] = (),
        database: DatabaseSpec | None = None,
    ) -> RollbackPoint:
        """Copy and checksum everything, then write the manifest. Recording again for the same
        deployment (a retry after a crash) returns the point recorded the first time."""
        directory = self.directory(deployment_id)
        if previous_version is not None:
            validate_version(previous_version)
        sources = [validate_path(path) for path in config_files]
        if len(set(sources)) != len(sources):
            raise ValueError("a config file is listed twice")
        if not sources and database is None:
            # Nothing to copy: the way back is the previous version, which the deployment
            # (and a fleet's host rows) hold already, and only a restore of config files ever
            # loads a point. Writing a manifest would cost five host commands for nothing.
            created = datetime.now(UTC).isoformat(timespec="seconds")
            return RollbackPoint(
                validate_deployment_id(deployment_id),
                directory,
                previous_version,
                created,
                (),
                None,
            )
        try:
            return await self.load(deployment_id)
        except RollbackPointNotFound:
            pass
        await self._run("rm", "-rf", "--", directory)
        await self._run("mkdir", "-p", "--", f"{directory}/files")
        # Numbered, since two config files may share a name in different directories.
        copies = [f"{directory}/files/{n}-{PurePosixPath(p).name}" for n, p in enumerate(sources)]
        before = await self._sha256(sources)
        for source, copy in zip(sources, copies, strict=True):
            if source not in before:
                raise BackupFailed(f"Config file {source} cannot be read on {self.host.name}.")
            await self._run("cp", "-p", "--", source, copy)
        after = await self._sha256(copies)
        files = tuple(SavedFile(s, c, before[s]) for s, c in zip(sources, copies, strict=True))
        for item in files:
            if after.get(item.copy) != item.sha256:
                raise BackupFailed(f"Config file {item.source} changed while copied; try again.")
        saved_db = None if database is None else await self._backup(database, directory)
        created = datetime.now(UTC).isoformat(timespec="seconds")
        point = RollbackPoint(
            validate_deployment_id(deployment_id),
            directory,
            previous_version,
            created,
            files,
            saved_db,
        )
        data = json.dumps(asdict(point), indent=2).encode()
        await write_file(self.host, f"{directory}/{MANIFEST}", data, timeout=self.timeout_s)
        return point

    async def _backup(self, database: DatabaseSpec, directory: str) -> SavedFile:
        copy = f"{directory}/{DATABASE_COPY}"
        try:
            await backup_database(self.host, database, copy)
        except (DatabaseBackupError, HostCommandFailed) as exc:
            raise BackupFailed(f"Database backup failed: {exc}") from exc
        checksum = (await self._sha256([copy])).get(copy)
        if checksum is None:
            raise BackupFailed(f"The database backup left no file on {self.host.name}.")
        return SavedFile(database.description, copy, checksum)

    async def load(self, deployment_id: object) -> RollbackPoint:
        directory = self.directory(deployment_id)
        result = await self.host.run(["cat", "--", f"{directory}/{MANIFEST}"], timeout=30.0)
        if result.exit_status == 1 and not result.connection_failed:
            raise RollbackPointNotFound(f"No rollback point for deployment {deployment_id}.")
        if not result.ok:
            raise HostCommandFailed(result)
        try:
            data = json.loads(result.stdout)
            files = tuple(_saved(item, f"{directory}/files/") for item in data["files"])
            for item in files:
                validate_path(item.source)  # a tampered manifest must not aim restore elsewhere
            database = data["database"]
            previous = data["previous_version"]
            return RollbackPoint(
                validate_deployment_id(deployment_id),
                directory,
                None if previous is None else validate_version(previous),
                str(data["created_at"]),
                files,
                None if database is None else _saved(database, f"{directory}/{DATABASE_COPY}"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            message = f"The rollback point of deployment {deployment_id} is unreadable: {exc}"
            raise RollbackPointError(message) from exc

    async def verify(self, point: RollbackPoint) -> list[str]:
        """The sources whose saved copy is missing or fails its checksum."""
        items = [*point.files, *([point.database] if point.database else [])]
        sums = await self._sha256([item.copy for item in items])
        return [item.source for item in items if sums.get(item.copy) != item.sha256]

    async def restore(self, point: RollbackPoint) -> RestoreReport:
        """Put back each config file whose copy is intact, each by an atomic rename.

        Files are independent: an intact one still brings the host closer to the recorded
        state when another's copy is damaged, and the report names the one not restored."""
        copies = await self._sha256([f.copy for f in point.files])
        live = await self._sha256([f.source for f in point.files])
        restored: list[str] = []
        unchanged: list[str] = []
        corrupted: list[str] = []
        for item in point.files:
            if copies.get(item.copy) != item.sha256:
                corrupted.append(item.source)
                continue
            if live.get(item.source) == item.sha256:
                unchanged.append(item.source)
                continue
            temporary = f"{item.source}.opsgate-restore-{secrets.token_hex(6)}"
            await self._run("cp", "-p", "--", item.copy, temporary)
            if (await self._sha256([temporary])).get(temporary) != item.sha256:
                await self.host.run(["rm", "-f", "--", temporary], timeout=self.timeout_s)
                corrupted.append(item.source)
                continue
            await self._run("mv", "-T", "--", temporary, item.source)
            restored.append(item.source)
        return RestoreReport(tuple(restored), tuple(unchanged), tuple(corrupted))

    async def restore_database(
        self, point: RollbackPoint, database: DatabaseSpec, *, into: DatabaseSpec | None = None
    ) -> SavedFile:
        """Restore the database backup (never automatic); refuses a copy failing its checksum.
        `into`: restore into another database (a drill's scratch copy), not the live one."""
        saved = await self.checked_database(point, database)
        await restore_database(self.host, into or database, saved.copy)
        return saved

    async def checked_database(self, point: RollbackPoint, database: DatabaseSpec) -> SavedFile:
        """The point's database backup, if it is of `database` and matches its checksum."""
        saved = point.database
        if saved is None:
            raise RollbackPointNotFound(f"Deployment {point.deployment_id} has no database backup.")
        if saved.source != database.description:
            message = f"The backup is of {saved.source}, not {database.description}."
            raise RollbackPointError(message + " Nothing was restored.")
        if (await self._sha256([saved.copy])).get(saved.copy) != saved.sha256:
            raise CorruptBackup(
                f"The database backup of deployment {point.deployment_id} is corrupted "
                "(checksum mismatch); nothing was restored."
            )
        return saved

    async def all(self) -> list[RollbackPoint]:
        """Every complete point (one with a manifest), newest first."""
        argv = ["find", self.base, "-mindepth", "2", "-maxdepth", "2", "-name", MANIFEST]
        result = await self.host.run([*argv, "-printf", r"%T@\t%h\0"], timeout=self.timeout_s)
        if not result.ok:
            exists = await self.host.run(["test", "-d", self.base], timeout=self.timeout_s)
            if exists.exit_status == 1 and not exists.connection_failed:
                return []  # nothing recorded yet
            raise HostCommandFailed(result)
        entries = [entry.split("\t", 1) for entry in result.stdout.split("\0") if "\t" in entry]
        names = [PurePosixPath(d).name for _, d in sorted(entries, key=lambda e: -float(e[0]))]
        return [await self.load(n) for n in names if DEPLOYMENT_ID_PATTERN.fullmatch(n)]

    async def prune(self, keep: int, *, protect: Iterable[object] = ()) -> list[str]:
        """Delete all but the `keep` newest points and those in `protect`; returns their ids."""
        if keep < 0:
            raise ValueError("keep must not be negative")
        spared = {validate_deployment_id(item) for item in protect}
        argv = ["find", self.base, "-mindepth", "1", "-maxdepth", "1", "-type", "d", "-printf"]
        result = await self.host.run([*argv, r"%T@\t%f\0"], timeout=self.timeout_s)
        if not result.ok:
            exists = await self.host.run(["test", "-d", self.base], timeout=self.timeout_s)
            if exists.exit_status == 1 and not exists.connection_failed:
                return []  # nothing recorded yet
            raise HostCommandFailed(result)
        entries = [entry.split("\t", 1) for entry in result.stdout.split("\0") if "\t" in entry]
        ordered = [name for _, name in sorted(entries, key=lambda e: (float(e[0]), e[1]))]
        points = [name for name in ordered if DEPLOYMENT_ID_PATTERN.fullmatch(name)]
        doomed = [name for name in points[: max(len(points) - keep, 0)] if name not in spared]
        if doomed:
            await self._run("rm", "-rf", "--", *(f"{self.base}/{n}" for n in doomed), timeout=300)
        return doomed


def _saved(item: dict[str, str], copy_prefix: str) -> SavedFile:
    entry = SavedFile(str(item["source"]), str(item["copy"]), str(item["sha256"]))
    if not entry.copy.startswith(copy_prefix) or "/../" in entry.copy:
        raise ValueError(f"copy path outside the rollback point: {entry.copy}")
    return entry
