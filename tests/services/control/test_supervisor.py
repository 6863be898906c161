"""SupervisorManager against a real supervisord (the session's private one)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.dev import demo_web as testservice
from bot.dev.harness.supervisord import SupervisordSandbox
from services.control.supervisor import (
    ProgramState,
    SupervisorManager,
    parse_status_line,
    program_section,
)
from services.control.units import (
    FailedToStart,
    InvalidUnitName,
    PermissionDenied,
    ServiceControlError,
    UnitNotFound,
)
from services.hosts.runner import LocalHost, PrefixHost
from tests.services.control.test_units import HOSTILE_NAMES

SERVICE = [sys.executable, str(Path(testservice.__file__).resolve())]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


async def health(port: int) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/health")
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def wait_healthy(port: int) -> dict[str, Any]:
    """RUNNING means alive for startsecs, not listening: poll the port (deadline only)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return await health(port)
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


@pytest.fixture
async def supervisor(supervisord_sandbox: SupervisordSandbox) -> AsyncIterator[SupervisorManager]:
    manager = supervisord_sandbox.manager()
    yield manager
    # Each test adds its own programs: remove them (update stops them) for the next one.
    for path in supervisord_sandbox.conf_dir.glob("*.conf"):
        await manager.remove_program(path.stem)


async def add_web(supervisor: SupervisorManager, name: str = "web", *args: str) -> int:
    port = testservice.free_port()
    # startsecs=0: start returns at once, and wait_healthy polls the port instead.
    section = program_section(name, [*SERVICE, "--port", str(port), *args], startsecs=0)
    await supervisor.add_program(name, section)
    return port


async def test_add_start_health_status_stop(
    supervisor: SupervisorManager, supervisord_sandbox: SupervisordSandbox
) -> None:
    port = await add_web(supervisor)
    assert [p.name for p in supervisord_sandbox.conf_dir.iterdir()] == ["web.conf"]
    assert (await supervisor.status("web")).state is ProgramState.STOPPED  # autostart=false

    await supervisor.start("web")
    status = await supervisor.status("web")
    assert status.running and status.pid is not None
    assert status.description.startswith(f"pid {status.pid}, uptime")
    assert await supervisor.pid("web") == status.pid
    assert await wait_healthy(port) == {"status": "healthy", "pid": status.pid}
    assert f"listening on 127.0.0.1:{port}" in await supervisor.tail("web")

    await supervisor.stop("web")
    assert (await supervisor.status("web")).state is ProgramState.STOPPED
    assert await supervisor.pid("web") is None
    await supervisor.stop("web")  # already stopped: still fine


async def test_restart_gives_a_new_pid(supervisor: SupervisorManager) -> None:
    port = await add_web(supervisor)
    await supervisor.start("web")
    before = await supervisor.pid("web")
    await supervisor.restart("web")
    after = await supervisor.pid("web")
    assert before is not None and after is not None and after != before
    assert (await wait_healthy(port))["pid"] == after


async def test_a_failing_start_reports_exit_status_and_log(supervisor: SupervisorManager) -> None:
    port = testservice.free_port()
    argv = [*SERVICE, "--port", str(port), "--exit-code", "3"]
    # startsecs=2: with 1, supervisord may call a fast death RUNNING (recipe's pitfall).
    await supervisor.add_program("bad", program_section("bad", argv, startretries=0))
    with pytest.raises(FailedToStart) as caught:
        await supervisor.start("bad")
    error = caught.value
    assert (error.unit, error.exit_status) == ("bad", 3)
    assert "failing at startup with exit code 3" in error.log_tail
    assert "spawn error" in str(error)
    # FATAL as a rule; EXITED when a loaded machine took the program past startsecs before it
    # died (supervisord then counts a start, then an exit). Either way it is not running.
    assert (await supervisor.status("bad")).state in (ProgramState.FATAL, ProgramState.EXITED)
    with pytest.raises(FailedToStart):
        await supervisor.wait_running("bad", timeout=5)


