"""Rollback points with real files, real SQLite databases and sha256sum on the host."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from services.deploy.database_backups import CommandDatabase, SqliteDatabase
from services.deploy.rollback_points import (
    BackupFailed,
    CorruptBackup,
    RollbackPointError,
    RollbackPointNotFound,
    RollbackPoints,
)
from services.hosts.runner import LocalHost, PrefixHost
from tests.services.releases.test_layout import ForbiddenHost


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_db(path: Path, rows: list[str]) -> None:
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE IF NOT EXISTS orders (item TEXT)")
        db.execute("DELETE FROM orders")
        db.executemany("INSERT INTO orders VALUES (?)", [(row,) for row in rows])


def rows(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as db:
        return [row for (row,) in db.execute("SELECT item FROM orders ORDER BY rowid")]


@pytest.fixture
def service(tmp_path: Path) -> Path:
    """A service's host files: two config files sharing a name, and its SQLite database."""
    (tmp_path / "etc" / "web").mkdir(parents=True)
    (tmp_path / "etc" / "nginx").mkdir(parents=True)
    (tmp_path / "etc" / "web" / "app.conf").write_text("workers = 4\n")
    (tmp_path / "etc" / "nginx" / "app.conf").write_text(
        "upstream web { server 127.0.0.1:8001; }\n"
    )
    make_db(tmp_path / "app.db", ["tea", "cake"])
    return tmp_path


def configs(service: Path) -> list[str]:
    return [str(service / "etc" / "web" / "app.conf"), str(service / "etc" / "nginx" / "app.conf")]


async def test_record_copies_config_and_database_with_checksums(service: Path) -> None:
    points = RollbackPoints(LocalHost(), str(service / "srv"))
    database = SqliteDatabase(str(service / "app.db"))
    point = await points.record(
        42, previous_version="v1", config_files=configs(service), database=database
    )
    assert point.directory == str(service / "srv" / "rollback" / "42")
    assert point.previous_version == "v1"
    for saved, source in zip(point.files, configs(service), strict=True):
        assert saved.source == source
        assert saved.sha256 == sha256(Path(source)) == sha256(Path(saved.copy))
    assert point.database is not None and point.database.source == str(service / "app.db")
    assert point.database.sha256 == sha256(Path(point.database.copy))
    assert rows(Path(point.database.copy)) == ["tea", "cake"]
    manifest = json.loads((service / "srv" / "rollback" / "42" / "manifest.json").read_text())
    assert manifest["files"][1]["sha256"] == point.files[1].sha256
    assert await points.load(42) == point
    assert await points.verify(point) == []
    # Recording again (a retry after a crash) keeps the first point, not today's files.
    (service / "etc" / "web" / "app.conf").write_text("workers = 8\n")
    assert await points.record(42, previous_version="v1", config_files=configs(service)) == point


async def test_restore_puts_changed_config_back_and_leaves_equal_files(service: Path) -> None:
    points = RollbackPoints(LocalHost(), str(service / "srv"))
    web, nginx = configs(service)
    point = await points.record("d-7", previous_version="v2", config_files=[web, nginx])
    Path(web).write_text("workers = 8  # the new release's config\n")
    report = await points.restore(point)
    assert (report.restored, report.unchanged, report.corrupted) == ((web,), (nginx,), ())
    assert Path(web).read_text() == "workers = 4\n" and report.ok
    assert report.summary() == "Restored 1 config file(s); 1 unchanged."
    Path(nginx).unlink()  # a deleted config file comes back too
    assert (await points.restore(point)).restored == (nginx,)
    assert list(Path(nginx).parent.iterdir()) == [Path(nginx)]  # no temporary files left


async def test_a_corrupted_copy_is_reported_and_never_restored(service: Path) -> None:
    points = RollbackPoints(LocalHost(), str(service / "srv"))
    web, nginx = configs(service)
    point = await points.record(
        8,
        previous_version=None,
        config_files=[web, nginx],
        database=SqliteDatabase(str(service / "app.db")),
    )
    Path(point.files[0].copy).write_text("workers = 400\n")  # bit rot, or someone's edit
    Path(web).write_text("workers = 8\n")
    Path(nginx).write_text("upstream web { server 127.0.0.1:8002; }\n")
    report = await points.restore(point)
    assert (report.restored, report.corrupted) == ((nginx,), (web,)) and not report.ok
    assert Path(web).read_text() == "workers = 8\n"  # the damaged copy never lands
    assert "NOT restored (backup corrupted): " + web in report.summary()
    assert point.database is not None
    with open(point.database.copy, "r+b") as copy:
        copy.seek(100)
        copy.write(b"\xff\xff")
    make_db(service / "app.db", ["coffee"])
    with pytest.raises(CorruptBackup, match="nothing was restored"):
        await points.restore_database(point, SqliteDatabase(str(service / "app.db")))
    assert rows(service / "app.db") == ["coffee"]
    assert await points.verify(point) == [web, str(service / "app.db")]


