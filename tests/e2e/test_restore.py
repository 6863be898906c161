"""Database restores and drills through the real bot, the API and the CLI, on a real SQLite file
beside the real systemd sandbox unit: sign-off where deploys need it, the unit stopped,
restored, started and verified; a drill that leaves the live database as it was."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest

from bot.dev.harness.systemd import SystemdSandbox
from bot.dev.sandbox import SandboxClient, SandboxMessage
from bot.runner import Opsgate
from services.control.systemd import SystemdManager
from services.deploy.database_backups import SqliteDatabase
from services.deploy.model import DeploymentKind
from services.deploy.model import DeploymentState as S
from tests.e2e.conftest import (
    ALICE,
    APPROVALS,
    BOB,
    CAROL,
    DEPLOYS,
    StartOpsgate,
    callback_answer_text,
)
from tests.e2e.deploy_app import PEOPLE_AND_CHATS, UNIT, DeployApp, app_ops_text, installed_app
from tests.e2e.test_api import cli
from tests.e2e.test_api_parity import CI, TOKENS, VIEWER, call
from tests.e2e.test_deploy_chat import card, deploy_and_wait

WATCH = "watch_s = 0\n"


def database_of(app: DeployApp) -> Path:
    return app.root.parent / "data" / "app.db"


def write_rows(path: Path, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE IF NOT EXISTS orders (item TEXT)")
        db.execute("DELETE FROM orders")
        db.executemany("INSERT INTO orders VALUES (?)", [(row,) for row in rows])


def read_rows(path: Path) -> list[str]:
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        return [row for (row,) in db.execute("SELECT item FROM orders ORDER BY rowid")]


def checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
async def app(
    systemd_sandbox: SystemdSandbox, tmp_path: Path, ops_file: Path, request: pytest.FixtureRequest
) -> AsyncIterator[DeployApp]:
    """t-deploy.service with `sqlite_db` in staging; sign-off needed unless the (indirect)
    parameter says False."""
    approval = bool(getattr(request, "param", True))
    async with installed_app(
        systemd_sandbox, systemd_sandbox.work_dir / f"restore-{tmp_path.name}"
    ) as deployed:
        extra = WATCH + f'sqlite_db = "{database_of(deployed)}"\n'
        text = app_ops_text(
            systemd_sandbox, deployed, requires_approval=approval, deploy_extra=extra
        )
        ops_file.write_text(TOKENS + PEOPLE_AND_CHATS + text)
        write_rows(database_of(deployed), ["tea", "cake"])
        yield deployed


async def restore_signoff(client: SandboxClient, deployment: str) -> SandboxMessage:
    return await client.wait_for(
        APPROVALS,
        lambda ms: next(
            (m for m in ms if f"Database restore {deployment} " in m.text and m.buttons), None
        ),
    )


async def deployments_count(opsgate: Opsgate) -> int:
    return len(await opsgate.services.deployments.history(None, 100))


async def test_a_restore_through_the_chat_with_signoff_brings_the_rows_back(
    app: DeployApp,
    start_opsgate: StartOpsgate,
    client: SandboxClient,
    systemd_sandbox: SystemdSandbox,
) -> None:
    opsgate = await start_opsgate()
    db = database_of(app)
    v1 = await deploy_and_wait(client, CAROL, "/deploy app v1", approver=ALICE)
    assert "✅ app runs v1." in v1.text  # rollback point 1 holds tea and cake
    write_rows(db, ["lost", "by", "a", "bad", "script"])

    listed = await client.reply_after(CAROL, DEPLOYS, "/restore app")
    assert "Database backups of app, newest first:" in listed.text
    assert "• 1 " in listed.text and "/restore app POINT" in listed.text

    # Bad input changes nothing, and says why.
    before, count = checksum(db), await deployments_count(opsgate)
    refusals = {
        "/restore nosuch 1": "nosuch",
        "/restore app 99": "No rollback point for deployment 99.",
        "/restore app ../1": "is not a rollback point of app",
        "/restore app 1 in nowhere": "app has no environment 'nowhere'",
        "/restore": "Usage: /restore SERVICE [POINT]",
    }
    for text, expected in refusals.items():
        refused = await client.reply_after(CAROL, DEPLOYS, text)
        assert expected in refused.text, (text, refused.text)
    no_role = await client.reply_after(BOB, DEPLOYS, "/restore app 1")
    assert "needs the role sre" in no_role.text
    assert checksum(db) == before and await deployments_count(opsgate) == count

    asked = await client.reply_after(CAROL, DEPLOYS, "/restore app 1")
    assert asked.text == (
        "🕐 #2 app database restore from point 1 waits for sign-off in the approvals chat:"
        " admin ×1."
    )
    assert read_rows(db) == ["lost", "by", "a", "bad", "script"]  # nothing before sign-off
    signoff = await restore_signoff(client, "#2")
    assert "from rollback point 1 in staging" in signoff.text
    pressed = await client.press_button(ALICE, APPROVALS, signoff.message_id, 1)
    assert await callback_answer_text(client, pressed) == "Approved: signed off."

    done = await client.wait_for(DEPLOYS, lambda ms: card(ms, "database is restored"), 90)
    assert "✅ app's database is restored from rollback point 1; healthy." in done.text
    for step in ("rollback point 1", "safety copy", "stop t-deploy", "restore ", "start "):
        assert step in done.text, (step, done.text)
    assert read_rows(db) == ["tea", "cake"]
    assert await SystemdManager(systemd_sandbox.host).is_active(UNIT)
    deployment = await opsgate.services.deployments.get(2)
    assert (deployment.kind, deployment.state, deployment.version) == ("restore", "succeeded", "1")
    kinds = [e.kind for e in await opsgate.services.audit.events(subject="app")]
    assert "deploy.awaiting_approval" in kinds and "deploy.succeeded" in kinds

    # The restore kept a safety copy of what it replaced: a point of its own.
    again = await client.reply_after(CAROL, DEPLOYS, "/restore app")
    assert "• 2 " in again.text and again.text.index("• 2 ") < again.text.index("• 1 ")

    # A drill restores into a scratch copy; the live database stays as it is.
    write_rows(db, ["newer"])
    before = checksum(db)
    drill = await client.reply_after(CAROL, DEPLOYS, "/drill app database 1")
    assert drill.text.startswith("✅ Database drill of app: rollback point 1")
    assert "integrity_check: ok; 1 table(s)." in drill.text
    assert checksum(db) == before and read_rows(db) == ["newer"]
    odd = await client.reply_after(CAROL, DEPLOYS, "/drill app database ../1")
    assert "is not a rollback point of app" in odd.text
    newest = await client.reply_after(CAROL, DEPLOYS, "/drill app database")
    assert "rollback point 2" in newest.text and checksum(db) == before
    assert [e.actor for e in await opsgate.services.audit.events(kind="drill.database")] == [
        str(CAROL),
        str(CAROL),
    ]


@pytest.mark.parametrize("app", [False], indirect=True)
async def test_a_restore_through_the_api_and_the_cli(
    app: DeployApp, start_opsgate: StartOpsgate
) -> None:
    opsgate = await start_opsgate()
    db = database_of(app)
    first = await cli(opsgate, "deploy", "app", "v1", "--wait", token=CI)
    assert first.returncode == 0, first.stderr
    write_rows(db, ["gone"])

    listed = await cli(opsgate, "restore", "app", token=CI)
    assert listed.returncode == 0, listed.stderr
    assert [p["point"] for p in json.loads(listed.stdout)] == ["1"]

    before = checksum(db)
    unknown = await call(opsgate, CI, "POST", "/api/restores", json={"service": "app", "point": 9})
    assert unknown.status_code == 404 and "No rollback point" in unknown.json()["error"]
    no_role = await call(
        opsgate, VIEWER, "POST", "/api/restores", json={"service": "app", "point": 1}
    )
    assert no_role.status_code == 403
    nosuch = await call(opsgate, CI, "POST", "/api/restores", json={"service": "x", "point": 1})
    assert nosuch.status_code == 404
    assert checksum(db) == before

    restored = await cli(opsgate, "restore", "app", "1", "--wait", token=CI)
    assert restored.returncode == 0, (restored.stdout, restored.stderr)
    assert restored.stdout.splitlines()[-1] == "#2 restore app 1: succeeded"
    assert read_rows(db) == ["tea", "cake"]


async def test_a_restore_interrupted_by_a_restart_puts_the_safety_copy_back(
    app: DeployApp,
    start_opsgate: StartOpsgate,
    client: SandboxClient,
    systemd_sandbox: SystemdSandbox,
) -> None:
    """opsgate died half-way through restoring: at start-up the restore ends rolled_back, the
    database as the safety copy kept it, the unit running again."""
    opsgate = await start_opsgate()
    db = database_of(app)
    await deploy_and_wait(client, CAROL, "/deploy app v1", approver=ALICE)
    write_rows(db, ["today's", "orders"])
    services = opsgate.services
    deployments = services.deployments
    restore = await deployments.request(
        "app", "staging", "1", str(CAROL), kind=DeploymentKind.RESTORE
    )
    for state in (S.APPROVED, S.PRE_CHECKS, S.SWITCHING):
        await deployments.advance(restore.id, state, "opsgate")
    manager = SystemdManager(systemd_sandbox.host)
    await manager.stop(UNIT)  # what the run did before it died: stopped, safety copy, ...
    points = services.pipeline.rollback_points("app", "staging")
    await points.record(restore.id, previous_version="v1", database=SqliteDatabase(str(db)))
    write_rows(db, ["half", "restored"])  # ... and part of the restore
    await opsgate.stop()

    opsgate = await start_opsgate()
    done = await client.wait_for(DEPLOYS, lambda ms: card(ms, "The restore from 1 failed"), 90)
    assert f"#{restore.id} Resuming app 1" in done.text
    assert "interrupted by a restart of opsgate" in done.text
    assert f"The database is as it was before (rollback point {restore.id})." in done.text
    assert read_rows(db) == ["today's", "orders"]
    assert await manager.is_active(UNIT)
    assert (await opsgate.services.deployments.get(restore.id)).state is S.ROLLED_BACK
