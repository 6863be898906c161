"""Retention on a real SQLite file: old alerts and finished deployments (with their sign-offs)
go; audit events go only after they are in the compressed archive, which the database itself
enforces; backups are consistent copies, rotated."""

from __future__ import annotations

import gzip
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.dev.harness.postgres import PostgresCluster
from config.opsfile import parse_ops_text
from services.alerts.engine import AlertEngine
from services.alerts.model import AlertStatus, IncomingAlert
from services.approvals.model import deploy_policy
from services.approvals.signoff import Approvals
from services.deploy.deployments import Deployments, DeploymentState
from services.records.audit import AuditLog
from services.records.retention import Retention
from services.records.storage import INTEGRITY_ERRORS, Storage

S = DeploymentState
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ops_text(tmp_path: Path) -> str:
    return f"""
[people]
1 = "alice"
2 = "bob"
[roles]
admin = [2]
[chats.alerts]
warning = -100
[environments.production]
requires_approval = true
[services.web]
environment = "production"
unit = "web.service"
[retention]
alerts_days = 30
deployments_days = 90
audit_days = 90
archive_dir = "{tmp_path}/archive"
backup_dir = "{tmp_path}/backups"
keep_backups = 2
"""


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def storage(tmp_path: Path, database: str) -> AsyncIterator[Storage]:
    async with Storage(database) as storage:
        yield storage


async def test_old_history_goes_and_audit_events_only_through_the_archive(
    storage: Storage, tmp_path: Path
) -> None:
    clock = Clock()
    ops = parse_ops_text(ops_text(tmp_path))
    audit = AuditLog(storage, clock)
    deployments = Deployments(storage, audit, clock)
    approvals = Approvals(storage, audit, deployments, lambda: ops, clock)
    engine = AlertEngine(storage, audit, lambda: ops, clock)
    retention = Retention(storage, tmp_path / "opsgate.db", lambda: ops, clock)

    # An old, signed-off, finished deployment and an old resolved alert...
    old = await deployments.request("web", "production", "v1", "1")
    policy = deploy_policy(ops, "production")
    assert policy is not None
    request = await approvals.open(old, policy)
    await approvals.approve(request.roles[0].id, "2")
    for state in (S.PRE_CHECKS, S.BUILDING):
        await deployments.advance(old.id, state, "opsgate")
    await deployments.fail(old.id, "opsgate", "build broke")
    labels = {"alertname": "Old", "severity": "warning"}
    fire = IncomingAlert(labels, {}, AlertStatus.FIRING, T0, None, "generic")
    await engine.ingest([fire])
    await engine.ingest([IncomingAlert(labels, {}, AlertStatus.RESOLVED, T0, T0, "generic")])
    old_events = len(await audit.events())
    # ... then, 100 days later, a new deployment still waiting.
    clock.now = T0 + timedelta(days=100)
    new = await deployments.request("web", "production", "v2", "1")

    # Nothing may delete an event that is not archived: the database refuses.
    with pytest.raises(INTEGRITY_ERRORS, match="append-only until archived"):
        await storage.write("DELETE FROM events WHERE id = 1", ())

    report = await retention.run()
    assert (report.alerts, report.deployments, report.events_archived) == (1, 1, old_events)
    assert [d.id for d in await deployments.history()] == [new.id]
    assert await approvals.for_deployment(old.id) is None
    for table in ("approval_roles", "approval_votes", "alerts", "alert_groups"):
        rows = list(await storage.db.execute_fetchall(f"SELECT count(*) FROM {table}"))
        assert rows[0][0] == 0, table
    remaining = await audit.events()
    assert [e.kind for e in remaining] == ["deploy.requested"]  # only the new one's

    assert report.archive == tmp_path / "archive" / "events-2026-01.jsonl.gz"
    with gzip.open(report.archive, "rt") as archive:
        archived = [json.loads(line) for line in archive]
    assert len(archived) == old_events
    assert archived[0]["kind"] == "deploy.requested" and archived[0]["at"].startswith("2026-01-01")
    assert {"approval.requested", "approval.ended", "deploy.failed"} <= {
        e["kind"] for e in archived
    }
    # The watermark covers them; the newest event stays protected.
    with pytest.raises(INTEGRITY_ERRORS):
        await storage.write("DELETE FROM events WHERE id = ?", (remaining[0].id,))


async def test_backups_are_consistent_copies_and_rotate(tmp_path: Path) -> None:
    async with Storage(tmp_path / "opsgate.db") as storage:  # SQLite's own online backup
        await backups_rotate(storage, tmp_path)


async def test_on_postgresql_opsgate_makes_no_backups_of_its_own(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    """PostgreSQL's are its own tools' (pg_dump, base backups); the rest of retention runs."""
    clock = Clock()
    ops = parse_ops_text(ops_text(tmp_path))
    async with Storage(postgres.schema_url()) as storage:
        retention = Retention(storage, storage.sqlite_file, lambda: ops, clock)
        await AuditLog(storage, clock).record("test.marker", "1", "", {})
        report = await retention.run()
    assert report.backup is None and not (tmp_path / "backups").exists()


async def backups_rotate(storage: Storage, tmp_path: Path) -> None:
    clock = Clock()
    ops = parse_ops_text(ops_text(tmp_path))
    audit = AuditLog(storage, clock)
    retention = Retention(storage, tmp_path / "opsgate.db", lambda: ops, clock)
    made = []
    for day in range(3):
        clock.now = T0 + timedelta(days=day)
        await audit.record("test.marker", "1", "", {"day": day})
        made.append((await retention.run()).backup)
    backups = sorted((tmp_path / "backups").glob("opsgate-*.db"))
    assert backups == made[1:]  # keep_backups = 2: the oldest went
    with sqlite3.connect(backups[-1]) as copy:
        days = [json.loads(r[0])["day"] for r in copy.execute(
            "SELECT data FROM events WHERE kind = 'test.marker' ORDER BY id")]  # fmt: skip
        assert days == [0, 1, 2]
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
