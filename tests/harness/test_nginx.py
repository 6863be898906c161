"""The nginx harness against a real nginx: blue/green flips under load lose no request."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bot.dev.demo_web import free_port
from bot.dev.harness.nginx import (
    NginxFiles,
    RequestLoad,
    require_nginx,
    running_nginx,
    write_nginx_config,
)


@dataclass(frozen=True)
class Backend:
    name: str  # also the body it answers on GET /
    port: int


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 overflows under a few concurrent proxied connections and adds
    # second-long SYN retries (recipe pitfalls); that would be the backend's fault, not nginx's.
    request_queue_size = 128


@contextmanager
def backend(name: str) -> Iterator[Backend]:
    body = name.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # thousands of requests; pytest would keep them all

    server = _Server(("127.0.0.1", 0), Handler)  # port 0: no race for the backends' ports
    # A short poll interval: shutdown() waits up to one (0.5 s by default).
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name=f"backend-{name}", daemon=True
    )
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
def files(tmp_path: Path, blue: Backend) -> NginxFiles:
    require_nginx()
    return write_nginx_config(tmp_path / "nginx", listen_port=free_port(), upstream_port=blue.port)


def point_at(files: NginxFiles, target: Backend) -> subprocess.CompletedProcess[str]:
    files.upstream.write_text(files.upstream_line(target.port))
    return subprocess.run(files.reload_argv(), capture_output=True, text=True, check=False)


def test_argv_shapes(tmp_path: Path) -> None:
    # No nginx needed: these are the exact commands a deploy tool is told to run.
    files = write_nginx_config(tmp_path, listen_port=8080, upstream_port=9001)
    prefix = f"{tmp_path}/"
    assert files.run_argv() == ["nginx", "-p", prefix, "-c", "nginx.conf", "-g", "daemon off;"]
    assert files.reload_argv() == ["nginx", "-p", prefix, "-c", "nginx.conf", "-s", "reload"]
    assert files.test_argv() == ["nginx", "-p", prefix, "-c", "nginx.conf", "-t", "-q"]
    assert files.upstream.read_text() == "upstream app { server 127.0.0.1:9001; }\n"
    assert files.upstream_line(9002) == "upstream app { server 127.0.0.1:9002; }\n"
    assert (tmp_path / "tmp").is_dir()
    assert "listen 127.0.0.1:8080;" in files.conf.read_text()


def test_blue_green_reloads_under_load_lose_nothing(
    files: NginxFiles, blue: Backend, green: Backend
) -> None:
    flips = [green, blue, green, blue, green, blue]
    with running_nginx(files) as nginx, RequestLoad(files.listen_port, threads=4) as load:
        load.wait_for_body("blue")
        for target in flips:
            done = point_at(files, target)
            assert done.returncode == 0, done.stderr
            load.wait_for_body(target.name)
            time.sleep(0.2)  # some steady traffic on each colour, not only the switch itself
    assert nginx.returncode == 0, files.logs()
    assert load.failures == [], files.logs()
    assert set(load.bodies_seen) == {"blue", "green"}
    assert load.total > 50, load.total


def test_broken_upstream_conf_fails_reload_and_old_upstream_keeps_serving(
    files: NginxFiles, blue: Backend, green: Backend
) -> None:
    with running_nginx(files), RequestLoad(files.listen_port, threads=4) as load:
        load.wait_for_body("blue")
        files.upstream.write_text(f"upstream app {{ server 127.0.0.1:{green.port}\n")  # no ; }
        check = subprocess.run(files.test_argv(), capture_output=True, text=True, check=False)
        assert check.returncode != 0
        assert "[emerg]" in check.stderr, check.stderr
        reload = subprocess.run(files.reload_argv(), capture_output=True, text=True, check=False)
        assert reload.returncode != 0, reload.stderr
        assert "[emerg]" in reload.stderr, reload.stderr
        broken_at = load.now()
        load.wait_for_body("blue")
        time.sleep(0.3)  # long enough that a successful reload would have switched by now
        after = [r for r in load.results if r.at >= broken_at]
        assert after, "no requests after the failed reload"
        assert {r.body for r in after} == {"blue"}
        # The master survived the failed reload (and `nginx -t` left its pid file usable):
        # a fixed file is picked up.
        done = point_at(files, green)
        assert done.returncode == 0, done.stderr
        load.wait_for_body("green")
    assert load.failures == [], files.logs()
