"""A private HAProxy on loopback splitting traffic between blue and green by weight, for tests.

    require_haproxy()                    # skip here, fail under CI=true, when haproxy cannot run
    files = write_haproxy_config(tmp_path / "haproxy", free_port(), {"blue": (blue_port, 95),
                                                                     "green": (green_port, 5)})
    with running_haproxy(files), KeepAliveLoad(files.listen_port) as load:   # keepalive_load.py
        files.set_weights({"blue": 75, "green": 25})   # runtime API: no reload, nothing closed
        load.wait_for_side("green")
    assert load.failures == []

Weights change through the admin stats socket (`set server app/green weight 25`), so unlike
`nginx -s reload` nothing drops the clients' idle keep-alive connections. Every answer carries
`X-Served-By: <server>` and every request is logged (httplog, to stdout) with app/<server>.
Everything (config, admin socket, log) lives in one directory; nothing under /etc/haproxy or
/run is read or written. Under systemd, run `quote_exec(files.run_argv())` as ExecStart of a
Type=simple unit: `-db` keeps HAProxy in the foreground, one process, no pid file.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bot.dev.harness.daemons import require

HAPROXY = "haproxy"
BACKEND = "app"
SERVED_BY = "X-Served-By"
START_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 5.0
MAX_WEIGHT = 256  # HAProxy's limit for a server weight
# sun_path holds 108 bytes with the terminating NUL; longer socket paths cannot be bound.
MAX_SOCKET_PATH = 107

# Keep-alive is HAProxy's default in `mode http` (option http-keep-alive) and stays on: it is
# what the weight changes must not disturb. `timeout http-keep-alive` is long so that no idle
# client connection is closed during a test by HAProxy itself.
CONFIG = """\
global
    stats socket {admin_socket} mode 600 level admin
    log stdout format raw local0
defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 30s
frontend web
    bind 127.0.0.1:{listen_port}
    default_backend {backend}
