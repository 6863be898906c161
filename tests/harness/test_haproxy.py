"""Canary building blocks against real components: HAProxy weights changed through its runtime
API under a keep-alive load lose nothing and split as set; the same load through nginx loses
requests on reloads (why canaries use HAProxy); the test app's /metrics and fault markers."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.dev.demo_web import free_port
from bot.dev.harness.daemons import require, serving
from bot.dev.harness.gitrepo import app_argv, git, make_app_repo
from bot.dev.harness.haproxy import (
    HAProxyFiles,
    RuntimeApiError,
    require_haproxy,
    running_haproxy,
    write_haproxy_config,
)
from bot.dev.harness.keepalive_load import KeepAliveLoad
from bot.dev.harness.nginx import require_nginx, running_nginx, write_nginx_config
from bot.dev.harness.prometheus import PROMTOOL
from bot.dev.harness.prometheus import unavailable_reason as prometheus_unavailable_reason
from bot.dev.harness.systemd import SystemdSandbox
from services.control.systemd import quote_exec


@dataclass(frozen=True)
class Backend:
    name: str  # answers GET / with {"version": name}, like the test app
    port: int


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 overflows under a proxied load (SYN retries)


@contextmanager
def backend(name: str) -> Iterator[Backend]:
    body = json.dumps({"version": name}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # thousands of requests

    server = _Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Backend(name, server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def blue() -> Iterator[Backend]:
    with backend("blue") as server:
        yield server


@pytest.fixture
def green() -> Iterator[Backend]:
    with backend("green") as server:
        yield server


@pytest.fixture
def haproxy(tmp_path: Path, blue: Backend, green: Backend) -> Iterator[HAProxyFiles]:
    require_haproxy()
    servers = {"blue": (blue.port, 95), "green": (green.port, 5)}
    files = write_haproxy_config(tmp_path / "haproxy", free_port(), servers)
    with running_haproxy(files) as process:
        yield files
    assert process.returncode is not None


def test_config_and_argv_shapes(tmp_path: Path) -> None:
    # No HAProxy needed: these are the exact commands a unit or a tool is given.
    files = write_haproxy_config(tmp_path, 8080, {"blue": (9001, 95), "green": (9002, 5)})
    conf = str(tmp_path / "haproxy.cfg")
    assert files.run_argv() == ["haproxy", "-db", "-f", conf]
    assert files.check_argv() == ["haproxy", "-c", "-q", "-f", conf]
    assert files.servers == ("blue", "green")
    text = files.conf.read_text()
    assert f"stats socket {tmp_path}/admin.sock mode 600 level admin" in text
    assert "bind 127.0.0.1:8080" in text
    assert "server blue 127.0.0.1:9001 weight 95\n" in text
    assert "server green 127.0.0.1:9002 weight 5\n" in text
    assert "keep-alive" not in text.replace("timeout http-keep-alive", "")  # not turned off
    with pytest.raises(ValueError, match=r"0\.\.256"):
        write_haproxy_config(tmp_path, 8080, {"blue": (9001, 300)})
    with pytest.raises(ValueError, match="too long"):
        write_haproxy_config(tmp_path / ("d" * 100), 8080, {"blue": (9001, 1)})


def test_config_passes_haproxys_own_check(tmp_path: Path) -> None:
    require_haproxy()
    files = write_haproxy_config(tmp_path, free_port(), {"blue": (9001, 1), "green": (9002, 0)})
    done = subprocess.run(files.check_argv(), capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_runtime_api_reads_and_refuses(haproxy: HAProxyFiles) -> None:
    assert (haproxy.get_weight("blue"), haproxy.get_weight("green")) == (95, 5)
    haproxy.set_weight("green", 25)
    assert haproxy.get_weight("green") == 25
    assert "Name: HAProxy" in haproxy.command("show info")
    haproxy.set_weights({"blue": 0, "green": 100})
    assert (haproxy.get_weight("blue"), haproxy.get_weight("green")) == (0, 100)
    with pytest.raises(RuntimeApiError, match="No such server"):
        haproxy.set_weight("purple", 1)
    with pytest.raises(RuntimeApiError, match="between 0 and 256"):
        haproxy.set_weight("green", 257)


def test_weight_changes_under_keepalive_load_lose_nothing_and_split_as_set(
    haproxy: HAProxyFiles,
) -> None:
    threads = 6
    windows: list[tuple[int, int, float]] = []
    with KeepAliveLoad(haproxy.listen_port, threads=threads, idle_s=(0.002, 0.02)) as load:
        for blue_weight, green_weight in [(95, 5), (75, 25), (50, 50), (0, 100)]:
            haproxy.set_weights({"blue": blue_weight, "green": green_weight})
            since = load.now()  # sent from here on: reaches HAProxy after both changes
            load.wait_for_count(400, since=since)
            split = load.split(since=since)
            windows.append((blue_weight, green_weight, split["green"] / split.total()))
            if blue_weight == 0:
                assert split["blue"] == 0, split
    assert load.failures == [], load.failures[:5]
    for blue_weight, green_weight, green_share in windows:
        expected = green_weight / (blue_weight + green_weight)
        assert abs(green_share - expected) <= 0.04, windows  # roundrobin: near exact
    # Keep-alive really was on: each client kept the one connection it opened.
    results = load.results
    assert load.connections_opened == threads
    assert sum(not r.reused for r in results) == threads, "HAProxy closed client connections"
    assert {r.side for r in results} == {"blue", "green"}


HAPROXY_UNIT = "t-haproxy.service"


@pytest.fixture
async def haproxy_unit(
    systemd_sandbox: SystemdSandbox, blue: Backend, green: Backend
) -> AsyncIterator[HAProxyFiles]:
    """HAProxy as a unit of the sandbox's systemd, from run_argv() as ExecStart."""
    require_haproxy()
    base = Path(tempfile.mkdtemp(prefix="hap_", dir=systemd_sandbox.work_dir))
    servers = {"blue": (blue.port, 100), "green": (green.port, 0)}
    files = write_haproxy_config(base, free_port(), servers)
    unit = systemd_sandbox.unit_dir / HAPROXY_UNIT
    unit.write_text(
        "[Unit]\nDescription=canary test proxy\n[Service]\n"
        f"ExecStart={quote_exec(files.run_argv())}\n"
    )
    host = systemd_sandbox.host
    await host.run(["systemctl", "daemon-reload"])
    started = await host.run(["systemctl", "start", HAPROXY_UNIT])
    assert started.ok, started
    try:
        yield files
    finally:
        await host.run(["systemctl", "stop", HAPROXY_UNIT])
        unit.unlink()
        await host.run(["systemctl", "daemon-reload"])
        await host.run(["systemctl", "reset-failed"])
        shutil.rmtree(base)


