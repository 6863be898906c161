"""A fleet of real test hosts on this machine (recipe: fleet-hosts.md).

Each host is its own systemd sandbox (systemd.py) with its own sshd running inside that
namespace, on a loopback address of its own (127.0.0.21, .22, ...: every 127/8 address is
local), so a command that arrives over ssh sees that host's PID 1 and systemd. Each host has
its own /srv (FleetHost.srv_dir outside), so release roots differ per host, and its own, nearly
empty, root ~/.bashrc; the rest of the disk is shared, and so is the network namespace.
Commands over ssh get sshd's default PATH (/usr/local/bin:/usr/bin:/bin), no pyenv.

    with booted_fleet(4, base) as fleet:
        config = parse_ops_text(fleet.ops_hosts_toml())       # [hosts.h1] ... [hosts.h4]
        hosts = hosts_from_config(config.hosts, control_dir=fleet.control_dir)
        app = await install_app_unit(fleet, "t-app.service")  # ROOT/current/app.py, not started
        app.health_url(fleet.hosts[0])                        # http://127.0.0.21:PORT/health

sshd's files (config, host key, authorized_keys) are under `base`, which the namespaces see;
the client's (key, known_hosts, ControlPath sockets) are in a short dir under /tmp, outside.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import NoReturn

import pytest

from bot.dev.harness.gitrepo import app_argv
from bot.dev.harness.sshd import (
    SSHD,
    START_TIMEOUT_S,
    SshdUnavailable,
    keygen,
    require_tools,
    write_config,
)
from bot.dev.harness.systemd import SystemdSandbox, boot, kill, unavailable_reason
from config.inventory import HostConfig
from config.opsfile import parse_ops_text
from services.control.systemd import SystemdManager, quote_exec
from services.hosts.registry import Hosts, host_from_config, hosts_from_config
from services.hosts.ssh import SshHost, remote_command

SSH_USER = "root"
SRV = "/srv"
# sshd runs commands with `bash -c`, and bash then reads ~/.bashrc: the machine's may be slow
# (pyenv init: 0.2 s of CPU per command here). Each host has its own, as a fresh host would.
BASHRC = Path("/root/.bashrc")
HOST_BASHRC = "# fleet test host: root's own .bashrc, not the machine's\n"
HOST_KEY = "ssh_host_ed25519_key"
CHECK_TIMEOUT_S = 30.0
BIND_ATTEMPTS = 3
STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class FleetHost:
    name: str  # h1, h2, ...: its name in ops_hosts_toml()
    address: str  # 127.0.0.21, ...: its sshd and its services listen here
    ssh_port: int
    sandbox: SystemdSandbox  # .host runs argv inside directly (nsenter), without ssh
    srv_dir: Path  # this host's /srv, seen from outside
    sshd_log: Path

    def outside(self, path: str) -> Path:
        """Where `path` (under this host's /srv) is from outside, for the test to read/write."""
        relative = PurePosixPath(path).relative_to(SRV)  # ValueError elsewhere: that is shared
        return self.srv_dir / relative

    def url(self, port: int, path: str = "/") -> str:
        return f"http://{self.address}:{port}{path}"


@dataclass(frozen=True)
class Fleet:
    hosts: tuple[FleetHost, ...]
    identity_file: str  # one client key for every host, root's authorized key on each
    known_hosts_file: str  # every host's key, written at boot
    control_dir: str  # short: ssh ControlPath sockets (hosts_from_config(control_dir=...))
    shared_dir: Path  # seen at the same path on every host and outside (e.g. a git repo)

    def host(self, name: str) -> FleetHost:
        return next(host for host in self.hosts if host.name == name)

    def ops_hosts_toml(self) -> str:
        """A [hosts.<name>] table per host, for an ops file: root over ssh with the fleet key."""
        return "".join(
            f"[hosts.{host.name}]\n"
            f'address = "{host.address}"\n'
            f'user = "{SSH_USER}"\n'
            f"port = {host.ssh_port}\n"
            f'identity_file = "{self.identity_file}"\n'
            f'known_hosts_file = "{self.known_hosts_file}"\n'
            "accept_new_host_keys = true\n"
            for host in self.hosts
        )

    def host_configs(self) -> dict[str, HostConfig]:
        return dict(parse_ops_text(self.ops_hosts_toml(), "<fleet>").hosts)

    def registry(self, *, multiplex: bool = True) -> Hosts:
        """The hosts as opsgate builds them from the ops file; `await hosts.aclose()` after.

        Registries share control_dir, so one's aclose ends the ssh master connections the
        others use: commands they have in flight then fail (later ones start a new master)."""
        return hosts_from_config(
            self.host_configs(), control_dir=self.control_dir if multiplex else None
        )

    def free_port(self) -> int:
        """A TCP port free on every host's address (for one service on each)."""
        return _free_port([host.address for host in self.hosts])


@dataclass
class _Started:
    """What a boot started so far: teardown undoes exactly this, even after a failure."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sandboxes: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)
    sshds: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def add_sandbox(self, unshare: subprocess.Popen[bytes], base: Path) -> None:
        with self.lock:
            self.sandboxes.append((unshare, base))

    def add_sshd(self, proc: subprocess.Popen[bytes]) -> None:
        with self.lock:
            self.sshds.append(proc)

    def stop(self) -> None:
        for proc in self.sshds:  # before the sandboxes, so it ends by its own SIGTERM
            _stop_group(proc)
        for unshare, base in self.sandboxes:
            kill(unshare, base)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return  # reaped (sshd gone with it): its group id may be someone else's by now
    # nsenter forwards no signal to its child: signal the session's group (sshd's listener
    # included; connections' sshd children leave it, and die with the namespace).
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _free_port(addresses: list[str], tries: int = 20) -> int:
    for _ in range(tries):
        with socket.socket() as probe:
            probe.bind((addresses[0], 0))
            port = int(probe.getsockname()[1])
        try:
            for address in addresses[1:]:
                with socket.socket() as other:
                    other.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no TCP port free on all of {addresses}")


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the fleet tests: {reason}", pytrace=False)
    pytest.skip(f"no test fleet: {reason}")


def _boot_host(
    name: str, address: str, port: int, base: Path, client_pub: Path, started: _Started
) -> FleetHost:
    srv_dir, sshd_dir = base / "srv", base / "sshd"
    for directory in (srv_dir, sshd_dir):
        directory.mkdir(parents=True)
    keygen(sshd_dir / HOST_KEY)
    shutil.copy(client_pub, sshd_dir / "authorized_keys")
    binds = [(srv_dir, SRV)]
    if BASHRC.is_file():
        (base / "bashrc").write_text(HOST_BASHRC)
        binds.append((base / "bashrc", str(BASHRC)))
    sandbox, unshare = boot(base, binds=binds, name=name)
    started.add_sandbox(unshare, base)
    inside = list(sandbox.host.prefix)
    # /run is the sandbox's own tmpfs: sshd's privilege separation dir must be made there.
    _run_inside(name, inside, ["mkdir", "-p", "-m", "0755", "/run/sshd"])
    log_file = sshd_dir / "sshd.log"
    for attempt in range(BIND_ATTEMPTS):
        # The port was free when chosen, but another fleet (another xdist worker, say) may
        # have taken it since: then this host gets a port of its own.
        port = port if attempt == 0 else _free_port([address])
        config = write_config(sshd_dir, port, address)
        _run_inside(name, inside, [SSHD, "-t", "-f", str(config)])
        with log_file.open("ab") as log:
            proc = subprocess.Popen(
                [*inside, SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: teardown signals sshd through it
            )
        started.add_sshd(proc)
        try:
            _wait_sshd(proc, log_file, address, port)
        except SshdUnavailable:
            if "Address already in use" not in log_file.read_text(errors="replace"):
                raise
            log_file.write_text("")  # a retry must not see this attempt's error
            continue
        return FleetHost(name, address, port, sandbox, srv_dir, log_file)
    raise RuntimeError(f"{name}: sshd found no free port on {address} in {BIND_ATTEMPTS} tries")


def _wait_sshd(proc: subprocess.Popen[bytes], log_file: Path, address: str, port: int) -> None:
    # Until sshd says so: a connect alone may reach whoever else listens on that port.
    ready = f"Server listening on {address} port {port}."
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log_file.read_text(errors="replace")
        if ready in text:
            return
        if proc.poll() is not None:
            raise SshdUnavailable(f"sshd exited with {proc.returncode}: {text.strip()}")
        time.sleep(0.02)  # fixture code, before any event loop: blocking is fine here
    raise SshdUnavailable(f"sshd did not listen on {address}:{port} within {START_TIMEOUT_S}s")


def _run_inside(name: str, inside: list[str], argv: list[str]) -> None:
    done = subprocess.run([*inside, *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SshdUnavailable(f"{name}: {' '.join(argv)}: {done.stderr.strip()}")


def _check_ssh(fleet: Fleet, host: FleetHost) -> None:
    """One command over ssh exactly as opsgate would send it: the host is up end to end."""
    ssh = host_from_config(host.name, fleet.host_configs()[host.name])
    assert isinstance(ssh, SshHost)
    argv = ssh.ssh_argv(remote_command(["cat", "/proc/1/comm"]))
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S, check=False
    )
    if done.returncode != 0 or done.stdout.strip() != "systemd":
        raise RuntimeError(
            f"{host.name}: ssh check failed ({done.returncode}): {done.stdout!r} "
            f"{done.stderr.strip()}\nsshd log:\n{host.sshd_log.read_text(errors='replace')}"
        )


def _known_hosts_line(host: FleetHost) -> str:
    key = (host.sshd_log.parent / f"{HOST_KEY}.pub").read_text().split()
    where = host.address if host.ssh_port == 22 else f"[{host.address}]:{host.ssh_port}"
    return f"{where} {key[0]} {key[1]}\n"


@contextmanager
def booted_fleet(count: int, base: Path, *, first_octet: int = 21) -> Iterator[Fleet]:
    """Boot `count` hosts h1..hN on 127.0.0.<first_octet>... in parallel, yield, tear down.

    `base` (outside /tmp, /run, /var/tmp) is emptied before and removed after. Skips when this
    machine cannot do it; under CI=true fails instead."""
    if count < 1 or not 1 <= first_octet <= 255 - count:
        raise ValueError(f"{count} hosts from 127.0.0.{first_octet} do not fit in 127.0.0.0/24")
    reason = unavailable_reason()
    if reason is None:
        try:
            require_tools()
        except SshdUnavailable as exc:
            reason = str(exc)
    if reason is not None:
        _unavailable(reason)
    shutil.rmtree(base, ignore_errors=True)
    shared_dir = base / "shared"
    shared_dir.mkdir(parents=True)
    # Short, or ControlPath sockets made in it exceed the socket path limit.
    client_dir = Path(tempfile.mkdtemp(prefix="ogf-", dir="/tmp"))
    started = _Started()
    try:
        identity = client_dir / "id_ed25519"
        keygen(identity)
        (client_dir / "cm").mkdir()
        addresses = [f"127.0.0.{first_octet + i}" for i in range(count)]
        port = _free_port(addresses)
        with ThreadPoolExecutor(max_workers=count) as pool:
            futures = [
                pool.submit(
                    _boot_host,
                    f"h{i + 1}",
                    address,
                    port,
                    base / f"h{i + 1}",
                    identity.with_suffix(".pub"),
                    started,
                )
                for i, address in enumerate(addresses)
            ]
            # Every boot ends (or fails) before the pool closes, so teardown sees all it made.
            errors = [future.exception() for future in futures]
        failed = [error for error in errors if error is not None]
        if failed:
            if all(isinstance(error, SshdUnavailable) for error in failed):
                _unavailable("; ".join(map(str, failed)))
            raise failed[0]
        hosts = tuple(future.result() for future in futures)
        known_hosts = client_dir / "known_hosts"
        known_hosts.write_text("".join(_known_hosts_line(host) for host in hosts))
        fleet = Fleet(hosts, str(identity), str(known_hosts), str(client_dir / "cm"), shared_dir)
        with ThreadPoolExecutor(max_workers=count) as pool:
            list(pool.map(lambda host: _check_ssh(fleet, host), hosts))
        yield fleet
    finally:
        started.stop()
        shutil.rmtree(client_dir, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


@dataclass(frozen=True)
class FleetApp:
    """The same unit on every host: ROOT/current/app.py (gitrepo.APP_PY) on host address:port."""

    unit: str
    root: str  # inside each host, e.g. /srv/app: ROOT/releases/<version>, ROOT/current
    port: int

    def health_url(self, host: FleetHost) -> str:
        return host.url(self.port, "/health")

    def broken_marker(self, host: FleetHost, version: str) -> Path:
        """Create this (outside) and `version`'s /health answers 503 on `host` only."""
        return host.outside(f"{self.root}/broken-{version}")


def app_unit_text(host: FleetHost, root: str, port: int, python: str = sys.executable) -> str:
    argv = app_argv(f"{root}/current", port, python=python, host=host.address)
    return "\n".join(
        [
            "[Unit]",
            f"Description=fleet test app on {host.name}",
            "StartLimitIntervalSec=0",  # tests restart it often: never refuse a start
            "[Service]",
            "Type=notify",  # started means listening
            f"ExecStart={quote_exec(argv)}",
            "",
        ]
    )


async def install_app_unit(
    fleet: Fleet, unit: str, root: str = "/srv/app", port: int = 18400
) -> FleetApp:
    """Install (not start) `unit` on every host, each bound to its own address; `root` should
    be under /srv, so each host has its own releases. Use fleet.free_port() where other
    sessions may run at once."""
    managers = [SystemdManager(host.sandbox.host) for host in fleet.hosts]
    await asyncio.gather(
        *(
            manager.install_unit(unit, app_unit_text(host, root, port))
            for manager, host in zip(managers, fleet.hosts, strict=True)
        )
    )
    return FleetApp(unit, root, port)


async def remove_app_unit(fleet: Fleet, app: FleetApp) -> None:
    """Stop and remove the unit on every host."""

    async def remove(host: FleetHost) -> None:
        manager = SystemdManager(host.sandbox.host)
        await manager.stop(app.unit)
        await manager.remove_unit(app.unit)

    await asyncio.gather(*(remove(host) for host in fleet.hosts))
