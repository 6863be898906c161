"""SystemdManager against a real systemd (the session's sandbox), through its nsenter host."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.dev import demo_web as testservice
from bot.dev.harness.systemd import SystemdSandbox, service_unit
from services.control.systemd import SystemdManager, parse_timestamp, quote_exec
from services.control.units import (
    ControlTimeout,
    FailedToStart,
    InvalidUnitName,
    PermissionDenied,
    ServiceControlError,
    UnitNotFound,
)
from services.hosts.runner import CommandResult, Host, LocalHost, PrefixHost
from tests.services.control.test_units import HOSTILE_NAMES

SERVICE = [sys.executable, str(Path(testservice.__file__).resolve())]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


async def health(port: int) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/health")
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


class Recorder:
    """A real host that writes down every argv; `tripwire` fails the test on any call."""

    def __init__(self, inner: Host, *, tripwire: bool = False) -> None:
        self.name, self.inner, self.tripwire = "recorder", inner, tripwire
        self.calls: list[tuple[str, ...]] = []

    async def run(self, argv: Sequence[str], **options: Any) -> CommandResult:
        if self.tripwire:
            pytest.fail(f"a command ran for an invalid name: {argv}")
        self.calls.append(tuple(argv))
        return await self.inner.run(argv, **options)


@pytest.fixture
async def systemd(systemd_sandbox: SystemdSandbox) -> AsyncIterator[SystemdManager]:
    yield SystemdManager(systemd_sandbox.host)
    # Every test names its units t-*: stop them (patterns cover instances) and forget them.
    host = systemd_sandbox.host
    await host.run(["systemctl", "stop", "t-*"])
    for path in systemd_sandbox.unit_dir.glob("t-*"):
        path.unlink()
    await host.run(["systemctl", "daemon-reload"])
    await host.run(["systemctl", "reset-failed"])


async def test_install_start_health_journal_stop(
    systemd: SystemdManager, systemd_sandbox: SystemdSandbox
) -> None:
    port = testservice.free_port()
    content = service_unit("--port", str(port))
    path = await systemd.install_unit("t-web.service", content)
    assert path == "/etc/systemd/system/t-web.service"
    assert [p.name for p in systemd_sandbox.unit_dir.iterdir()] == ["t-web.service"]
    assert (systemd_sandbox.unit_dir / "t-web.service").read_text() == content

    await systemd.start("t-web")
    status = await systemd.wait_active("t-web.service")
    assert (status.load_state, status.sub_state) == ("loaded", "running") and status.active
    assert status.active_enter_timestamp is not None
    assert status.active_enter_timestamp.tzinfo is UTC
    assert await health(port) == {"status": "healthy", "pid": status.main_pid}
    assert await systemd.is_active("t-web")
    assert f"listening on 127.0.0.1:{port}" in await systemd.journal_tail("t-web", 10)

    await systemd.stop("t-web")
    assert not await systemd.is_active("t-web")
    assert (await systemd.show("t-web")).main_pid is None
    with pytest.raises(httpx.ConnectError):
        await health(port)


async def test_restart_gives_a_new_main_pid(systemd: SystemdManager) -> None:
    port = testservice.free_port()
    await systemd.install_unit("t-web.service", service_unit("--port", str(port)))
    await systemd.start("t-web")
    before = await systemd.show("t-web")
    await systemd.restart("t-web")
    after = await systemd.wait_active("t-web")
    assert before.main_pid is not None and after.main_pid is not None
    assert after.main_pid != before.main_pid
    assert (await health(port))["pid"] == after.main_pid
    assert before.active_enter_timestamp is not None and after.active_enter_timestamp is not None
    assert after.active_enter_timestamp > before.active_enter_timestamp


async def test_a_failing_start_reports_exit_status_and_journal(systemd: SystemdManager) -> None:
    port = testservice.free_port()
    await systemd.install_unit(
        "t-fail.service", service_unit("--port", str(port), "--exit-code", "3")
    )
    with pytest.raises(FailedToStart) as caught:
        await systemd.start("t-fail")
    error = caught.value
    assert (error.unit, error.exit_status) == ("t-fail.service", 3)
    assert error.argv[-2:] == ("start", "t-fail.service")
    assert "failing at startup with exit code 3" in error.log_tail
    assert "Job for t-fail.service failed" in error.stderr
    status = await systemd.show("t-fail")
    assert (status.active_state, status.exec_main_status) == ("failed", 3)
    assert status.failed and not status.active
    await systemd.reset_failed("t-fail")
    assert (await systemd.show("t-fail")).active_state == "inactive"


async def test_wait_active_sees_the_failure_after_a_queued_start(systemd: SystemdManager) -> None:
    port = testservice.free_port()
    await systemd.install_unit(
        "t-fail.service", service_unit("--port", str(port), "--exit-code", "3")
    )
    await systemd.start("t-fail", wait=False)
    with pytest.raises(FailedToStart) as caught:
        await systemd.wait_active("t-fail", timeout=20)
    assert caught.value.exit_status == 3
    assert "exit code 3" in caught.value.log_tail


async def test_timeouts_of_the_wait_and_of_the_command(
    systemd: SystemdManager, systemd_sandbox: SystemdSandbox
) -> None:
    # Type=notify with a program that never says READY: activating until we give up.
    never_ready = "[Service]\nType=notify\nExecStart=" + quote_exec(["/bin/sleep", "60"]) + "\n"
    await systemd.install_unit("t-slow.service", never_ready)
    await systemd.start("t-slow", wait=False)
    with pytest.raises(ControlTimeout, match="activating"):
        await systemd.wait_active("t-slow", timeout=0.3, interval=0.05)

    impatient = SystemdManager(systemd_sandbox.host, timeout=0.5)
    with pytest.raises(ControlTimeout) as caught:
        await impatient.restart("t-slow")
    assert caught.value.argv[0] == "systemctl"


async def test_restart_always_counts_restarts(systemd: SystemdManager) -> None:
    port = testservice.free_port()
    content = service_unit(
        "--port",
        str(port),
        "--fail-after",
        "0.2",
        service=["Restart=always", "RestartSec=0.1"],
        unit=["StartLimitIntervalSec=0"],  # no start limit: let it flap
    )
    await systemd.install_unit("t-flap.service", content)
    await systemd.start("t-flap")
    deadline = time.monotonic() + 15
    status = await systemd.show("t-flap")
    while status.n_restarts < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        status = await systemd.show("t-flap")
    assert status.n_restarts >= 2


async def test_template_instances_on_two_ports(
    systemd: SystemdManager, systemd_sandbox: SystemdSandbox
) -> None:
    ports = {"blue": testservice.free_port(), "green": testservice.free_port()}
    for color, port in ports.items():
        (systemd_sandbox.work_dir / f"t-app-{color}.env").write_text(f"PORT={port}\n")
    template = "\n".join(
        [
            "[Service]",
            "Type=notify",
            f"EnvironmentFile={systemd_sandbox.work_dir}/t-app-%i.env",
            f"ExecStart={quote_exec([*SERVICE, '--port'])} ${{PORT}}",
        ]
    )
    await systemd.install_unit("t-app@.service", template)
    for color in ports:
        await systemd.start(f"t-app@{color}")
    blue, green = [await systemd.wait_active(f"t-app@{color}.service") for color in ports]
    assert blue.main_pid != green.main_pid
    assert (await health(ports["blue"]))["pid"] == blue.main_pid
    assert (await health(ports["green"]))["pid"] == green.main_pid
    await systemd.stop("t-app@blue")
    assert not await systemd.is_active("t-app@blue")
    assert await systemd.is_active("t-app@green")


async def test_unknown_units(systemd: SystemdManager) -> None:
    for action in (systemd.start, systemd.stop, systemd.restart, systemd.reload, systemd.show):
        with pytest.raises(UnitNotFound) as caught:
            await action("t-nosuch")
        assert caught.value.unit == "t-nosuch.service"
    assert not await systemd.is_active("t-nosuch")


async def test_other_failures_stay_plain_control_errors(systemd: SystemdManager) -> None:
    await systemd.install_unit(
        "t-web.service", service_unit("--port", str(testservice.free_port()))
    )
    await systemd.start("t-web")
    with pytest.raises(ServiceControlError) as caught:
        await systemd.reload("t-web")  # no ExecReload=
    assert type(caught.value) is ServiceControlError
    assert "not applicable" in str(caught.value)


async def test_an_unprivileged_caller_is_denied(systemd_sandbox: SystemdSandbox) -> None:
    nobody = SystemdManager(PrefixHost(NOBODY, inner=systemd_sandbox.host))
    with pytest.raises(PermissionDenied) as caught:
        await nobody.start("t-web")
    assert (
        "authentication required" in caught.value.stderr or "Access denied" in caught.value.stderr
    )


async def test_user_mode_passes_user(systemd_sandbox: SystemdSandbox) -> None:
    recorder = Recorder(systemd_sandbox.host)
    user = SystemdManager(recorder, user_mode=True)
    with pytest.raises(ServiceControlError):  # root has no user manager in the sandbox
        await user.start("t-web")
    await user.journal_tail("t-web")
    assert [call[:2] for call in recorder.calls] == [
        ("systemctl", "--user"),
        ("journalctl", "--user"),
    ]
    with pytest.raises(ValueError, match="unit_dir"):
        await user.install_unit("t-web.service", "[Service]\n")
    assert len(recorder.calls) == 2


async def test_show_extra_properties_and_remove_unit(systemd: SystemdManager) -> None:
    await systemd.install_unit("t-web.service", service_unit("--port", "1"))
    status = await systemd.show("t-web", ["FragmentPath", "Description"])
    assert status.properties["FragmentPath"] == "/etc/systemd/system/t-web.service"
    assert status.properties["Description"] == "opsgate test service"
    with pytest.raises(ValueError):
        await systemd.show("t-web", ["Bad Name"])
    await systemd.remove_unit("t-web.service")
    with pytest.raises(UnitNotFound):
        await systemd.show("t-web")


async def test_quote_exec_survives_systemd(systemd: SystemdManager) -> None:
    words = ["a b", "%i", "$HOME", 'q"uote', "back\\slash", "semi;colon", "$(reboot)"]
    script = "import sys; print('argv', repr(sys.argv[1:]))"
    oneshot = (
        f"[Service]\nType=oneshot\nExecStart={quote_exec([sys.executable, '-c', script, *words])}\n"
    )
    await systemd.install_unit("t-argv.service", oneshot)
    await systemd.start("t-argv")  # oneshot: returns when it has run
    assert f"argv {words!r}" in await systemd.journal_tail("t-argv", 5)


async def test_hostile_names_run_nothing() -> None:
    m = SystemdManager(Recorder(LocalHost(), tripwire=True))
    actions: list[Callable[[str], Awaitable[object]]] = [m.start, m.stop, m.restart, m.reload]
    actions += [m.is_active, m.show, m.journal_tail, m.remove_unit]
    actions += [partial(m.wait_active, timeout=0), partial(m.install_unit, content="[Service]\n")]
    for name in HOSTILE_NAMES:
        for action in actions:
            with pytest.raises(InvalidUnitName):
                await action(name)


def test_parse_timestamp() -> None:
    assert parse_timestamp("Mon 2026-11-23 11:19:50.406679 UTC") == datetime(
        2026, 11, 23, 11, 19, 50, 406679, tzinfo=UTC
    )
    assert parse_timestamp("") is None
    assert parse_timestamp("n/a") is None


def test_quote_exec_refuses_line_breaks() -> None:
    with pytest.raises(ValueError):
        quote_exec(["/bin/echo", "a\nExecStartPre=/bin/sh"])
