"""A private OpenSSH server on 127.0.0.1 for tests.

Use the `sshd` fixture by importing it into a test module
(`from bot.dev.harness.sshd import sshd`). It skips when no sshd can be started here, except
under CI=true, where that is a failure: a CI
run must not pass by silently skipping every ssh test.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from bot.http.server import free_port

SSHD = "/usr/sbin/sshd"
START_TIMEOUT_S = 10.0

# Test-only client options: the host key is made up on the spot, so there is nothing to pin.
CLIENT_OPTIONS = {
    "StrictHostKeyChecking": "no",
    "UserKnownHostsFile": "/dev/null",
    "LogLevel": "ERROR",
}


@dataclass(frozen=True)
class Sshd:
    host: str
    port: int
    user: str
    identity_file: str
    directory: Path  # short (under /tmp), so ControlPaths made in it stay under the socket limit
    log_file: Path

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}"

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


class SshdUnavailable(Exception):
    """No sshd can be started here; the message says why."""


def _check(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise SshdUnavailable(f"{what} failed ({done.returncode}): {done.stderr.strip()}")


def require_tools() -> None:
    for program in (SSHD, "ssh-keygen", "ssh"):
        if shutil.which(program) is None:
            raise SshdUnavailable(f"{program} not found (apt-get install openssh-server)")


def keygen(path: Path) -> None:
    """A new ed25519 key pair without passphrase: `path` and `path`.pub."""
    _check(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], "ssh-keygen")


def write_config(directory: Path, port: int, address: str = "127.0.0.1") -> Path:
    """sshd_config for `address`:`port`; host key, pid file and authorized_keys in `directory`."""
    lines = [
        f"Port {port}",
        f"ListenAddress {address}",
        f"HostKey {directory}/ssh_host_ed25519_key",
        f"PidFile {directory}/sshd.pid",
        "UsePAM no",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        f"AuthorizedKeysFile {directory}/authorized_keys",
        "StrictModes no",  # /tmp is world-writable, which StrictModes refuses
        "PermitTTY no",
    ]
    config = directory / "sshd_config"
    config.write_text("\n".join(lines) + "\n")
    return config


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log_file: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = log_file.read_text(errors="replace").strip()
            raise SshdUnavailable(f"sshd exited with {proc.returncode}: {log}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SshdUnavailable(f"sshd did not listen on port {port} within {START_TIMEOUT_S}s")


def start_sshd(directory: Path) -> tuple[subprocess.Popen[bytes], Sshd]:
    """Start sshd in the foreground on a free loopback port; raises SshdUnavailable."""
    require_tools()
    try:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
    except OSError as exc:
        raise SshdUnavailable(f"cannot create /run/sshd: {exc.strerror}") from None
    for key in ("ssh_host_ed25519_key", "id_ed25519"):
        keygen(directory / key)
    shutil.copy(directory / "id_ed25519.pub", directory / "authorized_keys")
    port = free_port()
    config = write_config(directory, port)
    _check([SSHD, "-t", "-f", str(config)], "sshd -t")
    log_file = directory / "sshd.log"
    with log_file.open("wb") as log:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=log)
    try:
        _wait_listening(proc, port, log_file)
    except SshdUnavailable:
        stop_sshd(proc)
        raise
    user = pwd.getpwuid(os.getuid()).pw_name
    key = str(directory / "id_ed25519")
    return proc, Sshd("127.0.0.1", port, user, key, directory, log_file)


def stop_sshd(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"sshd is required under CI=true: {reason}")
    pytest.skip(f"no loopback sshd: {reason}")


@pytest.fixture(scope="session")
def sshd() -> Iterator[Sshd]:
    directory = Path(tempfile.mkdtemp(prefix="ogs-", dir="/tmp"))
    try:
        proc, server = start_sshd(directory)
    except SshdUnavailable as exc:
        shutil.rmtree(directory, ignore_errors=True)
        unavailable(str(exc))
    try:
        yield server
    finally:
        stop_sshd(proc)
        shutil.rmtree(directory, ignore_errors=True)
