"""Crash test over a fleet: `opsgate run` (a real process) is SIGKILLed at each step of a rolling
deploy over h1-h4 and started again; every time each host ends on one verified version, the
same on all, and the chat, /history and the API say truthfully what happened.

Each case: a normal opsgate (in the test's process) deploys v1 to production; then `opsgate
run` with OPSGATE_HOLD_AT=<point> deploys v2 and stops there (a deployment state, or the n-th
host move into a host state: "host.switching.3"); once the database shows exactly that point
it is SIGKILLed, the point is read back (rows, and each host's `current` over ssh), and a new
process (no hold) takes over.
The hosts are real (bot/dev/harness/fleet.py): every check of what runs is made on the host.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from bot.dev.harness.fleet import Fleet, install_app_unit, remove_app_unit
from bot.dev.harness.gitrepo import make_app_repo
from bot.dev.harness.opsgate_process import OpsgateProcess, opsgate_process, read_db
from bot.dev.sandbox import SandboxClient, SandboxMessage, SandboxThread
from services.deploy.model import DeploymentState as S
from services.deploy.recovery import RESTART_NOTE
from services.hosts.registry import Hosts
from services.releases.layout import BAD, ReleaseLayout
from tests.e2e.conftest import CAROL, DEPLOYS, TOKEN, StartOpsgate
from tests.e2e.test_fleet import PRODUCTION, STAGING, FleetSetup

UNIT = "t-fleet-crash.service"
API_TOKEN = "fleet-crash-api-token"
POLL_S = 0.05
WITHIN_S = 3  # health quick to pass and quick to fail
V1_ROLLOUT = "batch = 4"  # v1 only sets the scene: every host at once
RECOVERY = "♻️ opsgate restarted with deployments in flight."


@dataclass(frozen=True)
class Case:
    hold: str  # OPSGATE_HOLD_AT for the v2 deploy
    rollout: str  # [services.app.rollout] of the v2 deploy
    died_in: S  # the deployment's state at the kill
    rows: dict[str, str]  # each production host's row at the kill ({} before the rows exist)
    final: S
    runs: str  # what every production host runs in the end
    history: str  # what /history says after the deployment's state (its hosts, its error)
    broken: list[str] = field(default_factory=list)  # hosts where v2's /health answers 503

    def current_at_death(self, host: str) -> str:
        # Rows are written before the host changes: a host held as it enters `switching`
        # still runs v1, one held entering `rolling_back` still runs v2.
        return "v2" if self.rows.get(host) in ("healthy", "failed", "rolling_back") else "v1"


PENDING = dict.fromkeys(PRODUCTION, "pending")
HEALTHY = " · 4/4 hosts healthy"
CASES = {
    # Before the switch: nothing changed on any host, the deployment just ends failed.
    "building": Case("building", "batch = 2", S.BUILDING, {}, S.FAILED, "v1", f" — {RESTART_NOTE}"),
    # Rows planned, no host touched: the whole rollout runs after the restart.
    "switching": Case("switching", "batch = 2", S.SWITCHING, PENDING, S.SUCCEEDED, "v2", HEALTHY),
    # A host point is exact where one host moves at a time (batch = 1); with batch = 2 the
    # second `healthy` is the end of batch 1, since the batch waits for both.
    "first-host-mid-switch": Case(
        "host.switching.1",
        "batch = 1",
        S.SWITCHING,
        {**PENDING, "h1": "switching"},
        S.SUCCEEDED,
        "v2",
        HEALTHY,
    ),
    "first-batch-done": Case(
        "host.healthy.2",
        "batch = 2",
        S.SWITCHING,
        {**PENDING, "h1": "healthy", "h2": "healthy"},
        S.SUCCEEDED,
        "v2",
        HEALTHY,
    ),
    "third-host-mid-switch": Case(
        "host.switching.3",
        "batch = 1",
        S.SWITCHING,
        {"h1": "healthy", "h2": "healthy", "h3": "switching", "h4": "pending"},
        S.SUCCEEDED,
        "v2",
        HEALTHY,
    ),
    "verifying": Case(
        "verifying",
        "batch = 2",
        S.VERIFYING,
        dict.fromkeys(PRODUCTION, "healthy"),
        S.SUCCEEDED,
        "v2",
        HEALTHY,
    ),
    # h2 fails, so h1 and h2 go back: killed as h1 starts back (parallel = 1: h1 first).
    "rolling-back": Case(
        "host.rolling_back.1",
        "batch = 1\nparallel = 1",
        S.ROLLING_BACK,
        {"h1": "rolling_back", "h2": "failed", "h3": "pending", "h4": "pending"},
        S.ROLLED_BACK,
        "v1",
        " · ⏪ h1 h2 · ⏳ 2 more",
        broken=["h2"],
    ),
}


@dataclass(frozen=True)
class CrashSetup(FleetSetup):
    hosts: Hosts  # the test's own: its ssh connections are made once, not at every look

    async def current(self, names: list[str]) -> dict[str, str | None]:
        """What `current` points at on each host, read over ssh as opsgate reads it."""
        layouts = [ReleaseLayout(self.hosts.get(n), self.app.root) for n in names]
        found = await asyncio.gather(*(layout.current() for layout in layouts))
        return dict(zip(names, found, strict=True))


@pytest.fixture
async def setup(fleet: Fleet, ops_file: Path, tmp_path: Path) -> AsyncIterator[CrashSetup]:
    if len(fleet.hosts) < 5:
        pytest.fail("the fleet tests need five hosts (staging h5, production h1-h4)")
    repo = make_app_repo(fleet.shared_dir / f"repo-{tmp_path.name}")
    app = await install_app_unit(fleet, UNIT, root=f"/srv/{tmp_path.name}", port=fleet.free_port())
    hosts = fleet.registry()
    try:
        yield CrashSetup(fleet, app, repo, ops_file, hosts)
    finally:
        await hosts.aclose()
        await remove_app_unit(fleet, app)


def free_local_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def bot(
    sandbox: SandboxThread, client: SandboxClient, ops_file: Path, tmp_path: Path
) -> AsyncIterator[OpsgateProcess]:
    async with opsgate_process(
        tmp_path,
        bot_token=TOKEN,
        bot_api_url=sandbox.base_url,
        config=str(ops_file),
        db=str(tmp_path / "crash.db"),
        # A fixed port, so the API is found again after each restart (SO_REUSEADDR: no wait).
        http_addr=f"127.0.0.1:{free_local_port()}",
        api_token=API_TOKEN,
        log_level="INFO",
    ) as running:
        yield running


def snapshot(db: Path, deployment_id: int) -> tuple[str | None, dict[str, str]]:
    """The deployment's state and its hosts' rows (None before the deployment exists)."""
    found = read_db(db, "SELECT state FROM deployments WHERE id = ?", deployment_id)
    rows = read_db(
        db, "SELECT host, state FROM deployment_hosts WHERE deployment_id = ?", deployment_id
    )
    return (str(found[0][0]) if found else None), {str(h): str(state) for h, state in rows}


def finished(db: Path, deployment_id: int) -> tuple[str, str] | None:
    """The deployment's final state and error once it has finished, else None."""
    sql = "SELECT state, error FROM deployments WHERE id = ? AND finished_at IS NOT NULL"
    rows = read_db(db, sql, deployment_id)
    return (str(rows[0][0]), str(rows[0][1])) if rows else None


