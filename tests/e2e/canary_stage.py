"""The stage for canary tests: the test app as a template unit (t-canary@blue, @green) on the
systemd sandbox, a real nginx (a unit in the sandbox, so opsgate's reload reaches it) with
nginx's default keep-alive and an access log that names the upstream of every request, a real
HAProxy with its admin socket, and a real Prometheus scraping both colours' ports.

    stage.write_ops(router="nginx", canary="steps = [5, 25, 50, 100]", analysis="...")
    stage.split_by_step(db)     # the canary's share per step, from nginx's access log

Tests take the `stage` fixture (tests/e2e/conftest.py); Prometheus starts once per module.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bot.dev.demo_web import free_port
from bot.dev.harness.gitrepo import AppRepo, make_app_repo
from bot.dev.harness.haproxy import HAProxyFiles, running_haproxy, write_haproxy_config
from bot.dev.harness.nginx import require_nginx
from bot.dev.harness.opsgate_process import read_db
from bot.dev.harness.prometheus import Prometheus, running_prometheus
from bot.dev.harness.systemd import SystemdSandbox
from services.control.systemd import quote_exec
from tests.e2e.deploy_app import PEOPLE_AND_CHATS

TEMPLATE, PROXY = "t-canary@.service", "t-canary-proxy.service"
SERVICE = "app"  # the upstream's name, as the canary's upstream_template writes it

NGINX_CONF = """\
user root;
worker_processes 1;
pid nginx.pid;
error_log error.log info;
events {{ worker_connections 1024; }}
http {{
    log_format opsgate_canary '$msec|$upstream_addr|$status|$upstream_response_time';
    access_log {prefix}/canary.log opsgate_canary;
    client_body_temp_path tmp/client_body;
    proxy_temp_path       tmp/proxy;
    fastcgi_temp_path     tmp/fastcgi;
    uwsgi_temp_path       tmp/uwsgi;
    scgi_temp_path        tmp/scgi;
    include {prefix}/upstream.conf;
    server {{
        listen 127.0.0.1:{port};
        include {prefix}/mirror.conf;
        location / {{ proxy_pass http://{service}; }}
    }}
}}
"""


@dataclass(frozen=True)
class Ports:
    """Fixed per test module: Prometheus needs 5-15 s before a new target's first scrape, so
    it starts once and scrapes both colours' ports all along (down between tests)."""

    blue: int
    green: int
    prometheus: Prometheus


def scraped_ports() -> Iterator[Ports]:
    blue, green = free_port(), free_port()
    with running_prometheus([f"127.0.0.1:{blue}", f"127.0.0.1:{green}"]) as prometheus:
        yield Ports(blue, green, prometheus)


@dataclass
class Stage:
    sandbox: SystemdSandbox
    ports: Ports
    base: Path
    repo: AppRepo
    root: Path
    proxy_port: int
    nginx_prefix: Path
    haproxy: HAProxyFiles
    ops_file: Path

    @property
    def access_log(self) -> Path:
        return self.nginx_prefix / "canary.log"

    def nginx_argv(self, *extra: str) -> list[str]:
        return ["nginx", "-p", f"{self.nginx_prefix}/", "-c", "nginx.conf", *extra]

    def write_ops(
        self,
        *,
        router: str = "nginx",
        step_s: float = 3,
        traffic_timeout_s: float = 20,
        canary: str = "",
        analysis: str = "",
        shadow: str = "",
    ) -> None:
        """The service `app` in staging (no sign-off), canary over the stage's proxy."""
        haproxy = (
            f'haproxy = {{ admin = "{self.haproxy.admin_socket}", backend = "app" }}\n'
            if router == "haproxy"
            else ""
        )
        reload = json.dumps(self.nginx_argv("-s", "reload"))
        # Health through the proxy that carries the traffic.
        front = self.haproxy.listen_port if router == "haproxy" else self.proxy_port
        text = f"""
[environments.production]
[environments.staging]
requires_approval = false
[hosts.sandbox]
prefix = ["nsenter", "-t", "{self.sandbox.pid}", "-m", "-p"]
[services.app]
environment = "staging"
host = "sandbox"
unit = "{TEMPLATE}"
[services.app.health]
url = "http://127.0.0.1:{front}/health"
consecutive = 2
within_s = 8
interval_s = 0.1
[services.app.deploy]
root = "{self.root}"
git = "{self.repo.url}"
keep = 3
watch_s = 0
strategy = "canary"
[services.app.deploy.blue_green]
blue_port = {self.ports.blue}
green_port = {self.ports.green}
health_url = "http://127.0.0.1:{{port}}/health"
upstream_file = "{self.nginx_prefix}/upstream.conf"
reload = {reload}
drain_s = 1  # longer than the slowest test request (a 0.4 s slow- marker)
[services.app.deploy.canary]
steps = [5, 25, 50, 100]
step_s = {step_s:g}
interval_s = 1
traffic_timeout_s = {traffic_timeout_s:g}
router = "{router}"
{haproxy}{canary}
[services.app.deploy.canary.analysis]
prometheus_url = "{self.ports.prometheus.url}"
window_s = 3
min_requests = 10
{analysis}
{shadow}"""
        self.ops_file.write_text(PEOPLE_AND_CHATS + text)

    def marker(self, kind: str, version: str, value: str) -> None:
        """errors-<v> (a ratio of 500s) or slow-<v> (seconds) for that release's GET /."""
        (self.root / f"{kind}-{version}").write_text(value + "\n")

    def log_lines(self) -> list[tuple[float, str, int]]:
        """(time, upstream port, status) of each request nginx answered."""
        found = []
        for line in self.access_log.read_text().splitlines():
            at, upstream, status, _ = line.split("|")
            if upstream != "-":
                found.append((float(at), upstream.rsplit(":", 1)[1], int(status)))
        return found

    def split_by_step(self, db: Path, deployment_id: int) -> list[tuple[int, float, int]]:
        """Per weight step: (weight, the canary's share of requests in nginx's log, count),
        counted from half a second after the step's row moved until the next move."""
        moves = [
            (json.loads(str(data)), str(at))
            for data, at in read_db(
                db,
                "SELECT data, at FROM events WHERE kind = 'deploy.canary' ORDER BY id",
            )
        ]
        times = [
            (int(data["weight"]), datetime.fromisoformat(at).timestamp(), data["phase"])
            for data, at in moves
            if int(data["deployment"]) == deployment_id
        ]
        canary_port = str(self.ports.green)
        lines = self.log_lines()
        shares = []
        for (weight, start, phase), (_, end, _) in itertools.pairwise(times):
            if phase != "steps":
                continue
            sides = Counter(port for at, port, _ in lines if start + 0.5 <= at < end)
            total = sum(sides.values())
            shares.append((weight, sides[canary_port] / total if total else 0.0, total))
        return shares


@asynccontextmanager
async def canary_stage(
    sandbox: SystemdSandbox, ports: Ports, ops_file: Path
) -> AsyncIterator[Stage]:
    require_nginx()
    base = Path(tempfile.mkdtemp(prefix="canary_", dir=sandbox.work_dir))
    repo = make_app_repo(base / "app.git")
    root = base / "srv"
    root.mkdir()
    prefix = base / "nginx"
    (prefix / "tmp").mkdir(parents=True)
    proxy_port = free_port()
    (prefix / "nginx.conf").write_text(
        NGINX_CONF.format(prefix=prefix, port=proxy_port, service=SERVICE)
    )
    (prefix / "upstream.conf").write_text(
        f"upstream {SERVICE} {{ server 127.0.0.1:{ports.blue}; }}\n"
    )
    (prefix / "mirror.conf").write_text("")
    units = sandbox.unit_dir
    (units / TEMPLATE).write_text(
        "[Unit]\nDescription=canary test app %i\nStartLimitIntervalSec=0\n[Service]\n"
        f"Type=notify\nEnvironmentFile={root}/%i.env\nWorkingDirectory={root}/%i\n"
        f'ExecStart="{sys.executable}" "{root}/%i/app.py"\n'
    )
    haproxy_port = free_port()
    haproxy = write_haproxy_config(
        Path(tempfile.mkdtemp(prefix="hap-")),  # a unix socket path has 107 bytes at most
        haproxy_port,
        {"blue": (ports.blue, 100), "green": (ports.green, 0)},
    )
    stage = Stage(sandbox, ports, base, repo, root, proxy_port, prefix, haproxy, ops_file)
    (units / PROXY).write_text(
        "[Unit]\nDescription=canary test proxy\n[Service]\n"
        f"ExecStart={quote_exec(stage.nginx_argv('-g', 'daemon off;'))}\n"
    )
    host = sandbox.host
    await host.run(["systemctl", "daemon-reload"])
    assert (await host.run(["systemctl", "start", PROXY])).ok
    with ExitStack() as stack:
        stack.enter_context(running_haproxy(haproxy))
        try:
            yield stage
        finally:
            for unit in ("t-canary@blue.service", "t-canary@green.service", PROXY):
                await host.run(["systemctl", "stop", unit])
            (units / TEMPLATE).unlink()
            (units / PROXY).unlink()
            await host.run(["systemctl", "daemon-reload"])
            await host.run(["systemctl", "reset-failed"])
    shutil.rmtree(base, ignore_errors=True)
    shutil.rmtree(haproxy.directory, ignore_errors=True)
