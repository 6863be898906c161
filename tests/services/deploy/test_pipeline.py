"""DeployPipeline on the real systemd sandbox: real git, a real unit, real HTTP health checks."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.dev.demo_web import free_port
from bot.dev.harness.gitrepo import app_argv, make_app_repo
from bot.dev.harness.systemd import SystemdSandbox
from config.opsfile import parse_ops_text
from services.control.controller import ServiceController
from services.control.systemd import quote_exec
from services.deploy.deployments import DeploymentKind, Deployments, DeploymentState
from services.deploy.hooks import hook_name
from services.deploy.pipeline import DeployOutcome, DeployPipeline
from services.deploy.rollback_points import RollbackPoints
from services.hosts.registry import hosts_from_config
from services.progress import Progress, Step, StepStatus
from services.records.audit import AuditLog
from services.records.storage import Storage
from services.releases.layout import ReleaseLayout

S = DeploymentState
UNIT = "t-app.service"
# Fails the build of v2 only, so a first deploy (v1) succeeds with the same config.
NOT_V2 = "import json, sys; v = json.load(open('release.json'))['version']; sys.exit(v == 'v2')"
CHECK_APP = [["test", "-f", "app.py"]]

OPS = """
[environments.staging]
[hosts.sandbox]
prefix = ["nsenter", "-t", "{pid}", "-m", "-p"]
[services.app]
environment = "staging"
host = "sandbox"
unit = "{unit}"
[services.app.health]
url = "http://127.0.0.1:{port}/health"
timeout_s = 2
attempts = 1
interval_s = 0.2
consecutive = 2
within_s = 3
[services.app.deploy]
root = "{root}"
git = "{git}"
build = {build}
keep = 2
config_files = ["{config}"]
watch_s = 1.0
watch_interval_s = 0.2
max_failed_checks = 2
"""


@dataclass
class World:
    pipeline: DeployPipeline
    deployments: Deployments
    layout: ReleaseLayout
    points: RollbackPoints
    port: int
    http: httpx.AsyncClient
    base: Path

    async def deploy(
        self, version: str, kind: DeploymentKind = DeploymentKind.DEPLOY
    ) -> tuple[int, DeployOutcome, Progress]:
        requested = await self.deployments.request("app", "staging", version, "1001", kind=kind)
        await self.deployments.advance(requested.id, S.APPROVED, "1002")
        progress = Progress()
        if kind is DeploymentKind.ROLLBACK:
            outcome = await self.pipeline.rollback(requested.id, progress)
        else:
            outcome = await self.pipeline.run(requested.id, progress)
        return requested.id, outcome, progress

    async def states(self, deployment_id: int) -> list[str]:
        return [e.data["to"] for e in await self.deployments.events(deployment_id)]

    async def health(self) -> dict[str, Any]:
        response = await self.http.get(f"http://127.0.0.1:{self.port}/health")
        body: dict[str, Any] = response.json()
        return {"code": response.status_code, **body}


async def make_world(
    sandbox: SystemdSandbox,
    tmp_path: Path,
    database: str,
    build: Sequence[Sequence[str]],
    hooks: dict[str, list[list[str]]] | None = None,
) -> AsyncIterator[World]:
    # Under work_dir, not /tmp: the sandbox has its own /tmp, and git runs inside it.
    base = Path(tempfile.mkdtemp(prefix="pipeline_", dir=sandbox.work_dir))
    repo = make_app_repo(base / "app.git")
    config = base / "app.env"
    config.write_text("GREETING=hello\n")
    root, port = base / "srv", free_port()
    argv = app_argv(f"{root}/current", port, python=sys.executable)
    unit = ["[Unit]", "Description=pipeline test app", "[Service]", "Type=notify"]
    (sandbox.unit_dir / UNIT).write_text("\n".join([*unit, f"ExecStart={quote_exec(argv)}", ""]))
    await sandbox.host.run(["systemctl", "daemon-reload"])
    text = OPS.format(
        pid=sandbox.pid, unit=UNIT, port=port, root=root, git=repo.url, config=config,
        build=json.dumps(build),
    )  # fmt: skip
    if hooks:  # JSON arrays of strings are TOML arrays too; "{base}" is the world's dir
        lines = [f"{k} = {json.dumps(v)}".replace("{base}", str(base)) for k, v in hooks.items()]
        text += "\n".join(["[services.app.deploy.hooks]", "hook_timeout_s = 10", *lines, ""])
    ops = parse_ops_text(text)
    hosts = hosts_from_config(ops.hosts)
    async with Storage(database) as storage, httpx.AsyncClient() as http:
        deployments = Deployments(storage, AuditLog(storage))
        controller = ServiceController(ops, hosts, http, start_timeout_s=10)
        pipeline = DeployPipeline(
            lambda: ops, lambda: hosts, deployments, lambda: controller, http, start_timeout_s=10
        )
        host = hosts.get("sandbox")
        layout, points = ReleaseLayout(host, str(root)), RollbackPoints(host, str(root))
        yield World(pipeline, deployments, layout, points, port, http, base)
    await hosts.aclose()
    await sandbox.host.run(["systemctl", "stop", UNIT])
    (sandbox.unit_dir / UNIT).unlink()
    await sandbox.host.run(["systemctl", "daemon-reload"])
    await sandbox.host.run(["systemctl", "reset-failed"])
    shutil.rmtree(base)


@pytest.fixture
async def world(
    systemd_sandbox: SystemdSandbox, tmp_path: Path, database: str
) -> AsyncIterator[World]:
    async for made in make_world(systemd_sandbox, tmp_path, database, CHECK_APP):
        yield made


@pytest.fixture
async def picky_world(
    systemd_sandbox: SystemdSandbox, tmp_path: Path, database: str
) -> AsyncIterator[World]:
    async for made in make_world(
        systemd_sandbox, tmp_path, database, [[sys.executable, "-c", NOT_V2]]
    ):
        yield made


HAPPY = ["requested", "approved", "pre_checks", "building", "switching", "verifying",
         "watching", "succeeded"]  # fmt: skip


async def test_deploy_v1_v2_then_v3_rolls_back_by_itself_then_back_to_v1(world: World) -> None:
    first, outcome, _ = await world.deploy("v1")
    assert outcome == DeployOutcome(True, S.SUCCEEDED, "v1", None, None)
    assert await world.layout.current() == "v1"
    assert (await world.health())["version"] == "v1"
    assert await world.states(first) == HAPPY

    second, outcome, progress = await world.deploy("v2")
    assert outcome == DeployOutcome(True, S.SUCCEEDED, "v2", "v1", None)
    assert (await world.health())["version"] == "v2"
    assert (await world.deployments.get(second)).previous_version == "v1"
    assert [s.title for s in progress.steps][-2:] == ["watch 1 s", "prune old releases"]
    assert all(s.status is StepStatus.OK for s in progress.steps)

    third, outcome, progress = await world.deploy("v3")
    assert (outcome.ok, outcome.state, outcome.rolled_back_to) == (False, S.ROLLED_BACK, "v2")
    assert outcome.error is not None and "HTTP 503" in outcome.error
    assert await world.layout.current() == "v2"
    health = await world.health()
    assert (health["code"], health["version"]) == (200, "v2")
    assert await world.layout.bad_reason("v3") == outcome.error
    assert await world.states(third) == [*HAPPY[:6], "failed", "rolling_back", "rolled_back"]
    failed = [s.title for s in progress.steps if s.status is StepStatus.FAILED]
    assert failed == ["health: 2 in a row"]
    assert [s.title for s in progress.steps][-5:] == [
        "restore config files", "roll back to v2", "restart t-app.service",
        "wait until running", "health: 1 in a row",  # v2 ran healthy before: rollback policy
    ]  # fmt: skip
    point = await world.points.load(third)
    assert point.previous_version == "v2" and len(point.files) == 1
    assert await world.deployments.in_flight() == []  # every lock released

    # By hand: never onto the bad release (nothing changes), then to v1.
    refused, outcome, _ = await world.deploy("v3", DeploymentKind.ROLLBACK)
    assert outcome.state is S.FAILED
    assert outcome.error == f"Release v3 is marked bad: {await world.layout.bad_reason('v3')}"
    assert await world.states(refused) == ["requested", "approved", "pre_checks", "failed"]
    assert await world.layout.current() == "v2"
    back, outcome, _ = await world.deploy("v1", DeploymentKind.ROLLBACK)
    assert outcome == DeployOutcome(True, S.SUCCEEDED, "v1", "v2", None)
    assert await world.states(back) == [
        "requested", "approved", "pre_checks", "switching", "verifying", "succeeded",
    ]  # fmt: skip
    assert await world.layout.current() == "v1"
    assert (await world.health())["version"] == "v1"
    assert await world.deployments.in_flight() == []


async def test_failed_build_changes_nothing_and_releases_the_lock(picky_world: World) -> None:
    world = picky_world
    _, outcome, _ = await world.deploy("v1")
    assert outcome.ok
    before = await world.health()

    failed, outcome, progress = await world.deploy("v2")
    assert (outcome.ok, outcome.state, outcome.rolled_back_to) == (False, S.FAILED, None)
    assert outcome.error is not None and outcome.error.startswith("Building v2 failed at")
    assert await world.states(failed) == ["requested", "approved", "pre_checks", "building",
                                          "failed"]  # fmt: skip
    assert [s.status for s in progress.steps][-1] is StepStatus.FAILED
    assert await world.layout.current() == "v1"
    assert [r.version for r in await world.layout.releases()] == ["v1"]  # no half-built v2
    assert await world.health() == before  # same pid: never restarted
    assert await world.deployments.in_flight() == []
    again = await world.deployments.request("app", "staging", "v1", "1001")
    assert again.state is S.REQUESTED  # the lock is free for the next deploy


# Writes the hook's OPSGATE_* environment and directory to {base}/NAME-VERSION.json, then
# fails (printing why) while the file {base}/fail-NAME exists.
RECORD = (
    "import json, os, sys; e = os.environ; n = sys.argv[1]; v = e['OPSGATE_VERSION'];"
    " c = {k: x for k, x in e.items() if k.startswith('OPSGATE_')} | {'cwd': os.getcwd()};"
    " json.dump(c, open(f'{base}/{n}-{v}.json', 'w')); print('checked', v);"
    " os.path.exists(f'{base}/fail-{n}') and sys.exit(f'{n}: {v} is not welcome')"
)
PYTHON = hook_name([sys.executable])


def seen(world: World, name: str, version: str) -> dict[str, str]:
    recorded: dict[str, str] = json.loads((world.base / f"{name}-{version}.json").read_text())
    return recorded


def step(progress: Progress, title: str) -> Step:
    return next(s for s in progress.steps if s.title == title)


@pytest.fixture
async def hooked_world(
    systemd_sandbox: SystemdSandbox, tmp_path: Path, database: str
) -> AsyncIterator[World]:
    hooks = {
        "pre_deploy": [[sys.executable, "-c", RECORD, "pre"]],
        "post_deploy": [["touch", "{base}/post-deployed"], [sys.executable, "-c", RECORD, "post"]],
        "pre_rollback": [["false"], ["touch", "{base}/pre-rolled"]],
        "post_rollback": [[sys.executable, "-c", RECORD, "post_rollback"]],
    }
    async for made in make_world(systemd_sandbox, tmp_path, database, CHECK_APP, hooks):
        yield made


async def test_pre_deploy_hook_sees_the_context_and_a_failing_one_changes_nothing(
    hooked_world: World,
) -> None:
    world = hooked_world
    first, outcome, progress = await world.deploy("v1")
    assert outcome.ok
    assert seen(world, "pre", "v1") == {
        "OPSGATE_SERVICE": "app",
        "OPSGATE_VERSION": "v1",
        "OPSGATE_PREVIOUS_VERSION": "",
        "OPSGATE_DEPLOYMENT_ID": str(first),
        "OPSGATE_ENVIRONMENT": "staging",
        "OPSGATE_REQUESTER": "1001",
        "OPSGATE_KIND": "deploy",
        "cwd": world.layout.path("v1"),
    }
    assert seen(world, "post", "v1")["cwd"] == world.layout.path("v1")
    assert (world.base / "post-deployed").exists()
    titles = [s.title for s in progress.steps]
    pre, post = f"hook pre_deploy: {PYTHON}", f"hook post_deploy: {PYTHON}"
    assert titles.index("build v1") < titles.index(pre) < titles.index("rollback point")
    assert titles.index("health: 2 in a row") < titles.index(post) < titles.index("watch 1 s")
    assert step(progress, pre).detail == "checked v1"
    assert "hook pre_rollback: false" not in titles
    before = await world.health()

    (world.base / "fail-pre").touch()
    failed, outcome, progress = await world.deploy("v2")
    assert (outcome.ok, outcome.state, outcome.rolled_back_to) == (False, S.FAILED, None)
    assert outcome.error is not None and "pre: v2 is not welcome" in outcome.error
    assert outcome.error.startswith(f"The pre_deploy hook {PYTHON} failed (exit status 1")
    assert (await world.deployments.get(failed)).error == outcome.error  # the tail is kept
    assert await world.states(failed) == [*HAPPY[:4], "failed"]
    assert step(progress, pre).status is StepStatus.FAILED
    assert "pre: v2 is not welcome" in step(progress, pre).detail
    assert "rollback point" not in [s.title for s in progress.steps]
    assert seen(world, "pre", "v2")["OPSGATE_PREVIOUS_VERSION"] == "v1"
    assert await world.layout.current() == "v1"
    assert await world.health() == before  # same pid: never restarted
    assert not await world.layout.is_bad("v2")
    assert await world.deployments.in_flight() == []


async def test_failing_post_deploy_hook_rolls_back_and_runs_the_rollback_hooks(
    hooked_world: World,
) -> None:
    world = hooked_world
    assert (await world.deploy("v1"))[1].ok
    (world.base / "fail-post").touch()
    second, outcome, progress = await world.deploy("v2")
    assert (outcome.ok, outcome.state, outcome.rolled_back_to) == (False, S.ROLLED_BACK, "v1")
    assert outcome.error is not None and "post: v2 is not welcome" in outcome.error
    assert await world.layout.bad_reason("v2") == outcome.error
    assert await world.states(second) == [*HAPPY[:6], "failed", "rolling_back", "rolled_back"]
    assert await world.layout.current() == "v1"
    assert (await world.health())["version"] == "v1"
    # pre_rollback: `false` is reported, the next hook and the rollback still run.
    assert step(progress, "hook pre_rollback: false").status is StepStatus.FAILED
    assert (world.base / "pre-rolled").exists()
    titles = [s.title for s in progress.steps]
    assert titles.index("hook pre_rollback: touch") < titles.index("roll back to v1")
    assert titles[-1] == f"hook post_rollback: {PYTHON}"
    assert progress.steps[-1].status is StepStatus.OK
    rolled = seen(world, "post_rollback", "v1")
    assert (rolled["OPSGATE_KIND"], rolled["OPSGATE_PREVIOUS_VERSION"]) == ("rollback", "v2")
    assert rolled["OPSGATE_DEPLOYMENT_ID"] == str(second)
    assert rolled["cwd"] == world.layout.path("v1")
    note = (await world.deployments.events(second))[-1].data["note"]
    assert note.startswith("v1 runs again The pre_rollback hook false failed")
    assert await world.deployments.in_flight() == []


async def test_failing_post_rollback_hook_never_switches_again(hooked_world: World) -> None:
    world = hooked_world
    assert (await world.deploy("v1"))[1].ok
    assert (await world.deploy("v2"))[1].ok
    (world.base / "fail-post_rollback").touch()
    back, outcome, progress = await world.deploy("v1", DeploymentKind.ROLLBACK)
    assert (outcome.ok, outcome.state, outcome.rolled_back_to) == (
        False, S.ROLLBACK_FAILED, None,
    )  # fmt: skip
    assert outcome.error is not None and "post_rollback: v1 is not welcome" in outcome.error
    assert await world.states(back) == [
        "requested", "approved", "pre_checks", "switching", "verifying", "failed",
        "rolling_back", "rollback_failed",
    ]  # fmt: skip
    assert await world.layout.current() == "v1"  # kept: not back onto v2
    assert (await world.health())["version"] == "v1"
    assert not await world.layout.is_bad("v1") and not await world.layout.is_bad("v2")
    assert seen(world, "post_rollback", "v1")["OPSGATE_PREVIOUS_VERSION"] == "v2"
    assert step(progress, "hook pre_rollback: false").status is StepStatus.FAILED
    assert [s.title for s in progress.steps].count("roll back to v2") == 0
    assert await world.deployments.in_flight() == []


async def test_quick_rollbacks_meet_systemd_s_start_limit_and_mark_nothing_bad(
    world: World,
) -> None:
    # The unit keeps systemd's default start limit: 5 starts within 10 s.
    for version in ("v1", "v2"):
        _, outcome, _ = await world.deploy(version)
        assert outcome.ok, outcome.error
    cleared = []
    for attempt in range(6):
        target = "v1" if attempt % 2 == 0 else "v2"
        _, outcome, progress = await world.deploy(target, DeploymentKind.ROLLBACK)
        assert outcome.ok, outcome.error
        restart = next(s for s in progress.steps if s.title == f"restart {UNIT}")
        if "start limit" in restart.detail:
            assert f"systemctl reset-failed {UNIT}" in restart.detail, restart.detail
            cleared.append(attempt)
    assert cleared, "six quick rollbacks never met the start limit"
    assert [await world.layout.bad_reason(v) for v in ("v1", "v2")] == [None, None]
    assert await world.layout.current() == "v2"
    assert (await world.health())["code"] == 200
