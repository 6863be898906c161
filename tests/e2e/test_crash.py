"""Crash test: `opsgate run` (a real process) is SIGKILLed at each pipeline step in turn and
started again; every time the service ends healthy and the chat says truthfully what happened.

One module-long story against the real systemd sandbox: deploy v1, then for each state S a
deploy of the version that does not run, started with OPSGATE_HOLD_AT=S so the deployment
stops as it enters S; SIGKILL once the SQLite database shows S, a new process (without the
hold), and checks. The state the process really died in is read back after the kill and
asserted to be S: no race with a step that is over in milliseconds.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from bot.dev.harness.opsgate_process import OpsgateProcess, db_has_schema, opsgate_process, read_db
from bot.dev.harness.postgres import PostgresCluster
from bot.dev.harness.systemd import SystemdSandbox
from bot.dev.sandbox import SandboxClient, SandboxMessage, SandboxThread
from services.deploy.model import BEFORE_SWITCH
from services.deploy.model import DeploymentState as S
from services.deploy.recovery import RESTART_NOTE
from tests.e2e.conftest import CAROL, DEPLOYS, TOKEN
from tests.e2e.deploy_app import PEOPLE_AND_CHATS, DeployApp, app_ops_text, installed_app

SLEEP_1S = f'["{sys.executable}", "-c", "import time; time.sleep(1)"]'
DEPLOY_EXTRA = f"""build = [{SLEEP_1S}]
watch_s = 1.5
watch_interval_s = 0.1
[services.app.deploy.hooks]
post_deploy = [{SLEEP_1S}]
"""
CRASH_STATES = (S.PRE_CHECKS, S.BUILDING, S.SWITCHING, S.VERIFYING, S.WATCHING)
POLL_S = 0.05
Finder = Callable[[list[SandboxMessage]], SandboxMessage | None]


@pytest.fixture
async def crash_app(
    systemd_sandbox: SystemdSandbox, tmp_path: Path, ops_file: Path
) -> AsyncIterator[DeployApp]:
    base = systemd_sandbox.work_dir / f"crash-{tmp_path.name}"
    async with installed_app(systemd_sandbox, base) as app:
        ops = app_ops_text(systemd_sandbox, app, requires_approval=False, deploy_extra=DEPLOY_EXTRA)
        ops_file.write_text(PEOPLE_AND_CHATS + ops)
        yield app


@pytest.fixture
async def bot(
    sandbox: SandboxThread, client: SandboxClient, ops_file: Path, tmp_path: Path, database: str
) -> AsyncIterator[OpsgateProcess]:
    async with opsgate_process(
        tmp_path,
        bot_token=TOKEN,
        bot_api_url=sandbox.base_url,
        config=str(ops_file),
        db=database,  # a SQLite file, then PostgreSQL: both must survive a SIGKILL
        http_addr="127.0.0.1:0",
        log_level="INFO",
    ) as running:
        yield running


def deployment(db: Path | str, deployment_id: int) -> tuple[str, str | None, str]:
    rows = read_db(
        db, "SELECT state, finished_at, error FROM deployments WHERE id = ?", deployment_id
    )
    state, finished_at, error = rows[0]
    return str(state), None if finished_at is None else str(finished_at), str(error)


async def wait_for_state(db: Path | str, after_id: int, state: S, timeout: float = 30) -> int:
    """The id of the first deployment after `after_id`, once it is in `state`."""
    order = list(S)
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if db_has_schema(db):
            rows = read_db(db, "SELECT id, state FROM deployments WHERE id > ?", after_id)
            if rows:
                deployment_id, seen = int(str(rows[0][0])), S(str(rows[0][1]))
                if seen is state:
                    return deployment_id
                if order.index(seen) > order.index(state):
                    raise AssertionError(f"#{deployment_id} passed {state} unseen: it is {seen}")
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"no deployment after #{after_id} reached {state} in {timeout} s")


async def wait_for_card(db: Path | str, deployment_id: int, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    sql = "SELECT progress_message_id FROM deployments WHERE id = ?"
    while read_db(db, sql, deployment_id) == [(None,)]:
        assert asyncio.get_running_loop().time() < deadline, f"#{deployment_id} has no card"
        await asyncio.sleep(POLL_S)


async def wait_finished(db: Path | str, deployment_id: int, timeout: float = 60) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        state, finished_at, _ = deployment(db, deployment_id)
        if finished_at is not None:
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"#{deployment_id} did not finish in {timeout} s")


def bot_message(*markers: str) -> Finder:
    def find(messages: list[SandboxMessage]) -> SandboxMessage | None:
        return next((m for m in messages if m.from_bot and all(s in m.text for s in markers)), None)

    return find


def resumed_card_ended(title: str) -> Finder:
    """The resumed card once it has its footer: runs, rolled back, or the rollback failed."""
    endings = [bot_message(title, end) for end in ("runs ", "Rolled back", "so did")]
    return lambda messages: next(filter(None, (f(messages) for f in endings)), None)


async def assert_healthy(app: DeployApp) -> str:
    """The app answers /health with 200 and runs the release `current` points to."""
    current = (app.root / "current").resolve()
    assert (current / ".opsgate-release.json").is_file(), f"{current} is not a complete release"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.port}", timeout=5) as http:
        health = await http.get("/health")
        assert health.status_code == 200, health.text
        assert (await http.get("/")).json()["version"] == current.name
    return current.name


def nothing_in_flight(db: Path | str) -> None:
    assert read_db(db, "SELECT id, state FROM deployments WHERE finished_at IS NULL") == []
    assert read_db(db, "SELECT * FROM deployment_locks") == []


async def test_sigkill_at_every_step_ends_healthy_and_truthful(
    crash_app: DeployApp, bot: OpsgateProcess, client: SandboxClient, database: str
) -> None:
    app, db = crash_app, database
    await bot.start()
    reply = await client.reply_after(CAROL, DEPLOYS, "/deploy app v1", timeout=30)
    assert "v1" in reply.text, reply.text
    assert await wait_finished(db, 1) == S.SUCCEEDED
    await client.wait_for(DEPLOYS, bot_message("app runs v1."), timeout=30)
    assert await assert_healthy(app) == "v1"

    last_id = 1
    for crash_state in CRASH_STATES:
        before = await assert_healthy(app)
        target = "v2" if before == "v1" else "v1"
        await bot.restart(OPSGATE_HOLD_AT=crash_state.value)
        await client.send(CAROL, DEPLOYS, f"/deploy app {target}")
        deployment_id = await wait_for_state(db, last_id, crash_state)
        await wait_for_card(db, deployment_id)  # posted on its own path, beside the run
        await bot.kill()
        died_in, finished_at, _ = deployment(db, deployment_id)
        assert (died_in, finished_at) == (crash_state, None), f"killed too late: {died_in}"
        current_at_death = (app.root / "current").resolve().name

        await bot.start(OPSGATE_HOLD_AT="")
        final = await wait_finished(db, deployment_id)
        header = "♻️ opsgate restarted with deployments in flight."
        if crash_state in BEFORE_SWITCH:
            notice = await client.wait_for(
                DEPLOYS, bot_message(header, f"#{deployment_id} app"), timeout=30
            )
            assert "had not switched: ended, nothing changed" in notice.text, notice.text
            assert (final, deployment(db, deployment_id)[2]) == (S.FAILED, RESTART_NOTE)
            assert await assert_healthy(app) == before  # untouched
        else:
            notice = await client.wait_for(
                DEPLOYS, bot_message(header, f"#{deployment_id} app"), timeout=30
            )
            assert f"was {crash_state}: verifying it again now" in notice.text, notice.text
            resumed = f"#{deployment_id} Resuming app {target}"
            done = await client.wait_for(DEPLOYS, resumed_card_ended(resumed), timeout=30)
            if current_at_death != target:  # died switching, before `current` moved
                assert crash_state is S.SWITCHING
                assert f"current is {before}\n✅ switch to {target}" in done.text, done.text
            runs = await assert_healthy(app)
            if f"app runs {target} (was {before})." in done.text:
                assert (final, runs) == (S.SUCCEEDED, target), done.text
            else:
                assert f"Rolled back: app runs {before} again" in done.text, done.text
                assert (final, runs) == (S.ROLLED_BACK, before)
        nothing_in_flight(db)
        # The dead run's card keeps its last text but loses its Abort button.
        [(card_id,)] = read_db(
            db, "SELECT progress_message_id FROM deployments WHERE id = ?", deployment_id
        )
        [dead_card] = [m for m in await client.messages(DEPLOYS) if m.message_id == card_id]
        assert dead_card.buttons == [], dead_card
        last_id = deployment_id

    # Every crash left exactly one deployment: no update was handled twice after a restart.
    assert read_db(db, "SELECT count(*) FROM deployments") == [(1 + len(CRASH_STATES),)]


async def test_a_standby_takes_over_the_deploy_its_leader_died_in(
    crash_app: DeployApp,
    sandbox: SandboxThread,
    client: SandboxClient,
    ops_file: Path,
    tmp_path: Path,
    postgres: PostgresCluster,
) -> None:
    """Two opsgates on one PostgreSQL: the leader is SIGKILLed after the switch, mid-verify;
    the standby leads and finishes that deploy as a restarted opsgate would."""
    app, db = crash_app, postgres.schema_url()
    for place in ("leader", "standby"):
        (tmp_path / place).mkdir()
    settings = dict(bot_token=TOKEN, bot_api_url=sandbox.base_url, config=str(ops_file), db=db)
    async with (
        opsgate_process(tmp_path / "leader", **settings, http_addr="127.0.0.1:0") as leader,
        opsgate_process(tmp_path / "standby", **settings, http_addr="127.0.0.1:0") as standby,
    ):
        await leader.start(OPSGATE_HOLD_AT=S.VERIFYING.value)
        reply = await client.reply_after(CAROL, DEPLOYS, "/deploy app v1", timeout=30)
        assert "v1" in reply.text, reply.text
        deployment_id = await wait_for_state(db, 0, S.VERIFYING)
        await wait_for_card(db, deployment_id)
        await standby.start()
        await asyncio.sleep(1)  # following: the leader holds the lead
        assert deployment(db, deployment_id)[:2] == (S.VERIFYING, None)
        await leader.kill()

        notice = await client.wait_for(
            DEPLOYS, bot_message("♻️ opsgate restarted", f"#{deployment_id} app"), timeout=30
        )
        assert "was verifying: verifying it again now" in notice.text, notice.text
        assert await wait_finished(db, deployment_id) == S.SUCCEEDED
        assert await assert_healthy(app) == "v1"
        nothing_in_flight(db)
        leaders = read_db(db, "SELECT data FROM events WHERE kind = 'opsgate.started' ORDER BY id")
        assert len(leaders) == 2 and leaders[0] != leaders[1]
