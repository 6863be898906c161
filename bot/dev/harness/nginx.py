"""A private nginx on loopback as a blue/green reverse proxy (recipe: nginx-blue-green.md).

    require_nginx()                      # skip here, fail under CI=true, when nginx cannot run
    files = write_nginx_config(tmp_path, listen_port=free_port(), upstream_port=blue_port)
    with running_nginx(files), RequestLoad(files.listen_port, threads=4) as load:
        files.upstream.write_text(files.upstream_line(green_port))
        subprocess.run(files.reload_argv(), check=True)
        load.wait_for_body("green")
    assert load.failures == []

Everything (pid, logs, temp files) lives under the prefix directory; nothing under /etc/nginx,
/var/log/nginx or /run is read or written. `keepalive_timeout 0;` keeps reloads lossless for
clients that reuse connections (see the recipe's pitfalls); RequestLoad opens a new connection
per request anyway.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bot.dev.harness.daemons import require
from bot.dev.harness.load import REQUEST_TIMEOUT_S, ThreadedLoad

NGINX = "nginx"
START_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 10.0
UPSTREAM_NAME = "app"

# {listen_port} and {location_directives} (empty unless a test asks) are the placeholders; the
# upstream lives in upstream.conf so that a deploy tool flips blue/green by rewriting that one
# file and reloading.
CONFIG = """\
user root;
worker_processes 2;
pid nginx.pid;
error_log error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log access.log;
    keepalive_timeout 0;
    client_body_temp_path tmp/client_body;
    proxy_temp_path       tmp/proxy;
    fastcgi_temp_path     tmp/fastcgi;
    uwsgi_temp_path       tmp/uwsgi;
    scgi_temp_path        tmp/scgi;
    include upstream.conf;
    server {{
        listen 127.0.0.1:{listen_port};
        location / {{ proxy_pass http://app;{location_directives} }}
    }}
}}
"""


def nginx_unavailable_reason() -> str | None:
    """Why no private nginx can run here, or None when it can."""
    if shutil.which(NGINX) is None:
        return f"{NGINX} is not installed (apt-get install nginx)"
    # `user root;` is needed because workers running as nobody cannot reach temp dirs under a
    # 0700 tmp_path; and that directive only works when the master runs as root.
    if os.geteuid() != 0:
        return "nginx tests need root (the config says `user root;`)"
    return None


def require_nginx() -> None:
    """Skip the calling test when nginx cannot run; under CI=true fail instead."""
    require(nginx_unavailable_reason())


@dataclass(frozen=True)
class NginxFiles:
    prefix: Path  # the -p directory: nginx.conf, upstream.conf, pid, logs, tmp/
    conf: Path
    upstream: Path
    listen_port: int

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"

    @property
    def pid_file(self) -> Path:
        return self.prefix / "nginx.pid"

    @property
    def stderr_log(self) -> Path:
        # Debian's nginx logs to stderr until error_log is parsed: config errors land here.
        return self.prefix / "stderr.log"

    def upstream_line(self, port: int) -> str:
        """The exact text a deploy tool writes into upstream.conf to point at `port`."""
        return f"upstream {UPSTREAM_NAME} {{ server 127.0.0.1:{port}; }}\n"

    def _base_argv(self) -> list[str]:
        # The trailing slash matters: nginx joins prefix and relative paths by concatenation.
        # -c too: without it nginx reads /etc/nginx/nginx.conf even with -p.
        return [NGINX, "-p", f"{self.prefix}/", "-c", self.conf.name]

    def run_argv(self) -> list[str]:
        """Foreground master (Popen PID = master PID); the file itself must not set `daemon`."""
        return [*self._base_argv(), "-g", "daemon off;"]

    def reload_argv(self) -> list[str]:
        """Parses the config first: rc 1 and no signal on a broken one (old config keeps on)."""
        return [*self._base_argv(), "-s", "reload"]

    def test_argv(self) -> list[str]:
        """Config check: rc 1 and the [emerg] line on stderr on error."""
        return [*self._base_argv(), "-t", "-q"]

    def logs(self, tail: int = 4000) -> str:
        """The last `tail` characters of stderr and error.log, for failure messages."""
        parts = []
        for path in (self.stderr_log, self.error_log):
            if path.exists():
                text = path.read_text(errors="replace")[-tail:]  # info level: reloads are chatty
                parts.append(f"--- {path.name}\n{text}")
        return "\n".join(parts)


def write_nginx_config(
    directory: Path, listen_port: int, upstream_port: int, *, location_directives: str = ""
) -> NginxFiles:
    """Write nginx.conf, upstream.conf (pointing at upstream_port) and tmp/ into directory.

    `location_directives` go into `location /` after proxy_pass, e.g. "proxy_next_upstream off;"
    for a test that must see each failed upstream attempt instead of nginx's retry on another."""
    directory.mkdir(parents=True, exist_ok=True)
    # nginx creates only the last level of a temp path such as tmp/proxy.
    (directory / "tmp").mkdir(exist_ok=True)
    conf = directory / "nginx.conf"
    extra = f" {location_directives.strip()}" if location_directives.strip() else ""
    conf.write_text(CONFIG.format(listen_port=listen_port, location_directives=extra))
    files = NginxFiles(directory, conf, directory / "upstream.conf", listen_port)
    files.upstream.write_text(files.upstream_line(upstream_port))
    return files


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):  # not there yet, or empty (`nginx -t` makes an empty one)
        return None


