"""config/opsgate.service on the real systemd sandbox: Type=notify, a stalled watchdog,
the deploy roots ReadWritePaths opens under the unit's hardening, and the polkit rule its
header documents for privileged commands.

The shipped unit is installed as it is; a drop-in changes only what this machine needs (root
instead of the opsgate user, the venv's opsgate, paths under the test's directory, a home
that stays readable because this Python lives under /root, the real /tmp because a checkout
may live there, and short watchdog times).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bot.dev.harness.systemd import SystemdSandbox
from bot.dev.sandbox import SandboxClient, SandboxThread
from bot.http.server import free_port
from bot.launch import optimized_bytecode_installed
from services.control.systemd import SystemdManager
from tests.e2e.conftest import ALICE, DEPLOYS, OPS_TEXT, TOKEN

UNIT = "opsgate.service"
REPO = Path(__file__).resolve().parents[2]
OPSGATE = Path(sys.executable).parent / "opsgate"


@dataclass(frozen=True)
class Installed:
    manager: SystemdManager
    http_port: int


@pytest.fixture
async def installed(
    systemd_sandbox: SystemdSandbox, sandbox: SandboxThread, client: SandboxClient
) -> AsyncIterator[Installed]:
    work = Path(tempfile.mkdtemp(prefix="unit_", dir=systemd_sandbox.work_dir))
    (work / "ops.toml").write_text(OPS_TEXT)
    port = free_port()
    (work / "opsgate.env").write_text(
        f"OPSGATE_BOT_TOKEN={TOKEN}\nOPSGATE_BOT_API_URL={sandbox.base_url}\n"
        f"OPSGATE_CONFIG={work / 'ops.toml'}\nOPSGATE_DB={work / 'opsgate.db'}\n"
        f"OPSGATE_HTTP_ADDR=127.0.0.1:{port}\n"
    )
    shutil.copy(REPO / "config" / "opsgate.service", systemd_sandbox.unit_dir / UNIT)
    dropin = systemd_sandbox.unit_dir / f"{UNIT}.d"
    dropin.mkdir(exist_ok=True)
    (dropin / "test.conf").write_text(
        "[Service]\nUser=root\nGroup=root\n"
        f"EnvironmentFile=\nEnvironmentFile={work / 'opsgate.env'}\nEnvironment=\n"
        f"WorkingDirectory={work}\nExecStart=\nExecStart={OPSGATE} run\n"
        f"ReadWritePaths={work}\nProtectHome=read-only\nPrivateTmp=no\n"
        "WatchdogSec=2s\nTimeoutAbortSec=1s\nRestartSec=0.2s\n"
    )
    manager = SystemdManager(systemd_sandbox.host)
    await manager.daemon_reload()
    try:
        yield Installed(manager, port)
    finally:
        await systemd_sandbox.host.run(["systemctl", "stop", UNIT])
        await systemd_sandbox.host.run(["systemctl", "reset-failed", UNIT])
        (systemd_sandbox.unit_dir / UNIT).unlink()
        shutil.rmtree(dropin)
        await manager.daemon_reload()
        shutil.rmtree(work, ignore_errors=True)


async def health(port: int) -> int:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"http://127.0.0.1:{port}/health", timeout=5)).status_code


async def test_starts_as_notify_and_a_stalled_watchdog_restarts_it(
    installed: Installed, systemd_sandbox: SystemdSandbox, client: SandboxClient
) -> None:
    manager = installed.manager
    # `systemctl start` of a Type=notify unit returns once READY=1 came: answering already.
    await manager.start(UNIT)
    first = await manager.show(UNIT, ["Type", "WatchdogUSec", "NRestarts", "MainPID"])
    assert first.active, first
    assert (first.properties["Type"], first.properties["WatchdogUSec"]) == ("notify", "2s")
    assert first.n_restarts == 0
    assert await health(installed.http_port) == 200
    # On the optimized bytecode `opsgate run` restarted itself under -OO (bot/launch.py) in the
    # same process: the main PID systemd watches, whose READY=1 it took.
    cmdline = await systemd_sandbox.host.run(["cat", f"/proc/{first.main_pid}/cmdline"])
    assert cmdline.ok, cmdline.stderr
    argv = cmdline.stdout.split("\0")
    assert optimized_bytecode_installed() or not os.environ.get("CI"), "make runs precompile"
    assert ("-OO" in argv) == optimized_bytecode_installed(), argv
    assert argv[-3:] == [str(OPSGATE), "run", ""], argv
    reply = await client.reply_after(ALICE, DEPLOYS, "/whoami", timeout=30)
    assert str(ALICE) in reply.text

    # Stopped (SIGSTOP), it feeds no watchdog: systemd aborts it and starts it again.
    stall = await systemd_sandbox.host.run(["systemctl", "kill", "--signal=SIGSTOP", UNIT])
    assert stall.ok, stall.stderr
    for _ in range(300):
        now = await manager.show(UNIT, ["NRestarts", "MainPID"])
        if now.n_restarts >= 1 and now.active and now.main_pid != first.main_pid:
            break
        await asyncio.sleep(0.1)
    assert now.n_restarts == 1 and now.active, now
    assert now.main_pid != first.main_pid
    journal = await manager.journal_tail(UNIT, 50)
    assert "Watchdog timeout" in journal, journal
    assert await health(installed.http_port) == 200
    again = await client.reply_after(ALICE, DEPLOYS, "/whoami", timeout=30)
    assert str(ALICE) in again.text


def hardening(unit_text: str) -> list[str]:
    """The unit's sandboxing settings (from its hardening block to [Install]), as systemd-run
    properties; the state directory is left out, so nothing is made under /var/lib."""
    block = unit_text.split("# Hardening", 1)[1].split("[Install]", 1)[0]
    lines = [line.strip() for line in block.splitlines()]
    settings = [line for line in lines if "=" in line and not line.startswith("#")]
    return [s for s in settings if not s.startswith("StateDirectory")]


async def test_a_deploy_root_in_read_write_paths_is_writable_and_others_are_not(
    systemd_sandbox: SystemdSandbox,
) -> None:
    """What the unit's header tells an admin to add (ReadWritePaths=/srv/app in a drop-in)
    opens that root, and only that root, under the shipped hardening."""
    work = Path(tempfile.mkdtemp(prefix="roots_", dir=systemd_sandbox.work_dir))
    listed, unlisted = work / "app", work / "other"
    listed.mkdir()
    unlisted.mkdir()
    properties = hardening((REPO / "config" / "opsgate.service").read_text())
    assert "ProtectSystem=strict" in properties and "NoNewPrivileges=yes" in properties
    properties.append(f"ReadWritePaths={listed}")
    if str(work).startswith(("/tmp/", "/var/tmp/")):
        # A checkout under /tmp (a CI clone) puts these roots there, and PrivateTmp would hide
        # them; it is not what this test is about (deploy roots do not live in /tmp).
        properties = [p for p in properties if not p.startswith("PrivateTmp")]
    argv = ["systemd-run", "--wait", "--pipe", "--quiet", "--collect"]
    argv += [f"--property={setting}" for setting in properties]
    try:
        for root in (listed, unlisted):
            touch = [*argv, "/usr/bin/touch", str(root / "releases")]
            result = await systemd_sandbox.host.run(touch, timeout=30)
            assert result.ok == (root == listed), (root, result.stderr)
        assert (listed / "releases").exists()
        assert not (unlisted / "releases").exists()
        assert "Read-only file system" in result.stderr
    finally:
        shutil.rmtree(work, ignore_errors=True)


def documented_polkit_rule(unit_text: str, user: str, units: list[str]) -> str:
    """The polkit rule the unit's header gives, for `user` and `units`."""
    lines = unit_text.split("[Unit]", 1)[0].splitlines()
    start = next(i for i, line in enumerate(lines) if "polkit.addRule" in line)
    end = next(i for i, line in enumerate(lines) if i > start and line.strip() == "#   });")
    rule = "\n".join(line.removeprefix("#   ") for line in lines[start : end + 1]) + "\n"
    assert '"web.service", "worker.service"' in rule and 'subject.user == "opsgate"' in rule
    listed = ", ".join(f'"{unit}"' for unit in units)
    rule = rule.replace('"web.service", "worker.service"', listed)
    return rule.replace('subject.user == "opsgate"', f'subject.user == "{user}"')


