"""The fleet harness: four real hosts, each its own systemd reached over real ssh, as opsgate's
ops file names them; and sandboxes that run units of the same name at the same time."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bot.dev.harness.fleet import Fleet, install_app_unit, remove_app_unit
from bot.dev.harness.gitrepo import make_app_repo
from bot.dev.harness.systemd import WORK_ROOT, SystemdSandbox, booted
from services.control.systemd import SystemdManager
from services.hosts.registry import Hosts
from services.hosts.runner import CommandResult
from services.releases.layout import GitSource, ReleaseLayout

# With the systemd_sandbox tests: one worker boots every sandbox of a run (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("systemd")


@pytest.fixture
async def hosts(fleet: Fleet) -> AsyncIterator[Hosts]:
    """h1..h4 as opsgate builds them from the ops file: ssh, multiplexed."""
    registry = fleet.registry()
    yield registry
    await registry.aclose()


async def on_all(hosts: Hosts, fleet: Fleet, argv: list[str]) -> list[CommandResult]:
    return await asyncio.gather(*(hosts.get(h.name).run(argv) for h in fleet.hosts))


async def test_each_host_is_its_own_systemd_over_ssh(fleet: Fleet, hosts: Hosts) -> None:
    comms = await on_all(hosts, fleet, ["cat", "/proc/1/comm"])
    assert [(r.ok, r.stdout.strip()) for r in comms] == [(True, "systemd")] * len(fleet.hosts)
    states = await on_all(hosts, fleet, ["systemctl", "is-system-running"])
    assert all(r.stdout.strip() in ("running", "degraded") for r in states), states
    # The PID namespace a command over ssh lands in is that host's sandbox, each a different one.
    spaces = await on_all(hosts, fleet, ["readlink", "/proc/self/ns/pid"])
    expected = [os.readlink(f"/proc/{h.sandbox.pid}/ns/pid") for h in fleet.hosts]
    assert [r.stdout.strip() for r in spaces] == expected
    assert len(set(expected)) == len(fleet.hosts)


async def test_each_host_has_its_own_srv(fleet: Fleet, hosts: Hosts) -> None:
    name = f"marker-{uuid.uuid4().hex[:8]}"
    fleet.hosts[1].outside(f"/srv/{name}").write_text("h2's own\n")
    try:
        seen = await on_all(hosts, fleet, ["cat", f"/srv/{name}"])
        assert [r.ok for r in seen] == [h.name == "h2" for h in fleet.hosts]
        assert seen[1].stdout == "h2's own\n"
        # Written over ssh on h3, it is in h3's srv_dir outside and nowhere else.
        wrote = await hosts.get("h3").run(["touch", f"/srv/{name}-h3"])
        assert wrote.ok, wrote.summary
        assert [(h.srv_dir / f"{name}-h3").exists() for h in fleet.hosts] == [
            h.name == "h3" for h in fleet.hosts
        ]
    finally:
        for host in fleet.hosts:
            for path in host.srv_dir.glob(f"{name}*"):
                path.unlink()


async def test_the_same_unit_runs_on_every_host(fleet: Fleet, hosts: Hosts) -> None:
    repo = make_app_repo(fleet.shared_dir / f"repo-{uuid.uuid4().hex[:8]}")
    root = f"/srv/app-{uuid.uuid4().hex[:8]}"
    app = await install_app_unit(fleet, "t-fleet.service", root=root, port=fleet.free_port())
    try:
        # Released over ssh as a deploy would: git clone on each host into its own /srv.
        layouts = [ReleaseLayout(hosts.get(h.name), root) for h in fleet.hosts]
        await asyncio.gather(*(layout.prepare("v1", GitSource(repo.url)) for layout in layouts))
        await asyncio.gather(*(layout.switch("v1") for layout in layouts))
        managers = [SystemdManager(hosts.get(h.name)) for h in fleet.hosts]
        await asyncio.gather(*(manager.start(app.unit) for manager in managers))
        active = await asyncio.gather(*(m.is_active(app.unit) for m in managers))
        assert active == [True] * len(fleet.hosts)

        app.broken_marker(fleet.hosts[2], "v1").touch()  # h3 only
        async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
            answers = [await http.get(app.health_url(h)) for h in fleet.hosts]
        assert [a.status_code for a in answers] == [
            503 if h.name == "h3" else 200 for h in fleet.hosts
        ]
        assert {a.json()["version"] for a in answers} == {"v1"}
        assert all(h.outside(f"{root}/current/app.py").is_file() for h in fleet.hosts)
    finally:
        await remove_app_unit(fleet, app)
        for host in fleet.hosts:
            shutil.rmtree(host.outside(root), ignore_errors=True)
        shutil.rmtree(repo.path, ignore_errors=True)


def systemd_cgroup(proc_cgroup: str) -> str:
    """systemd's own hierarchy in a /proc/PID/cgroup text: name=systemd (v1), else v2's."""
    paths = dict(line.split(":", 2)[1:] for line in proc_cgroup.splitlines())
    return paths.get("name=systemd", paths.get("", ""))


def cgroup_of(pid: int) -> str:
    return systemd_cgroup(Path(f"/proc/{pid}/cgroup").read_text())


SAME_UNIT = """[Unit]
Description=same name in two sandboxes
StartLimitIntervalSec=0
[Service]
ExecStart=/bin/sleep 600
"""


async def cycle(sandbox: SystemdSandbox, unit: str, times: int) -> list[str]:
    """Stop and start `unit` `times` times; the states it was in after each start."""
    manager = SystemdManager(sandbox.host)
    states = []
    for _ in range(times):
        await manager.stop(unit)
        await sandbox.host.run(["systemctl", "start", unit])
        status = await manager.show(unit)
        states.append(f"{status.active_state}/{status.exec_main_status}")
    return states


async def unit_cgroup(sandbox: SystemdSandbox, unit: str) -> str:
    status = await SystemdManager(sandbox.host).show(unit)
    seen = await sandbox.host.run(["cat", f"/proc/{status.main_pid}/cgroup"])
    return systemd_cgroup(seen.stdout)


async def test_two_sandboxes_run_units_of_the_same_name_at_once() -> None:
    # Before each sandbox had a cgroup of its own, both used /system.slice/t-same.service of
    # the shared tree: one's stop removed the cgroup the other was starting in (status 219).
    base = WORK_ROOT / f"cgroups-{os.getpid()}"
    unit = "t-same.service"
    try:
        with (
            booted(base=base / "a", name="a") as a,
            booted(base=base / "b", name="b") as b,
        ):
            own = [cgroup_of(a.pid), cgroup_of(b.pid)]
            assert all("/opsgate-sandbox-" in path for path in own) and own[0] != own[1]
            for sandbox in (a, b):
                await SystemdManager(sandbox.host).install_unit(unit, SAME_UNIT)
            states = await asyncio.gather(cycle(a, unit, 15), cycle(b, unit, 15))
            assert list(states) == [["active/0"] * 15] * 2
            # The kernel's cgroup of each unit's process: one of its own in each sandbox.
            units = [await unit_cgroup(sandbox, unit) for sandbox in (a, b)]
            assert units[0] != units[1]
            assert all(path.endswith("/system.slice/t-same.service") for path in units), units
            await SystemdManager(a.host).stop(unit)
            assert await SystemdManager(b.host).is_active(unit)
            tops = [Path(line) for line in (base / "a" / "cgroups").read_text().splitlines()]
            assert tops
        assert not [top for top in tops if top.exists()]  # removed with the sandbox
    finally:
        shutil.rmtree(base, ignore_errors=True)