@pytest.mark.xdist_group("systemd")
async def test_haproxy_runs_as_a_systemd_unit(haproxy_unit: HAProxyFiles) -> None:
    # Type=simple: the unit is "started" before HAProxy binds, so wait for its admin socket.
    deadline = time.monotonic() + 5
    while True:
        try:
            assert haproxy_unit.get_weight("green") == 0
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    with KeepAliveLoad(haproxy_unit.listen_port, threads=2, idle_s=(0.005, 0.01)) as load:
        load.wait_for_side("blue")
        haproxy_unit.set_weights({"blue": 0, "green": 100})  # green first: never all 0
        since = load.now()
        load.wait_for_count(50, since=since)
    assert load.failures == []
    assert set(load.split(since=since)) == {"green"}


def test_nginx_reloads_drop_idle_keepalive_connections(
    tmp_path: Path, blue: Backend, green: Backend
) -> None:
    """Why not nginx: each reload closes idle keep-alive connections, and a client that reuses
    one without checking loses the request it sends on it."""
    require_nginx()
    files = write_nginx_config(tmp_path / "nginx", free_port(), blue.port)
    text = files.conf.read_text()
    assert "keepalive_timeout 0;" in text  # the harness's own config: keep-alive off
    # The variant a canary proxy would need: keep-alive on, long enough to outlast the test.
    files.conf.write_text(
        text.replace("keepalive_timeout 0;", "keepalive_timeout 60s; keepalive_requests 100000;")
    )
    reloads = 5
    # Gaps of 50-100 ms against answers of about 1 ms: at a reload almost every connection
    # is idle, so each reload costs about one request per thread.
    with running_nginx(files), KeepAliveLoad(files.listen_port, idle_s=(0.05, 0.1)) as load:
        for index in range(reloads):
            load.wait_for_count(12, since=load.now())  # every connection in use, then idle
            target = green if index % 2 == 0 else blue
            files.upstream.write_text(files.upstream_line(target.port))
            done = subprocess.run(files.reload_argv(), capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
            load.wait_for_side(target.name)
        load.wait_for_count(12, since=load.now())
    failures = [r for r in load.results if r.error is not None]
    assert len(failures) >= 1, f"no request lost over {reloads} reloads: {load.total} sent"
    assert all(r.reused for r in failures), [r.describe() for r in failures]
    assert load.connections_opened == 4 + len(failures)


@dataclass(frozen=True)
class App:
    root: Path  # ROOT: holds releases/ and the fault markers
    port: int
    version: str

    def get(self, path: str = "/") -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics, by name and sorted labels; parsed by prometheus_client."""
        status, text = self.get("/metrics")
        assert status == 200, text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    repo = make_app_repo(tmp_path / "repo")
    root = tmp_path / "srv"
    release = root / "releases" / "v2"
    git(tmp_path, "clone", "--quiet", "--branch", "v2", repo.url, str(release))
    port = free_port()
    argv = app_argv(release, port, python=sys.executable)
    with serving(argv, tmp_path / "app.log", f"http://127.0.0.1:{port}/health", timeout=10):
        yield App(root, port, "v2")


def test_app_metrics_are_valid_exposition_and_count_only_get_root(app: App) -> None:
    require(prometheus_unavailable_reason())
    for _ in range(3):
        assert app.get("/") == (200, json.dumps({"version": "v2"}))
    app.get("/health")
    status, text = app.get("/metrics")
    assert status == 200
    # Prometheus's own linter and parser accept it.
    lint = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    metrics = app.metrics()
    assert metrics[("http_requests_total", (("code", "200"),))] == 3  # not /health, /metrics
    assert metrics[("http_request_duration_seconds_count", ())] == 3
    assert metrics[("http_request_duration_seconds_bucket", (("le", "+Inf"),))] == 3
    assert metrics[("app_build_info", (("version", "v2"),))] == 1
    assert metrics[("process_resident_memory_bytes", ())] > 1_000_000


def test_app_errors_marker_fails_exactly_that_share(app: App) -> None:
    marker = app.root / f"errors-{app.version}"
    (app.root / "errors-v1").write_text("1")  # another release's marker: no effect here
    assert app.get("/")[0] == 200
    marker.write_text("0.3\n")
    answers = [app.get("/") for _ in range(30)]
    codes = [status for status, _ in answers]
    for start in range(0, 21):  # 3 in any 10 in a row, not only on average
        assert codes[start : start + 10].count(500) == 3, codes
    failed = {body for status, body in answers if status == 500}
    assert failed == {json.dumps({"version": "v2", "error": "injected"})}
    metrics = app.metrics()
    assert metrics[("http_requests_total", (("code", "500"),))] == 9
    assert metrics[("http_requests_total", (("code", "200"),))] == 22
    marker.unlink()  # gone: every request succeeds again, at once
    assert {app.get("/")[0] for _ in range(10)} == {200}


def test_app_slow_marker_delays_get_root(app: App) -> None:
    marker = app.root / f"slow-{app.version}"
    marker.write_text("0.2")
    started = time.monotonic()
    assert app.get("/")[0] == 200
    assert time.monotonic() - started >= 0.2
    assert app.get("/health")[0] == 200  # only GET / is slowed: this answers at once
    marker.unlink()
    started = time.monotonic()
    assert app.get("/")[0] == 200
    assert time.monotonic() - started < 0.1
    metrics = app.metrics()
    le = "http_request_duration_seconds_bucket"
    assert metrics[(le, (("le", "0.1"),))] == 1  # the fast one
    assert metrics[(le, (("le", "0.25"),))] == 2  # and the slow one
    assert metrics[("http_request_duration_seconds_sum", ())] >= 0.2