async def test_the_documented_polkit_rule_lets_the_hardened_unit_restart_its_units_only(
    systemd_sandbox: SystemdSandbox,
) -> None:
    """Under the unit's hardening (NoNewPrivileges, no capabilities) and not root, systemctl
    restarts a unit the header's polkit rule names, and is refused any other."""
    host = systemd_sandbox.host
    unit_text = (REPO / "config" / "opsgate.service").read_text()
    work = Path(tempfile.mkdtemp(prefix="polkit_", dir=systemd_sandbox.work_dir))
    rules = work / "rules.d"
    rules.mkdir()
    allowed, other = "pk-allowed.service", "pk-other.service"
    (rules / "50-opsgate.rules").write_text(documented_polkit_rule(unit_text, "nobody", [allowed]))
    for path in (work, rules, rules / "50-opsgate.rules"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    for unit in (allowed, other):
        (systemd_sandbox.unit_dir / unit).write_text("[Service]\nExecStart=/bin/sleep infinity\n")
    manager = SystemdManager(host)
    # Only inside the sandbox's own mounts: the machine's /etc/polkit-1 is never touched.
    mounted = await host.run(["mount", "--bind", str(rules), "/etc/polkit-1/rules.d"])
    assert mounted.ok, mounted.stderr
    try:
        await manager.daemon_reload()
        started = await host.run(["systemctl", "start", "dbus.socket", "polkit.service"])
        assert started.ok, started.stderr
        await manager.start(allowed)
        await manager.start(other)
        argv = ["systemd-run", "--wait", "--pipe", "--quiet", "--collect", "--property=User=nobody"]
        argv += [f"--property={setting}" for setting in hardening(unit_text)]
        before = await manager.show(allowed, ["MainPID"])
        ok = await host.run([*argv, "/bin/systemctl", "--no-ask-password", "restart", allowed])
        assert ok.ok, ok.stderr
        assert (await manager.show(allowed, ["MainPID"])).main_pid != before.main_pid
        refused = await host.run([*argv, "/bin/systemctl", "--no-ask-password", "restart", other])
        assert not refused.ok
        assert "Access denied" in refused.stderr or "authentication" in refused.stderr, refused
    finally:
        for unit in (allowed, other):
            await host.run(["systemctl", "stop", unit])
            (systemd_sandbox.unit_dir / unit).unlink()
        await host.run(["umount", "/etc/polkit-1/rules.d"])
        await host.run(["systemctl", "stop", "polkit.service"])
        await manager.daemon_reload()
        shutil.rmtree(work, ignore_errors=True)