backend {backend}
    balance roundrobin
    http-response set-header {served_by} %[srv_name]
{servers}"""


def unavailable_reason() -> str | None:
    """Why no private HAProxy can run here, or None when it can."""
    if shutil.which(HAPROXY) is None:
        return f"{HAPROXY} is not installed (apt-get install haproxy)"
    return None


def require_haproxy() -> None:
    """Skip the calling test when HAProxy cannot run; under CI=true fail instead."""
    require(unavailable_reason())


class RuntimeApiError(RuntimeError):
    """The runtime API answered a command with an error text."""


def runtime_api(admin_socket: Path, command: str, timeout: float = COMMAND_TIMEOUT_S) -> str:
    """Send one runtime API command over the admin socket; return HAProxy's answer as text.

    Non-interactive mode: HAProxy answers the one line and closes the connection, so the
    answer is everything read until EOF (an empty string for a silent success such as
    `set server ... weight`)."""
    if "\n" in command:
        raise ValueError(f"one command per call, without newlines: {command!r}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(admin_socket))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


@dataclass(frozen=True)
class HAProxyFiles:
    directory: Path  # haproxy.cfg, admin.sock, haproxy.log
    conf: Path
    admin_socket: Path
    listen_port: int
    servers: tuple[str, ...]  # server names in backend BACKEND, in config order

    @property
    def log(self) -> Path:
        """stdout and stderr of a process started by running_haproxy: request log and errors."""
        return self.directory / "haproxy.log"

    def run_argv(self) -> list[str]:
        """Foreground, single process (Popen PID = HAProxy's); also a unit's ExecStart."""
        return [HAPROXY, "-db", "-f", str(self.conf)]

    def check_argv(self) -> list[str]:
        """Config check: rc 0 when valid, the [ALERT] lines on stderr otherwise."""
        return [HAPROXY, "-c", "-q", "-f", str(self.conf)]

    def command(self, command: str) -> str:
        """One runtime API command on this HAProxy's admin socket; its answer."""
        return runtime_api(self.admin_socket, command)

    def set_weight(self, server: str, weight: int) -> None:
        """Change `server`'s weight at once, without a reload; RuntimeApiError if refused."""
        answer = self.command(f"set server {BACKEND}/{server} weight {weight}")
        if answer.strip():  # success is silent; an unknown server or bad weight says why
            raise RuntimeApiError(f"set weight {server}={weight}: {answer.strip()}")

    def set_weights(self, weights: Mapping[str, int]) -> None:
        """Set several servers' weights, raises before cuts: one command each, so in between
        the backend must never have every weight at 0 (HAProxy answers 503 then)."""
        current = {server: self.get_weight(server) for server in weights}
        for server in sorted(weights, key=lambda name: weights[name] - current[name], reverse=True):
            self.set_weight(server, weights[server])

    def get_weight(self, server: str) -> int:
        """The current weight (`get weight` answers e.g. "25 (initial 95)")."""
        answer = self.command(f"get weight {BACKEND}/{server}")
        try:
            return int(answer.split()[0])
        except (IndexError, ValueError):
            raise RuntimeApiError(f"get weight {server}: {answer.strip()!r}") from None

    def logs(self, tail: int = 4000) -> str:
        """The last `tail` characters of the log, for failure messages."""
        if not self.log.exists():
            return ""
        return f"--- {self.log.name}\n{self.log.read_text(errors='replace')[-tail:]}"


def write_haproxy_config(
    directory: Path,
    listen_port: int,
    servers: Mapping[str, tuple[int, int]],
    *,
    server_options: str = "",
) -> HAProxyFiles:
    """Write haproxy.cfg into `directory`: 127.0.0.1:listen_port in front of backend `app`.

    `servers` maps each server name (e.g. "blue", "green") to (port on 127.0.0.1, initial
    weight 0..256). `server_options` are appended to every server line, e.g.
    "check inter 200ms fall 2 rise 2" with a test that wants health checks."""
    directory.mkdir(parents=True, exist_ok=True)
    admin_socket = directory.resolve() / "admin.sock"
    if len(os.fsencode(admin_socket)) > MAX_SOCKET_PATH:
        raise ValueError(f"{admin_socket} is too long for a unix socket; use a shorter directory")
    lines = []
    for name, (port, weight) in servers.items():
        if not 0 <= weight <= MAX_WEIGHT:
            raise ValueError(f"weight of {name} must be 0..{MAX_WEIGHT}, not {weight}")
        options = f" {server_options.strip()}" if server_options.strip() else ""
        lines.append(f"    server {name} 127.0.0.1:{port} weight {weight}{options}\n")
    conf = directory / "haproxy.cfg"
    conf.write_text(
        CONFIG.format(
            admin_socket=admin_socket,
            listen_port=listen_port,
            backend=BACKEND,
            served_by=SERVED_BY,
            servers="".join(lines),
        )
    )
    return HAProxyFiles(directory, conf, admin_socket, listen_port, tuple(servers))


def _wait_ready(process: subprocess.Popen[bytes], files: HAProxyFiles) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"haproxy exited with {process.returncode}:\n{files.logs()}")
        # The admin socket answering shows this HAProxy is up (a stale socket file from an
        # earlier run refuses connections); then the port shows it has bound its frontend.
        try:
            files.command("show info")
            socket.create_connection(("127.0.0.1", files.listen_port), timeout=0.5).close()
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"haproxy did not listen on 127.0.0.1:{files.listen_port} within "
                f"{START_TIMEOUT_S}s:\n{files.logs()}"
            )
        time.sleep(0.01)


def _stop(process: subprocess.Popen[bytes]) -> None:
    # SIGTERM is HAProxy's hard stop: at once, even with idle keep-alive clients still
    # connected (SIGUSR1, the soft stop, would wait for them).
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def running_haproxy(files: HAProxyFiles) -> Iterator[subprocess.Popen[bytes]]:
    """Start HAProxy in the foreground, wait until it listens and answers on its admin socket,
    yield it, stop it."""
    with files.log.open("wb") as log:
        process = subprocess.Popen(
            files.run_argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    try:
        _wait_ready(process, files)
        yield process
    finally:
        _stop(process)