def _wait_listening(process: subprocess.Popen[bytes], files: NginxFiles) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited with {process.returncode}:\n{files.logs()}")
        # The master writes its pid file only after binding every listen socket, so this tells
        # nginx listening apart from some other process that happens to hold the port.
        if _read_pid(files.pid_file) == process.pid:
            try:
                socket.create_connection(("127.0.0.1", files.listen_port), timeout=0.5).close()
                return
            except OSError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"nginx did not listen on 127.0.0.1:{files.listen_port} within "
                f"{START_TIMEOUT_S}s:\n{files.logs()}"
            )
        time.sleep(0.01)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGQUIT)  # graceful: in-flight requests finish
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()  # the master only; workers notice their parent is gone and exit
        process.wait()


@contextmanager
def running_nginx(files: NginxFiles) -> Iterator[subprocess.Popen[bytes]]:
    """Start nginx in the foreground, wait until it listens, yield it, SIGQUIT it."""
    with files.stderr_log.open("wb") as stderr:
        process = subprocess.Popen(
            files.run_argv(), stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
        )
    try:
        _wait_listening(process, files)
        yield process
    finally:
        _stop(process)


@dataclass(frozen=True)
class RequestResult:
    at: float  # seconds since the load started, when the request was sent
    status: int | None  # None when the request raised
    body: str | None
    error: str | None  # "ExceptionType: message" when the request raised

    @property
    def ok(self) -> bool:
        return self.status == 200

    def describe(self) -> str:
        if self.error is not None:
            return self.error
        return f"HTTP {self.status}: {(self.body or '')[:200]}"


class RequestLoad(ThreadedLoad[RequestResult]):
    """A steady GET load on http://127.0.0.1:PORT/ from N threads, one connection per request.

    Every request is recorded (status and body, or the exception). A new connection each time
    keeps the measurement about the proxy switching upstreams, not about keep-alive reuse.
    `interval_s` > 0 makes each thread wait that long between requests (a steady, light load
    beside a busy process under test); 0 sends back to back.
    """

    def __init__(
        self, port: int, threads: int = 4, path: str = "/", interval_s: float = 0.0
    ) -> None:
        super().__init__(threads, "load")
        self.port = port
        self.path = path
        self.interval_s = interval_s

    def _run(self, index: int) -> None:
        while not self._stopping.is_set():
            self._record(self._one_request())
            if self.interval_s > 0:
                self._stopping.wait(self.interval_s)  # wakes at once on stop()

    def _one_request(self) -> RequestResult:
        at = self.now()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_S)
        try:
            connection.request("GET", self.path)
            response = connection.getresponse()
            body = response.read().decode(errors="replace")
            return RequestResult(at, response.status, body, None)
        except Exception as exc:  # every failure is a data point, not a crash of the load
            return RequestResult(at, None, None, f"{type(exc).__name__}: {exc}")
        finally:
            connection.close()

    @property
    def bodies_seen(self) -> Counter[str]:
        """How often each body came back with a 200 (error pages are in failures instead)."""
        return Counter(r.body for r in self.results if r.ok and r.body is not None)

    def wait_for_body(self, body: str, timeout: float = 5.0) -> float:
        """Block until a request sent after this call answers 200 with `body`.

        Returns the seconds that took; raises TimeoutError with the recent answers otherwise.
        """
        called, since = time.monotonic(), self.now()
        self._wait(
            lambda fresh: sum(r.at >= since and r.ok and r.body == body for r in fresh),
            1,
            timeout,
            f"200 {body!r}",
        )
        return time.monotonic() - called