async def test_database_restore_is_explicit_and_brings_the_rows_back(service: Path) -> None:
    points = RollbackPoints(LocalHost(), str(service / "srv"))
    database = SqliteDatabase(str(service / "app.db"))
    point = await points.record(9, previous_version="v1", database=database)
    make_db(service / "app.db", ["migrated"])
    await points.restore(point)  # config restore never touches the database
    assert rows(service / "app.db") == ["migrated"]
    await points.restore_database(point, database)
    assert rows(service / "app.db") == ["tea", "cake"]
    with pytest.raises(RollbackPointError, match="not"):
        await points.restore_database(point, SqliteDatabase(str(service / "other.db")))
    no_db = await points.record(10, previous_version="v1")
    with pytest.raises(RollbackPointNotFound, match="no database backup"):
        await points.restore_database(no_db, database)


async def test_through_a_prefix_host_sqlite3_and_commands_do_the_backup(service: Path) -> None:
    """Not a LocalHost: SQLite goes through the sqlite3 CLI, and any database via its argv."""
    points = RollbackPoints(PrefixHost(["env"]), str(service / "srv"))
    database = SqliteDatabase(str(service / "app.db"))
    point = await points.record(
        11, previous_version="v3", config_files=configs(service)[:1], database=database
    )
    assert point.database is not None and rows(Path(point.database.copy)) == ["tea", "cake"]
    make_db(service / "app.db", ["gone"])
    await points.restore_database(point, database)
    assert rows(service / "app.db") == ["tea", "cake"]
    dump = CommandDatabase(
        ("sqlite3", str(service / "app.db"), ".backup '{dest}'"),
        ("sqlite3", str(service / "app.db"), ".restore '{src}'"),
    )
    point = await points.record(12, previous_version="v3", database=dump)
    assert point.database is not None and point.database.source == "command sqlite3"
    make_db(service / "app.db", [])
    await points.restore_database(point, dump)
    assert rows(service / "app.db") == ["tea", "cake"]


async def test_failures_while_recording_are_backup_failures(service: Path) -> None:
    points = RollbackPoints(LocalHost(), str(service / "srv"))
    with pytest.raises(BackupFailed, match="cannot be read"):
        await points.record(1, previous_version="v1", config_files=[str(service / "missing.conf")])
    with pytest.raises(BackupFailed, match="Database backup failed"):
        await points.record(
            2, previous_version="v1", database=SqliteDatabase(str(service / "no.db"))
        )
    assert not (service / "no.db").exists()  # a wrong path never creates an empty database
    failing = CommandDatabase(("false", "{dest}"), ("true", "{src}"))
    with pytest.raises(BackupFailed):
        await points.record(3, previous_version="v1", database=failing)
    with pytest.raises(RollbackPointNotFound):
        await points.load(3)  # no manifest: an interrupted recording is no rollback point


async def test_a_tampered_manifest_is_refused(service: Path) -> None:
    points = RollbackPoints(LocalHost(), str(service / "srv"))
    point = await points.record(5, previous_version="v1", config_files=configs(service)[:1])
    manifest = Path(point.directory) / "manifest.json"
    data = json.loads(manifest.read_text())
    data["files"][0]["copy"] = "/etc/shadow"
    manifest.write_text(json.dumps(data))
    with pytest.raises(RollbackPointError, match="unreadable"):
        await points.load(5)
    manifest.write_text("{not json")
    with pytest.raises(RollbackPointError, match="unreadable"):
        await points.load(5)


async def test_prune_keeps_the_newest_points(service: Path) -> None:
    points = RollbackPoints(LocalHost(), str(service / "srv"))
    assert await points.prune(2) == []  # nothing recorded yet
    for deployment_id in (1, 2, 3, 4):
        await points.record(deployment_id, previous_version="v1", config_files=configs(service))
    assert await points.prune(2, protect=[1]) == ["2"]
    assert sorted(p.name for p in (service / "srv" / "rollback").iterdir()) == ["1", "3", "4"]


@pytest.mark.parametrize("deployment_id", ["", "../x", "-1", "a/b", "1 2", "x" * 65, None, 1.5])
async def test_hostile_ids_and_paths_are_refused_before_any_command(deployment_id: object) -> None:
    host = ForbiddenHost()
    points = RollbackPoints(host, "/srv/web")
    with pytest.raises(ValueError):
        await points.record(deployment_id, previous_version="v1")
    with pytest.raises(ValueError):
        await points.load(deployment_id)
    for bad in (["etc/app.conf"], ["/etc/app conf"], ["/etc/../shadow"], ["/a", "/a"]):
        with pytest.raises(ValueError):
            await points.record(1, previous_version="v1", config_files=bad)
    with pytest.raises(ValueError):
        await points.record(1, previous_version="v1..v2")
    assert host.calls == []


async def test_all_lists_complete_points_newest_first(service: Path) -> None:
    points = RollbackPoints(LocalHost(), str(service / "srv"))
    assert await points.all() == []  # nothing recorded yet: no rollback directory at all
    database = SqliteDatabase(str(service / "app.db"))
    await points.record(3, previous_version="v1", database=database)
    await points.record(5, previous_version="v2", config_files=configs(service)[:1])
    (service / "srv" / "rollback" / "9").mkdir()  # an interrupted recording: no manifest
    listed = await points.all()
    assert [p.deployment_id for p in listed] == ["5", "3"]
    assert listed[1].database is not None and listed[0].database is None
