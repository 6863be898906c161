"""History and retention: prune what is past its time, archive audit events before they go,
back the database up and rotate the backups.

Audit events are appended to `archive_dir/events-YYYY-MM.jsonl.gz` (one JSON object a line,
oldest first), the file is read back and checksummed, a watermark row is written, and only
then are the events deleted: the database refuses to delete an event above the watermark
(migration 9), so nothing can leave it unarchived. Backups use SQLite's online backup: a
consistent copy while opsgate keeps writing.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from config.opsfile import OpsConfig
from services.records.audit import utc_now
from services.records.storage import Storage, StorageError

# One deployment and everything of its sign-off, children first (?1 is its id).
PRUNE_DEPLOYMENT = (
    (
        "DELETE FROM evidence_choices WHERE evidence_id IN (SELECT id FROM"
        " approval_evidence WHERE request_id IN (SELECT id FROM approval_requests WHERE"
        " deployment_id = ?1))"
    ),
    (
        "DELETE FROM approval_evidence WHERE request_id IN (SELECT id FROM"
        " approval_requests WHERE deployment_id = ?1)"
    ),
    (
        "DELETE FROM rejection_prompts WHERE role_id IN (SELECT id FROM approval_roles"
        " WHERE request_id IN (SELECT id FROM approval_requests WHERE deployment_id ="
        " ?1))"
    ),
    (
        "DELETE FROM approval_votes WHERE role_id IN (SELECT id FROM approval_roles WHERE"
        " request_id IN (SELECT id FROM approval_requests WHERE deployment_id = ?1))"
    ),
    (
        "DELETE FROM approval_items WHERE role_id IN (SELECT id FROM approval_roles WHERE"
        " request_id IN (SELECT id FROM approval_requests WHERE deployment_id = ?1))"
    ),
    (
        "DELETE FROM approval_roles WHERE request_id IN (SELECT id FROM approval_requests"
        " WHERE deployment_id = ?1)"
    ),
    ("DELETE FROM approval_requests WHERE deployment_id = ?1"),
    ("DELETE FROM deployments WHERE id = ?1"),
)


@dataclass(frozen=True)
class RetentionReport:
    alerts: int
    deployments: int
    events_archived: int
    archive: Path | None
    backup: Path | None
    backups_removed: tuple[Path, ...]


class Retention:
    def __init__(
        self,
        storage: Storage,
        db_path: Path | None,  # None: not a SQLite file (PostgreSQL has its own backups)
        ops: Callable[[], OpsConfig],
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._storage = storage
        self._db_path = db_path
        self._ops = ops
        self._clock = clock

    async def run(self) -> RetentionReport:
        options = self._ops().retention
        now = self._clock()
        alerts = await self._prune_alerts(now - timedelta(days=options.alerts_days))
        deployments = await self._prune_deployments(now - timedelta(days=options.deployments_days))
        archived, archive = 0, None
        if options.archive_dir is not None:
            cutoff = now - timedelta(days=options.audit_days)
            archived, archive = await self._archive_events(cutoff, Path(options.archive_dir))
        backup: Path | None = None
        removed: tuple[Path, ...] = ()
        if options.backup_dir is not None and self._db_path is not None:
            backup = await self.backup(Path(options.backup_dir))
            removed = self._rotate(Path(options.backup_dir), options.keep_backups)
        return RetentionReport(alerts, deployments, archived, archive, backup, removed)

    async def _prune_alerts(self, before: datetime) -> int:
        cutoff = before.isoformat()
        async with self._storage.transaction() as db:
            cursor = await db.execute(
                "DELETE FROM alerts WHERE status = 'resolved' AND last_seen < ?", (cutoff,)
            )
            gone = cursor.rowcount
            await db.execute(
                "DELETE FROM alert_outbox WHERE state != 'pending' AND created_at < ?", (cutoff,)
            )
            await db.execute(
                "DELETE FROM alert_groups WHERE id NOT IN (SELECT group_id FROM alerts)"
                " AND id NOT IN (SELECT group_id FROM alert_outbox WHERE group_id IS NOT NULL)"
            )
        return max(gone, 0)

    async def _prune_deployments(self, before: datetime) -> int:
        cutoff = before.isoformat()
        async with self._storage.transaction() as db:
            rows = await db.execute_fetchall(
                "SELECT id FROM deployments WHERE finished_at IS NOT NULL AND finished_at < ?",
                (cutoff,),
            )
            ids = [int(r[0]) for r in rows]
            for deployment_id in ids:
                for statement in PRUNE_DEPLOYMENT:
                    await db.execute(statement, (deployment_id,))
        return len(ids)

    async def _archive_events(self, before: datetime, directory: Path) -> tuple[int, Path | None]:
        rows = list(
            await self._storage.db.execute_fetchall(
                "SELECT id, at, kind, actor, subject, data FROM events WHERE at < ? ORDER BY id",
                (before.isoformat(),),
            )
        )
        if not rows:
            return 0, None
        # Only a prefix of ids may go: the watermark deletes everything at or below it.
        upto = int(rows[0][0]) - 1
        for row in rows:
            if int(row[0]) != upto + 1:
                break
            upto = int(row[0])
        kept = [r for r in rows if int(r[0]) <= upto]
        lines = [
            json.dumps(
                {
                    "id": r[0],
                    "at": r[1],
                    "kind": r[2],
                    "actor": r[3],
                    "subject": r[4],
                    "data": json.loads(r[5]),
                },
                ensure_ascii=False,
                sort_keys=True,
            )
            for r in kept
        ]
        month = datetime.fromisoformat(str(kept[-1][1])).strftime("%Y-%m")
        path = directory / f"events-{month}.jsonl.gz"
        digest = await asyncio.to_thread(_append_verified, path, lines)
        async with self._storage.transaction() as db:
            await db.execute(
                "INSERT INTO event_archive (upto_id, path, sha256, events, at)"
                " VALUES (?, ?, ?, ?, ?)",
                (upto, str(path), digest, len(kept), self._clock().isoformat()),
            )
            await db.execute("DELETE FROM events WHERE id <= ?", (upto,))
        return len(kept), path

    async def backup(self, directory: Path) -> Path:
        if self._db_path is None:
            raise StorageError(
                "only a SQLite database is backed up by opsgate (PostgreSQL: pg_dump)"
            )
        stamp = self._clock().strftime("%Y%m%dT%H%M%SZ")
        target = directory / f"opsgate-{stamp}.db"
        await asyncio.to_thread(_online_backup, self._db_path, target)
        return target

    @staticmethod
    def _rotate(directory: Path, keep: int) -> tuple[Path, ...]:
        backups = sorted(directory.glob("opsgate-*.db"))
        doomed = backups[:-keep] if len(backups) > keep else []
        for path in doomed:
            path.unlink()
        return tuple(doomed)


def _append_verified(path: Path, lines: list[str]) -> str:
    """Append the lines as one gzip member, then read the whole file back: its checksum."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(lines) + "\n").encode()
    with gzip.open(path, "ab") as archive:
        archive.write(data)
    with gzip.open(path, "rb") as archive:
        whole = archive.read()
    if not whole.endswith(data):
        raise OSError(f"{path}: the archived events did not read back")
    return hashlib.sha256(whole).hexdigest()


def _online_backup(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with sqlite3.connect(source) as src, sqlite3.connect(partial) as dst:
        src.backup(dst)
    with sqlite3.connect(partial) as check:
        if check.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError(f"backup {target} failed its integrity check")
    partial.rename(target)