async def test_a_program_that_dies_later_shows_its_exit_status(
    supervisor: SupervisorManager,
) -> None:
    port = await add_web(supervisor, "late", "--fail-after", "0.2", "--exit-code", "5")
    await supervisor.start("late")
    deadline = time.monotonic() + 10
    while (await supervisor.status("late")).state is not ProgramState.EXITED:
        assert time.monotonic() < deadline, "late never exited"
        await asyncio.sleep(0.1)
    assert await supervisor.exit_status("late") == 5
    assert "exit code 5" in await supervisor.tail("late")
    with pytest.raises(httpx.ConnectError):
        await health(port)


async def test_update_with_autostart_and_wait_running(supervisor: SupervisorManager) -> None:
    port = testservice.free_port()
    argv = [*SERVICE, "--port", str(port)]
    await supervisor.add_program("auto", program_section("auto", argv, autostart=True, startsecs=1))
    status = await supervisor.wait_running("auto", timeout=10)
    assert (await wait_healthy(port))["pid"] == status.pid
    await supervisor.remove_program("auto")
    with pytest.raises(UnitNotFound):
        await supervisor.status("auto")


async def test_unknown_names(supervisor: SupervisorManager) -> None:
    for action in (supervisor.start, supervisor.stop, supervisor.restart, supervisor.status):
        with pytest.raises(UnitNotFound):
            await action("nosuch")
    with pytest.raises(UnitNotFound):
        await supervisor.pid("nosuch")
    with pytest.raises(UnitNotFound):
        await supervisor.tail("nosuch")
    with pytest.raises(UnitNotFound):
        await supervisor.update("nosuch")


async def test_an_unprivileged_caller_is_denied(supervisord_sandbox: SupervisordSandbox) -> None:
    nobody = SupervisorManager(
        PrefixHost(NOBODY),
        str(supervisord_sandbox.config_path),
        supervisorctl=supervisord_sandbox.supervisorctl,
    )
    with pytest.raises(PermissionDenied):
        await nobody.status("web")


async def test_supervisord_down_is_a_control_error(tmp_path: Path) -> None:
    config = tmp_path / "supervisord.conf"
    config.write_text(f"[supervisorctl]\nserverurl=unix://{tmp_path}/gone.sock\n")
    bin_dir = Path(sys.executable).parent
    down = SupervisorManager(LocalHost(), str(config), supervisorctl=str(bin_dir / "supervisorctl"))
    with pytest.raises(ServiceControlError) as caught:
        await down.start("web")
    assert type(caught.value) is ServiceControlError
    assert "no such file" in str(caught.value)


async def test_hostile_names_run_nothing(supervisord_sandbox: SupervisordSandbox) -> None:
    class Tripwire:
        name = "tripwire"

        async def run(self, argv: object, **options: object) -> None:
            pytest.fail(f"a command ran for an invalid name: {argv}")

    manager = SupervisorManager(Tripwire(), "/nonexistent.conf", conf_dir="/nonexistent")  # type: ignore[arg-type]
    actions = ("start", "stop", "restart", "status", "pid", "tail", "exit_status", "update")
    for name in HOSTILE_NAMES:
        for action in actions:
            with pytest.raises(InvalidUnitName):
                await getattr(manager, action)(name)
        with pytest.raises(InvalidUnitName):
            await manager.add_program(name, "")
        with pytest.raises(InvalidUnitName):
            await manager.remove_program(name)


def test_parse_status_lines() -> None:
    running = parse_status_line(
        "web                              RUNNING   pid 16137, uptime 0:00:12"
    )
    assert (running.name, running.state, running.pid) == ("web", ProgramState.RUNNING, 16137)
    fatal = parse_status_line("bad  FATAL     Exited too quickly (process log may have details)")
    assert (fatal.state, fatal.pid) == (ProgramState.FATAL, None)
    assert fatal.description == "Exited too quickly (process log may have details)"
    with pytest.raises(ValueError):
        parse_status_line("unix:///tmp/x.sock no such file")


def test_program_section_escapes_and_refuses_injection() -> None:
    section = program_section("web", ["/bin/echo", "50%", "a b"], environment={"K": "v%"})
    assert "command=/bin/echo 50%% 'a b'\n" in section
    assert 'environment=K="v%%"\n' in section
    with pytest.raises(ValueError):
        program_section("web", ["/bin/echo", "x\n[program:evil]"])
    with pytest.raises(ValueError):
        program_section("web", ["/bin/true"], environment={"K": 'a",EVIL="b'})
