"""Blue-green deploys on the real systemd sandbox, behind a real nginx, under a steady load.

nginx runs as a unit inside the sandbox (so `nginx -s reload` reaches its master), proxying
127.0.0.1:PROXY to the live colour's port. A RequestLoad sends requests through it, each on
a new connection, during every switch: not one may fail.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bot.dev.demo_web import free_port
from bot.dev.harness.gitrepo import make_app_repo
from bot.dev.harness.nginx import RequestLoad, require_nginx, write_nginx_config
from bot.dev.harness.systemd import SystemdSandbox
from config.opsfile import parse_ops_text
from services.control.blue_green import BlueGreen
from services.control.controller import ServiceController
from services.control.systemd import quote_exec
from services.deploy.deployments import DeploymentKind, Deployments, DeploymentState
from services.deploy.pipeline import DeployOutcome, DeployPipeline
from services.hosts.registry import hosts_from_config
from services.progress import Progress, StepStatus
from services.records.audit import AuditLog
from services.records.storage import Storage

S = DeploymentState
TEMPLATE, PROXY = "t-bg@.service", "t-bg-proxy.service"

OPS = """
[environments.staging]
[hosts.sandbox]
prefix = ["nsenter", "-t", "{pid}", "-m", "-p"]
[services.app]
environment = "staging"
host = "sandbox"
unit = "{template}"
[services.app.health]
url = "http://127.0.0.1:{proxy_port}/health"
timeout_s = 2
attempts = 1
interval_s = 0.1
consecutive = 2
within_s = 4
[services.app.deploy]
root = "{root}"
git = "{git}"
keep = 3
watch_s = 0.5
watch_interval_s = 0.2
strategy = "blue-green"
[services.app.deploy.blue_green]
blue_port = {blue}
green_port = {green}
health_url = "http://127.0.0.1:{{port}}/health"
upstream_file = "{upstream}"
reload = {reload}
drain_s = 0.5
"""


@dataclass
class World:
    pipeline: DeployPipeline
    deployments: Deployments
    colors: BlueGreen
    sandbox: SystemdSandbox
    proxy_port: int
    nginx_conf: Path

    async def deploy(
        self, version: str, kind: DeploymentKind = DeploymentKind.DEPLOY
    ) -> tuple[DeployOutcome, Progress]:
        requested = await self.deployments.request("app", "staging", version, "1001", kind=kind)
        await self.deployments.advance(requested.id, S.APPROVED, "1002")
        progress = Progress()
        if kind is DeploymentKind.ROLLBACK:
            return await self.pipeline.rollback(requested.id, progress), progress
        return await self.pipeline.run(requested.id, progress), progress

    async def active(self, color: str) -> bool:
        unit = TEMPLATE.replace("@.", f"@{color}.")
        result = await self.sandbox.host.run(["systemctl", "is-active", unit])
        return result.stdout.strip() == "active"

    def served(self) -> str:
        response = httpx.get(f"http://127.0.0.1:{self.proxy_port}/", timeout=5)
        version: str = response.json()["version"]
        return version


@pytest.fixture
async def world(systemd_sandbox: SystemdSandbox) -> AsyncIterator[World]:
    require_nginx()
    base = Path(tempfile.mkdtemp(prefix="bluegreen_", dir=systemd_sandbox.work_dir))
    repo = make_app_repo(base / "app.git")
    root = base / "srv"
    proxy_port, blue, green = free_port(), free_port(), free_port()
    files = write_nginx_config(base / "nginx", proxy_port, blue)
    units = systemd_sandbox.unit_dir
    (units / TEMPLATE).write_text(
        "[Unit]\nDescription=blue-green test app %i\n[Service]\nType=notify\n"
        f"EnvironmentFile={root}/%i.env\nWorkingDirectory={root}/%i\n"
        f'ExecStart="{sys.executable}" "{root}/%i/app.py"\n'
    )
    (units / PROXY).write_text(
        "[Unit]\nDescription=blue-green test proxy\n[Service]\n"
        f"ExecStart={quote_exec(files.run_argv())}\n"
    )
    host = systemd_sandbox.host
    await host.run(["systemctl", "daemon-reload"])
    assert (await host.run(["systemctl", "start", PROXY])).ok
    text = OPS.format(
        pid=systemd_sandbox.pid, template=TEMPLATE, proxy_port=proxy_port, root=root,
        git=repo.url, blue=blue, green=green, upstream=files.upstream,
        reload=json.dumps(files.reload_argv()),
    )  # fmt: skip
    ops = parse_ops_text(text)
    hosts = hosts_from_config(ops.hosts)
    with tempfile.TemporaryDirectory() as db_dir:
        async with Storage(Path(db_dir) / "opsgate.db") as storage, httpx.AsyncClient() as http:
            deployments = Deployments(storage, AuditLog(storage))
            controller = ServiceController(ops, hosts, http, start_timeout_s=10)
            pipeline = DeployPipeline(
                lambda: ops, lambda: hosts, deployments, lambda: controller, http,
                start_timeout_s=10,
            )  # fmt: skip
            colors = controller.blue_green("app")
            assert colors is not None
            yield World(pipeline, deployments, colors, systemd_sandbox, proxy_port, files.conf)
    await hosts.aclose()
    for unit in ("t-bg@blue.service", "t-bg@green.service", PROXY):
        await host.run(["systemctl", "stop", unit])
    (units / TEMPLATE).unlink()
    (units / PROXY).unlink()
    await host.run(["systemctl", "daemon-reload"])
    await host.run(["systemctl", "reset-failed"])
    shutil.rmtree(base)


def assert_no_failures(load: RequestLoad, *versions: str) -> None:
    assert load.failures == [], load.failures[:5]
    seen = {json.loads(body)["version"] for body in load.bodies_seen}
    assert seen == set(versions), load.bodies_seen
    assert load.total > 20


async def test_blue_green_switches_under_load_without_a_failed_request(world: World) -> None:
    outcome, _ = await world.deploy("v1")
    assert outcome.ok, outcome.error
    assert (await world.colors.live(), world.served()) == ("blue", "v1")
    assert await world.active("blue") and not await world.active("green")

    with RequestLoad(world.proxy_port, threads=4) as load:
        outcome, progress = await world.deploy("v2")
        load.wait_for_body(json.dumps({"version": "v2"}))
    assert outcome == DeployOutcome(True, S.SUCCEEDED, "v2", "v1", None)
    assert_no_failures(load, "v1", "v2")
    assert (await world.colors.live(), world.served()) == ("green", "v2")
    assert await world.colors.layout.current() == "v2"
    assert await world.active("green") and not await world.active("blue")  # old colour stopped
    titles = [s.title for s in progress.steps]
    assert titles[titles.index("start t-bg@green.service with v2") :][:4] == [
        "start t-bg@green.service with v2",
        "green healthy: 2 in a row",
        "traffic to green",
        "drain 0.5 s, stop t-bg@blue.service",
    ]

    # v3 fails its health check on the idle colour: traffic never leaves green.
    with RequestLoad(world.proxy_port, threads=4) as load:
        outcome, progress = await world.deploy("v3")
    assert (outcome.state, outcome.rolled_back_to) == (S.ROLLED_BACK, "v2")
    assert outcome.error is not None and "traffic never moved" in outcome.error
    assert_no_failures(load, "v2")
    assert (await world.colors.live(), world.served()) == ("green", "v2")
    assert not await world.active("blue")  # the broken colour was not left running
    assert await world.colors.layout.bad_reason("v3") == outcome.error
    failed = [s.title for s in progress.steps if s.status is StepStatus.FAILED]
    assert failed == ["blue healthy: 2 in a row"]

    # By hand, back to v1: onto blue again, still without a failed request.
    with RequestLoad(world.proxy_port, threads=4) as load:
        outcome, _ = await world.deploy("v1", DeploymentKind.ROLLBACK)
        load.wait_for_body(json.dumps({"version": "v1"}))
    assert outcome == DeployOutcome(True, S.SUCCEEDED, "v1", "v2", None)
    assert_no_failures(load, "v1", "v2")
    assert (await world.colors.live(), world.served()) == ("blue", "v1")
    assert await world.active("blue") and not await world.active("green")
    assert await world.deployments.in_flight() == []


async def test_a_proxy_that_refuses_its_reload_leaves_traffic_where_it_was(world: World) -> None:
    outcome, _ = await world.deploy("v1")
    assert outcome.ok, outcome.error
    good_conf = world.nginx_conf.read_text()
    world.nginx_conf.write_text(good_conf + "\nbogus_directive on;\n")  # reload fails: rc 1
    with RequestLoad(world.proxy_port, threads=2) as load:
        outcome, progress = await world.deploy("v2")
    assert outcome.state is S.ROLLED_BACK, outcome
    assert outcome.error is not None and "Traffic stayed on blue" in outcome.error
    assert "bogus_directive" in outcome.error  # nginx's own words
    assert_no_failures(load, "v1")
    failed = [s.title for s in progress.steps if s.status is StepStatus.FAILED]
    assert failed == ["traffic to green"]
    assert (await world.colors.live(), world.served()) == ("blue", "v1")
    assert await world.colors.layout.current() == "v1"
    assert await world.active("blue") and not await world.active("green")
    # Not the release's fault: it is not marked bad, and deploys once the proxy is fixed.
    assert await world.colors.layout.bad_reason("v2") is None
    world.nginx_conf.write_text(good_conf)
    outcome, _ = await world.deploy("v2")
    assert outcome.ok, outcome.error
    assert (await world.colors.live(), world.served()) == ("green", "v2")


async def test_a_release_failing_before_the_switch_leaves_the_proxy_untouched(
    world: World,
) -> None:
    upstream, error_log = (
        Path(world.colors.config.upstream_file),
        world.nginx_conf.parent / "error.log",
    )

    def reloads() -> int:
        return error_log.read_text(errors="replace").count("reconfiguring")

    before_v1 = reloads()
    outcome, _ = await world.deploy("v1")
    assert outcome.ok, outcome.error
    assert reloads() > before_v1  # the log does show each reload
    before, reloaded = upstream.read_bytes(), reloads()
    outcome, _ = await world.deploy("v3")  # unhealthy on the idle colour
    assert outcome.state is S.ROLLED_BACK and outcome.error is not None
    assert "traffic never moved" in outcome.error
    assert upstream.read_bytes() == before  # byte-identical
    assert reloads() == reloaded  # and nginx was never told to reload
    assert (await world.colors.live(), world.served()) == ("blue", "v1")
