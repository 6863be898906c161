"""Database drills on real SQLite files: the backup restored into a scratch copy and checked,
the live database never touched (its checksum the same before and after)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.deploy.database_backups import SqliteDatabase
from services.deploy.drills import run_database_drill
from services.deploy.rollback_points import CorruptBackup, RollbackPointNotFound, RollbackPoints
from services.hosts.runner import Host, LocalHost, PrefixHost
from tests.services.deploy.test_rollback_points import make_db, rows, sha256


@pytest.mark.parametrize("host", [LocalHost(), PrefixHost(["env"])], ids=["local", "sqlite3-cli"])
async def test_a_drill_checks_a_scratch_copy_and_leaves_the_live_database(
    tmp_path: Path, host: Host
) -> None:
    live = tmp_path / "app.db"
    make_db(live, ["tea", "cake"])
    points = RollbackPoints(host, str(tmp_path / "srv"))
    database = SqliteDatabase(str(live))
    with pytest.raises(RollbackPointNotFound, match="No rollback point holds a database"):
        await run_database_drill(points, database)
    await points.record(4, previous_version="v1", database=database)
    await points.record(6, previous_version="v2")  # nothing to copy: no point is written
    make_db(live, ["changed since"])
    before = sha256(live)

    report = await run_database_drill(points, database)  # the newest point with a backup
    assert report.ok and report.integrity == ("ok",) and report.point == "4"
    assert report.tables == 1 and report.source == str(live)
    assert sha256(live) == before and rows(live) == ["changed since"]
    assert sorted(p.name for p in (tmp_path / "srv" / "rollback" / "4").iterdir()) == [
        "database.backup",
        "files",
        "manifest.json",
    ]  # the scratch copy is gone
    query = "SELECT count(*) FROM orders"
    checked = await run_database_drill(points, database, "4", query)
    assert checked.ok and checked.integrity == ("ok", "2")
    assert sha256(live) == before


async def test_a_corrupted_backup_fails_the_drill_and_changes_nothing(tmp_path: Path) -> None:
    live = tmp_path / "app.db"
    make_db(live, ["tea"])
    points = RollbackPoints(LocalHost(), str(tmp_path / "srv"))
    database = SqliteDatabase(str(live))
    point = await points.record(7, previous_version="v1", database=database)
    assert point.database is not None
    Path(point.database.copy).write_bytes(b"not a database")
    before = sha256(live)
    with pytest.raises(CorruptBackup, match="checksum mismatch"):
        await run_database_drill(points, database, "7")
    with pytest.raises(RollbackPointNotFound):
        await run_database_drill(points, database, "8")
    assert sha256(live) == before