async def wait_at(db: Path, deployment_id: int, case: Case, timeout: float = 60) -> None:
    """Until the database shows the hold point: each is written just before its hold."""
    deadline = asyncio.get_running_loop().time() + timeout
    seen = None
    while asyncio.get_running_loop().time() < deadline:
        seen = snapshot(db, deployment_id)
        if seen == (case.died_in.value, case.rows):
            return
        if finished(db, deployment_id):
            break  # went past the point: the hold did not hold
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"#{deployment_id} never held at {case.hold}: last seen {seen}")


async def wait_for_card(db: Path, deployment_id: int, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    sql = "SELECT progress_message_id FROM deployments WHERE id = ?"
    while read_db(db, sql, deployment_id) == [(None,)]:
        assert asyncio.get_running_loop().time() < deadline, f"#{deployment_id} has no card"
        await asyncio.sleep(POLL_S)


async def wait_finished(db: Path, deployment_id: int, timeout: float = 60) -> tuple[str, str]:
    deadline = asyncio.get_running_loop().time() + timeout
    while (end := finished(db, deployment_id)) is None:
        assert asyncio.get_running_loop().time() < deadline, f"#{deployment_id} did not finish"
        await asyncio.sleep(POLL_S)
    return end


def bot_message(*markers: str) -> Callable[[list[SandboxMessage]], SandboxMessage | None]:
    def find(messages: list[SandboxMessage]) -> SandboxMessage | None:
        return next((m for m in messages if m.from_bot and all(s in m.text for s in markers)), None)

    return find


async def one_version_everywhere(setup: CrashSetup) -> str:
    """Each production host's `current` is what its app serves, and all run the same."""
    current, serving = await asyncio.gather(
        setup.current(PRODUCTION + STAGING), setup.serving(PRODUCTION)
    )
    assert current.pop("h5") is None  # staging: another environment, untouched
    assert current == serving, (current, serving)
    versions = set(serving.values())
    assert len(versions) == 1, serving
    return versions.pop()


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_sigkill_mid_rollout_ends_on_one_verified_version_and_truthful(
    case: Case,
    setup: CrashSetup,
    start_opsgate: StartOpsgate,
    bot: OpsgateProcess,
    client: SandboxClient,
    tmp_path: Path,
) -> None:
    db = tmp_path / "crash.db"
    setup.write_ops(rollout=V1_ROLLOUT, within_s=WITHIN_S)
    # v1 by a normal opsgate in this process (as `opsgate run` starts it): one process start
    # less per case, and nothing to kill here.
    first = await start_opsgate(db=db)
    await client.reply_after(CAROL, DEPLOYS, "/deploy app v1 to production", timeout=30)
    assert await wait_finished(db, 1) == (S.SUCCEEDED, "")
    await first.stop()
    assert await one_version_everywhere(setup) == "v1"

    setup.write_ops(rollout=case.rollout, within_s=WITHIN_S)
    for host in case.broken:
        setup.app.broken_marker(setup.fleet.host(host), "v2").write_text("broken here only\n")
    await bot.start(OPSGATE_HOLD_AT=case.hold)
    await client.send(CAROL, DEPLOYS, "/deploy app v2 to production")
    await wait_at(db, 2, case)
    await wait_for_card(db, 2)  # posted on its own path, beside the run
    await bot.kill()
    # Read back after the kill: it died exactly at the point, each host as its row says.
    assert snapshot(db, 2) == (case.died_in.value, case.rows)
    at_death = {h: case.current_at_death(h) for h in PRODUCTION}
    assert await setup.current(PRODUCTION) == at_death

    await bot.start(OPSGATE_HOLD_AT="")
    final, error = await wait_finished(db, 2)
    assert final == case.final, error
    assert await one_version_everywhere(setup) == case.runs

    notice = await client.wait_for(DEPLOYS, bot_message(RECOVERY, "#2 app"), timeout=30)
    if case.died_in is S.BUILDING:
        assert "#2 app v2 had not switched: ended, nothing changed" in notice.text, notice.text
        assert error == RESTART_NOTE
        assert not [m for m in await client.messages(DEPLOYS) if "Resuming" in m.text]
    else:
        assert f"#2 app v2 was {case.died_in}:" in notice.text, notice.text
        resumed = bot_message("#2 Resuming app v2 after a restart of opsgate", "app runs v")
        card = await client.wait_for(DEPLOYS, resumed, timeout=30)
        if case.final is S.SUCCEEDED:
            assert "verifying it again now" in notice.text, notice.text
            assert "✅ app runs v2 (was v1)." in card.text, card.text
            # Exactly the hosts verified before the crash were verified again.
            again = list(case.rows.values()).count("healthy")
            if again:
                assert f"verify again after a restart of opsgate on {again} host(s)" in card.text
        else:
            assert "Rolled back: app runs v1 again" in card.text, card.text
            assert error.startswith("h2: app was not healthy"), error  # the first run's why
            for host in PRODUCTION:  # marked by the first run, before it began going back
                bad = setup.fleet.host(host).outside(f"{setup.app.root}/releases/v2/{BAD}")
                assert bad.exists(), host

    # The same end in the API and in /history (with each host's part).
    base = f"http://{bot.env['OPSGATE_HTTP_ADDR']}"
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as api:
        shown = (await api.get("/api/deployments/2")).json()
    assert (shown["state"], shown["version"]) == (case.final, "v2"), shown
    assert shown["finished_at"] is not None
    history = await client.reply_after(CAROL, DEPLOYS, "/history app")
    lines = history.text.splitlines()
    assert "#2 " in lines[1] and f"→ production ({case.final}){case.history}" in lines[1], lines
    assert "#1 " in lines[2] and f"(succeeded){HEALTHY}" in lines[2], lines

    assert read_db(db, "SELECT id, state FROM deployments WHERE finished_at IS NULL") == []
    assert read_db(db, "SELECT * FROM deployment_locks") == []
    # The dead run's card keeps its last text but loses its Abort button.
    [(card_id,)] = read_db(db, "SELECT progress_message_id FROM deployments WHERE id = 2")
    [dead_card] = [m for m in await client.messages(DEPLOYS) if m.message_id == card_id]
    assert dead_card.buttons == [], dead_card
    # No update was handled twice after a restart: the two deployments asked for, no more.
    assert read_db(db, "SELECT count(*) FROM deployments") == [(2,)]
