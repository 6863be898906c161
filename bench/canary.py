"""A canary's breach reaction and the cost of a weight change: opsgate's own code paths on a
real systemd, HAProxy, nginx and Prometheus.

A. Breach reaction: from a breach appearing in the metrics to all traffic back on stable.
   Goal: under one analysis interval + 1 s. The test app (bot/dev/harness/gitrepo.py) runs as
   a template unit (b-canary@blue, @green) in the systemd sandbox, behind a private HAProxy
   (router = "haproxy"); a private Prometheus scrapes both colours' ports every second. A
   DeployPipeline built directly (as tests/services/control/test_blue_green.py) deploys v1,
   then per run, under a RequestLoad through HAProxy, a DEPLOY of v2 as a canary with
   step_s = 600 (only a breach ends it), window_s = 3, max_error_ratio = 0.05 and
   errors_vs_stable: once the canary is at 5% and two intervals plus a random part of one
   have passed (so the marker lands anywhere within opsgate's analysis interval),
   ROOT/errors-v2 says 0.5. Meanwhile the bench polls, itself:
     - Prometheus every 50 ms with opsgate's queries and verdict (PrometheusSource.sample for
       both colours + judge, the same Analysis): t_visible = the start of the first poll that
       shows a breach;
     - HAProxy's admin socket (`get weight app/green`) every 20 ms: t_back = the end of the
       first poll that answers 0.
   Both ends are taken late/early by at most one poll, so t_back - t_visible errs long. The
   baseline, in the same run, is the interval itself: the reaction is compared with
   interval + 1 s (the goal) and as a ratio of the interval. The breach marks v2 bad and the
   pipeline rolls back (how it ended is printed); the bench clears the mark and the marker,
   and waits (off the clock) until the last canary's 500s have left Prometheus' window: the
   next canary has the same port, so the same instance label. Runs for each interval in
   --intervals (2 s, then 1 s by default).

B. Weight-change cost: requests failed per weight change, nginx (upstream file rewritten +
   reload: NginxWeights) against HAProxy's runtime API (HaproxyWeights), under a KeepAliveLoad
   (4 clients, each reusing ONE keep-alive connection without checking it, idle 20-100 ms
   between requests, so connections sit idle when a reload lands). Goal: 0 failed. No
   systemd: two backends (one Python process, a port each), a private nginx with keep-alive
   on (nginx's default) and a private HAProxy, both plain foreground processes. The walk
   5 -> 25 -> 50 -> 100 -> 0 to green, --changes times, --pause-s between changes. Baseline
   in the same run: the same load through the same proxy for the same time, no change.

Needs root (unshare, nsenter; nginx's `user root`). Run by hand (about 2-3 minutes):

    .venv/bin/python bench/canary.py [--runs 4] [--intervals 2,1] [--changes 20] [--part a|b]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

from bot.dev.demo_web import free_port
from bot.dev.harness import haproxy as haproxy_harness
from bot.dev.harness import nginx as nginx_harness
from bot.dev.harness import prometheus as prometheus_harness
from bot.dev.harness.gitrepo import make_app_repo
from bot.dev.harness.haproxy import HAProxyFiles, running_haproxy, write_haproxy_config
from bot.dev.harness.keepalive_load import KeepAliveLoad, KeepAliveResult
from bot.dev.harness.nginx import NginxFiles, RequestLoad, running_nginx
from bot.dev.harness.prometheus import Prometheus, running_prometheus, wait_for_value
from bot.dev.harness.systemd import SystemdSandbox, booted
from bot.dev.harness.systemd import unavailable_reason as systemd_unavailable
from config.canary import Analysis, CanaryConfig, HaproxyRouter
from config.opsfile import OpsConfig, parse_ops_text
from services.control.analysis import PrometheusSource, Verdict, judge
from services.control.controller import ServiceController
from services.control.traffic import Color, HaproxyWeights, NginxWeights, WeightRouter, split
from services.deploy.canary_rows import Phase
from services.deploy.deployments import Deployments, DeploymentState
from services.deploy.pipeline import DeployOutcome, DeployPipeline
from services.hosts.registry import Hosts, hosts_from_config
from services.hosts.runner import LocalHost
from services.progress import Progress
from services.records.audit import AuditLog
from services.records.storage import Storage
from services.releases.layout import ReleaseLayout

TEMPLATE = "b-canary@.service"
ERROR_RATIO = "0.5"  # what ROOT/errors-v2 injects: half of the canary's GET / answer 500
WINDOW_S = 3
VISIBLE_POLL_S = 0.05  # the bench's own Prometheus poll
BACK_POLL_S = 0.02  # the bench's own `get weight` poll
REACTION_TIMEOUT_S = 30.0
TO_FIVE_TIMEOUT_S = 60.0
WALK = (5, 25, 50, 100, 0)  # green's share, percent; B repeats it
IDLE_S = (0.02, 0.1)  # KeepAliveLoad's gaps: connections are idle most of the time
CLIENTS = 4
PHASES = random.Random(7)  # the marker's offset within an interval: the same every run

OPS_A = """
[environments.staging]
[hosts.sandbox]
prefix = ["nsenter", "-t", "{pid}", "-m", "-p"]
[services.app]
environment = "staging"
host = "sandbox"
unit = "{template}"
[services.app.health]
url = "http://127.0.0.1:{front}/health"
timeout_s = 2
consecutive = 2
within_s = 8
interval_s = 0.1
[services.app.deploy]
root = "{root}"
git = "{git}"
keep = 3
watch_s = 0
strategy = "canary"
[services.app.deploy.blue_green]
blue_port = {blue}
green_port = {green}
health_url = "http://127.0.0.1:{{port}}/health"
upstream_file = "{root}/upstream.conf"
reload = ["true"]
drain_s = 0.3
[services.app.deploy.canary]
steps = [5, 25, 50, 100]
step_s = 600
interval_s = {interval:g}
traffic_timeout_s = 60
router = "haproxy"
haproxy = {{ admin = "{admin}", backend = "app" }}
[services.app.deploy.canary.analysis]
prometheus_url = "{prometheus}"
window_s = {window}
min_requests = 10
max_error_ratio = 0.05
errors_vs_stable = {{ factor = 1.5, plus = 0.005 }}
"""

# canary_stage.py's NGINX_CONF without the access log; keep-alive is nginx's default (on).
NGINX_CONF = """\
user root;
worker_processes 1;
pid nginx.pid;
error_log error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path tmp/client_body;
    proxy_temp_path       tmp/proxy;
    fastcgi_temp_path     tmp/fastcgi;
    uwsgi_temp_path       tmp/uwsgi;
    scgi_temp_path        tmp/scgi;
    include {prefix}/upstream.conf;
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://app; }}
    }}
}}
"""

# B's backends: one process (apart from the bench's GIL), a port per colour, the colour as
# the body. HTTP/1.1 with a Content-Length, so HAProxy keeps its server connections.
BACKEND_PY = """\
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = self.server.color.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

servers = []
for color, port in (("blue", int(sys.argv[1])), ("green", int(sys.argv[2]))):
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.color = color
    servers.append(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
print("listening", flush=True)
threading.Event().wait()
"""


def median_or_nan(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- A: breach reaction ---------------------------------------------------------------------


@dataclass
class Reaction:
    interval_s: float
    visible: list[float] = field(default_factory=list)  # marker -> t_visible
    back: list[float] = field(default_factory=list)  # t_visible -> t_back (the figure)
    total: list[float] = field(default_factory=list)  # marker -> t_back
    judged: list[float] = field(default_factory=list)  # t_visible -> opsgate's breach verdict
    outcomes: Counter[str] = field(default_factory=Counter)  # how the pipeline ended
    user_failures: int = 0  # transport errors or non-injected non-200s, all runs
    requests: int = 0
    failures: list[str] = field(default_factory=list)


@dataclass
class StageA:
    sandbox: SystemdSandbox
    prometheus: Prometheus
    haproxy: HAProxyFiles
    blue: int
    green: int
    base: Path
    root: Path


@dataclass
class WorldA:
    stage: StageA
    deployments: Deployments
    layout: ReleaseLayout
    router: HaproxyWeights
    poll_http: httpx.AsyncClient  # the bench's own client: opsgate's stays as it would be


def ops_a(stage: StageA, git: str, interval: float) -> OpsConfig:
    text = OPS_A.format(
        pid=stage.sandbox.pid, template=TEMPLATE, front=stage.haproxy.listen_port,
        root=stage.root, git=git, blue=stage.blue, green=stage.green, interval=interval,
        admin=stage.haproxy.admin_socket, prometheus=stage.prometheus.url, window=WINDOW_S,
    )  # fmt: skip
    return parse_ops_text(text, "bench ops file")


def analysis_of(ops: OpsConfig) -> Analysis:
    deploy = ops.services["app"].deploy
    assert deploy is not None and deploy.canary is not None
    return deploy.canary.analysis


async def verdict_now(world: WorldA, source: PrometheusSource, analysis: Analysis) -> Verdict:
    """What opsgate's analysis would say at this instant (CanaryStrategy._analyse, whose
    window is the full window_s once the canary has run that long; the bench waits so)."""
    stage, window = world.stage, analysis.window_s
    green, blue = await asyncio.gather(
        source.sample("green", stage.green, window), source.sample("blue", stage.blue, window)
    )
    return judge(green, blue, analysis)


async def first_breach(world: WorldA, analysis: Analysis, stop: asyncio.Event) -> float | None:
    source = PrometheusSource(world.poll_http, analysis)
    while not stop.is_set():
        started = time.monotonic()
        if (await verdict_now(world, source, analysis)).breach is not None:
            return started  # the breach was visible to a query made now
        await asyncio.sleep(VISIBLE_POLL_S)
    return None


async def weight_of(router: HaproxyWeights, server: str) -> int:
    """One `get weight` per command line: HaproxyWeights.weights() sends both in one line, and
    HAProxy 2.6 separates the two answers with an empty line, which it does not expect."""
    answer = await router.command(f"get weight app/{server}")
    return int(answer.split()[0])


async def first_zero(world: WorldA, stop: asyncio.Event) -> float | None:
    while not stop.is_set():
        if await weight_of(world.router, "green") == 0:
            return time.monotonic()  # the end of the poll: errs late
        await asyncio.sleep(BACK_POLL_S)
    return None


async def at_five(world: WorldA, deployment_id: int, task: asyncio.Task[DeployOutcome]) -> None:
    deadline = time.monotonic() + TO_FIVE_TIMEOUT_S
    while True:
        row = await world.deployments.canary.get(deployment_id)
        # The row moves before the proxy does: wait for both.
        at_step = row is not None and row.phase is Phase.STEPS and row.weight == 5
        if at_step and await weight_of(world.router, "green") == 5:
            return
        if task.done():
            outcome = task.result()
            raise RuntimeError(f"the canary ended before 5%: {outcome.state}: {outcome.error}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no canary at 5% within {TO_FIVE_TIMEOUT_S:g} s: {row}")
        await asyncio.sleep(0.05)


def injected(result_body: str | None) -> bool:
    return "injected" in (result_body or "")


async def opsgate_verdicts(world: WorldA, deployment_id: int, since: float) -> list[str]:
    """opsgate's own verdicts (its rows carry wall-clock times), relative to `since`."""
    rows = await world.deployments.canary.analyses(deployment_id)
    return [f"{datetime.fromisoformat(r.at).timestamp() - since:+.2f} s {r.verdict}" for r in rows]


async def clean_window(world: WorldA, analysis: Analysis) -> None:
    """Off the clock, between runs: until the last canary's errors have left the window.

    opsgate's own window never reaches back before its canary started, but the bench's poll
    (verdict_now) uses the full window_s: the old process's 500s on the same port must be
    gone from it, or the bench would see a breach before the marker."""
    source = PrometheusSource(world.poll_http, analysis)
    deadline = time.monotonic() + REACTION_TIMEOUT_S
    while (await source.sample("green", world.stage.green, analysis.window_s)).errors > 0:
        if time.monotonic() > deadline:
            raise RuntimeError("the last canary's errors stay in the window")
        await asyncio.sleep(0.2)


async def breach_once(
    world: WorldA, pipeline: DeployPipeline, ops: OpsConfig, into: Reaction
) -> None:
    stage, deployments = world.stage, world.deployments
    marker = stage.root / "errors-v2"
    analysis = analysis_of(ops)
    await clean_window(world, analysis)
    requested = await deployments.request("app", "staging", "v2", "1001")
    await deployments.advance(requested.id, DeploymentState.APPROVED, "1002")
    visible: float | None = None
    back: float | None = None
    marked = marked_wall = 0.0
    with RequestLoad(stage.haproxy.listen_port, threads=3, interval_s=0.004) as load:
        task = asyncio.create_task(pipeline.run(requested.id, Progress()))
        try:
            await at_five(world, requested.id, task)
            # Two passing analyses at 5% first, then a random phase: opsgate's ticks run from
            # the step's start, so a fixed wait would put the marker at the same point of the
            # interval every run and sample one reaction time only.
            await asyncio.sleep(2 * into.interval_s + PHASES.uniform(0, into.interval_s))
            source = PrometheusSource(world.poll_http, analysis)
            before = await verdict_now(world, source, analysis)
            green = await weight_of(world.router, "green")
            if before.breach is None and before.enough_traffic and green == 5:
                marker.write_text(ERROR_RATIO + "\n")
                marked, marked_wall = time.monotonic(), time.time()
                stop = asyncio.Event()
                pollers = asyncio.gather(
                    first_breach(world, analysis, stop), first_zero(world, stop)
                )
                try:
                    visible, back = await asyncio.wait_for(
                        asyncio.shield(pollers), REACTION_TIMEOUT_S
                    )
                except TimeoutError:
                    pass  # reported below, with opsgate's verdicts
                finally:
                    stop.set()
                    with suppress(Exception):
                        await pollers
            else:
                verdicts = await opsgate_verdicts(world, requested.id, time.time())
                into.failures.append(
                    f"no marker: before it, the bench's verdict was {before.word}, green at"
                    f" {green}%; opsgate's verdicts from now: {', '.join(verdicts)}"
                )
            outcome = await asyncio.wait_for(task, 60)
        finally:
            marker.unlink(missing_ok=True)
            if not task.done():
                task.cancel()
                with suppress(BaseException):
                    await task
    results = load.results
    into.requests += len(results)
    into.user_failures += sum(1 for r in results if not r.ok and not injected(r.body))
    # One line per kind of ending: the canary's own error ratio varies run to run.
    error = re.sub(r"errors \d+\.\d%", "errors x%", " ".join((outcome.error or "").split()))
    into.outcomes[f"{outcome.state}: {error}"] += 1
    weights = {side: await weight_of(world.router, side) for side in ("blue", "green")}
    # The mark of the failed canary: cleared so the next run may deploy v2 again.
    await world.layout.clear_bad("v2")
    if not marked:
        return
    if outcome.ok:
        into.failures.append(f"v2 succeeded despite {ERROR_RATIO} errors")
        return
    if weights != {"blue": 100, "green": 0}:
        into.failures.append(f"after the rollback HAProxy says {weights}")
        return
    if visible is None or back is None:
        verdicts = await opsgate_verdicts(world, requested.id, marked_wall)
        into.failures.append(
            f"breach seen {visible is not None}, green at 0 {back is not None} within"
            f" {REACTION_TIMEOUT_S:g} s; opsgate's verdicts from the marker: {', '.join(verdicts)}"
        )
        return
    into.visible.append(visible - marked)
    into.back.append(back - visible)
    into.total.append(back - marked)
    rows = await deployments.canary.analyses(requested.id)
    breach = next((r for r in rows if r.verdict == "breach"), None)
    if breach is not None:  # opsgate's verdict, on its own clock: a cross-check of t_back
        at = datetime.fromisoformat(breach.at).timestamp() - marked_wall
        into.judged.append(at - (visible - marked))


async def part_a(stage: StageA, runs: int, intervals: list[float]) -> list[Reaction]:
    repo = make_app_repo(stage.base / "app.git")
    units = stage.sandbox.unit_dir
    (units / TEMPLATE).write_text(
        "[Unit]\nDescription=canary bench app %i\nStartLimitIntervalSec=0\n[Service]\n"
        f"Type=notify\nEnvironmentFile={stage.root}/%i.env\nWorkingDirectory={stage.root}/%i\n"
        f'ExecStart="{sys.executable}" "{stage.root}/%i/app.py"\n'
    )
    host = stage.sandbox.host
    await host.run(["systemctl", "daemon-reload"])
    configs = {interval: ops_a(stage, repo.url, interval) for interval in intervals}
    first = configs[intervals[0]]
    hosts: Hosts = hosts_from_config(first.hosts)
    results = [Reaction(interval) for interval in intervals]
    try:
        with tempfile.TemporaryDirectory() as db_dir:
            async with (
                Storage(Path(db_dir) / "opsgate.db") as storage,
                httpx.AsyncClient() as http,
                httpx.AsyncClient() as poll_http,
            ):
                deployments = Deployments(storage, AuditLog(storage))

                def pipeline_for(ops: OpsConfig) -> DeployPipeline:
                    controller = ServiceController(ops, hosts, http, start_timeout_s=10)
                    return DeployPipeline(
                        lambda: ops, lambda: hosts, deployments, lambda: controller, http,
                        start_timeout_s=10,
                    )  # fmt: skip

                pipelines = {interval: pipeline_for(ops) for interval, ops in configs.items()}
                canary = first.services["app"].deploy
                assert canary is not None and canary.canary is not None
                assert canary.canary.haproxy is not None
                router = HaproxyWeights(canary.canary.haproxy)
                world = WorldA(
                    stage, deployments, ReleaseLayout(hosts.get("sandbox"), str(stage.root)),
                    router, poll_http,
                )  # fmt: skip
                # v1 first: nothing to compare with, so it starts alone on blue.
                requested = await deployments.request("app", "staging", "v1", "1001")
                await deployments.advance(requested.id, DeploymentState.APPROVED, "1002")
                outcome = await pipelines[intervals[0]].run(requested.id, Progress())
                if not outcome.ok:
                    sys.exit(f"setup: deploying v1 failed: {outcome.state}: {outcome.error}")
                # Prometheus knows both targets from its start; wait for the first scrapes.
                for port in (stage.blue, stage.green):
                    await wait_for_value(
                        stage.prometheus.url, f'up{{instance="127.0.0.1:{port}"}}', timeout=40
                    )
                for reaction in results:
                    for _ in range(runs):
                        await breach_once(
                            world, pipelines[reaction.interval_s], configs[reaction.interval_s],
                            reaction,
                        )  # fmt: skip
    finally:
        await hosts.aclose()
        for unit in ("b-canary@blue.service", "b-canary@green.service"):
            await host.run(["systemctl", "stop", unit])
        (units / TEMPLATE).unlink(missing_ok=True)
        await host.run(["systemctl", "daemon-reload"])
        await host.run(["systemctl", "reset-failed"])
    return results


def report_a(results: list[Reaction], runs: int) -> None:
    print(
        f"A. breach reaction: HAProxy router, Prometheus scrape 1 s, window {WINDOW_S} s, "
        f"errors-v2 = {ERROR_RATIO} at 5%; {runs} runs per interval"
    )
    print(
        f"   polls: Prometheus every {VISIBLE_POLL_S * 1000:.0f} ms (opsgate's queries + judge),"
        f" HAProxy `get weight` every {BACK_POLL_S * 1000:.0f} ms"
    )
    print(f"{'seconds':<44} {'median':>8} {'min':>8} {'max':>8}  per run")
    for reaction in results:
        i = reaction.interval_s
        print(f"interval_s = {i:g}")
        for label, values in (
            ("  marker -> breach visible in Prometheus", reaction.visible),
            ("  visible -> traffic back on stable", reaction.back),
            ("  marker -> traffic back on stable", reaction.total),
            ("  visible -> opsgate's breach verdict (row)", reaction.judged),
        ):
            if not values:
                print(f"{label:<44} (no successful runs)")
                continue
            each = " ".join(f"{v:.3f}" for v in values)
            print(
                f"{label:<44} {statistics.median(values):8.3f} {min(values):8.3f}"
                f" {max(values):8.3f}  {each}"
            )
        if reaction.back:
            median, worst = statistics.median(reaction.back), max(reaction.back)
            goal = i + 1
            verdict = "met" if worst < goal else "MISSED"
            print(
                f"  ratio reaction / interval: median {median / i:.2f}, max {worst / i:.2f};"
                f" goal interval + 1 s = {goal:g} s: max / goal {worst / goal:.2f} ({verdict})"
            )
        print(
            f"  users: {reaction.requests} requests through HAProxy, "
            f"{reaction.user_failures} failed beyond the injected 500s"
        )
        for ended, count in reaction.outcomes.items():
            print(f"  pipeline ended {count}x: {ended}")
        for failure in reaction.failures:
            print(f"  FAILED run: {failure}")


# -- B: weight-change cost ------------------------------------------------------------------


@dataclass
class Cost:
    label: str
    changes: int = 0
    requests: int = 0
    failed: int = 0
    seconds: float = 0.0
    change_ms: list[float] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)

    def add(self, results: list[KeepAliveResult]) -> None:
        self.requests += len(results)
        bad = [r for r in results if not r.ok]
        self.failed += len(bad)
        self.examples += [r.describe() for r in bad[: 3 - len(self.examples)]]


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the backends exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {port} after {timeout:g} s") from None
            time.sleep(0.02)


@contextmanager
def running_backends(script: Path, blue: int, green: int) -> Iterator[None]:
    # Its stderr to a file: a proxy's hard stop resets connections, and each one is a traceback.
    with (script.parent / "backends.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(script), str(blue), str(green)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    try:
        for port in (blue, green):
            wait_listening(port, process)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def under_load(
    port: int,
    cost: Cost,
    changes: int,
    pause_s: float,
    change: Callable[[int], Awaitable[None]] | None,
) -> None:
    """KeepAliveLoad through `port`; `changes` weight changes (or none: the same time idle)."""
    with KeepAliveLoad(port, threads=CLIENTS, idle_s=IDLE_S) as load:
        await asyncio.to_thread(load.wait_for_count, 20)  # every client connected and warm
        since = load.now()
        for index in range(changes):
            if change is not None:
                started = time.perf_counter()
                await change(WALK[index % len(WALK)])
                cost.change_ms.append((time.perf_counter() - started) * 1000)
                cost.changes += 1
            await asyncio.sleep(pause_s)
        until = load.now()
        # Requests sent up to `until` are in flight or done; wait for them, off the count.
        await asyncio.sleep(0.3)
    cost.add(load.between(since, until))
    cost.seconds += until - since


async def part_b(base: Path, changes: int, pause_s: float) -> list[Cost]:
    blue, green = free_port(), free_port()
    script = base / "backends.py"
    script.write_text(BACKEND_PY)
    prefix = base / "nginx"
    (prefix / "tmp").mkdir(parents=True)
    nginx_port = free_port()
    (prefix / "nginx.conf").write_text(NGINX_CONF.format(prefix=prefix, port=nginx_port))
    files = NginxFiles(prefix, prefix / "nginx.conf", prefix / "upstream.conf", nginx_port)
    # The canary config's own templates write upstream.conf; only the routing part is used.
    canary = CanaryConfig.model_validate({"steps": [5, 25, 50, 100], "analysis": {}})
    ports: dict[Color, int] = {"blue": blue, "green": green}
    nginx = NginxWeights(
        "app", LocalHost(), upstream_file=str(files.upstream), reload=files.reload_argv(),
        canary=canary, ports=ports,
    )  # fmt: skip
    files.upstream.write_text(nginx.text(split("green", 0)))
    # A short directory: a unix socket path has 107 bytes at most.
    hap_dir = Path(tempfile.mkdtemp(prefix="bcan-"))
    try:
        hap = write_haproxy_config(hap_dir, free_port(), {"blue": (blue, 100), "green": (green, 0)})
        router = HaproxyWeights(HaproxyRouter(admin=str(hap.admin_socket), backend="app"))
        costs = {
            name: Cost(name)
            for name in (
                "nginx, no change (baseline)",
                "nginx: upstream file + reload",
                "HAProxy, no change (baseline)",
                "HAProxy: runtime API",
            )
        }
        labels = list(costs)

        def changer(weights: WeightRouter) -> Callable[[int], Awaitable[None]]:
            return lambda weight: weights.set_weights(split("green", weight))

        with ExitStack() as stack:
            stack.enter_context(running_backends(script, blue, green))
            stack.enter_context(running_nginx(files))
            stack.enter_context(running_haproxy(hap))
            for port, baseline, changed, weights in (
                (nginx_port, labels[0], labels[1], nginx),
                (hap.listen_port, labels[2], labels[3], router),
            ):
                await under_load(port, costs[baseline], changes, pause_s, None)
                await under_load(port, costs[changed], changes, pause_s, changer(weights))
        return list(costs.values())
    finally:
        shutil.rmtree(hap_dir, ignore_errors=True)


def report_b(costs: list[Cost], pause_s: float) -> None:
    walk = " -> ".join(map(str, WALK))
    print(
        f"B. weight changes under a KeepAliveLoad: {CLIENTS} clients, one reused connection "
        f"each, idle {IDLE_S[0] * 1000:.0f}-{IDLE_S[1] * 1000:.0f} ms; walk {walk} to green, "
        f"{pause_s:g} s apart"
    )
    header = f"{'router':<32} {'changes':>7} {'seconds':>7} {'requests':>8} {'failed':>6}"
    print(header + f" {'failed/change':>13} {'change ms (median, max)':>24}")
    for cost in costs:
        per = f"{cost.failed / cost.changes:.2f}" if cost.changes else "-"
        timing = (
            f"{statistics.median(cost.change_ms):.1f}, {max(cost.change_ms):.1f}"
            if cost.change_ms
            else "-"
        )
        print(
            f"{cost.label:<32} {cost.changes:>7} {cost.seconds:7.1f} {cost.requests:>8}"
            f" {cost.failed:>6} {per:>13} {timing:>24}"
        )
    for cost in costs:
        for example in cost.examples:
            print(f"  {cost.label}: e.g. {example}")
    nginx_ms, hap_ms = (median_or_nan(c.change_ms) for c in (costs[1], costs[3]))
    print(f"ratio change time nginx / HAProxy (medians): {nginx_ms / hap_ms:.1f}")


# -- main -----------------------------------------------------------------------------------


def missing(parts: str) -> str | None:
    checks = [haproxy_harness.unavailable_reason, nginx_harness.nginx_unavailable_reason]
    if parts in ("both", "a"):
        checks += [systemd_unavailable, prometheus_harness.unavailable_reason]
    return next((reason for check in checks if (reason := check()) is not None), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=4, help="A: breaches per interval")
    parser.add_argument("--intervals", default="2,1", help="A: analysis intervals, seconds")
    parser.add_argument("--changes", type=int, default=20, help="B: weight changes per router")
    parser.add_argument("--pause-s", type=float, default=0.5, help="B: between weight changes")
    parser.add_argument("--part", choices=("both", "a", "b"), default="both")
    args = parser.parse_args()
    reason = missing(args.part)
    if reason is not None:
        sys.exit(f"cannot run: {reason}")
    intervals = [float(text) for text in args.intervals.split(",")]
    haproxy = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; "
        f"{haproxy.splitlines()[0] if haproxy else 'haproxy ?'}; {nginx}"
    )
    started = time.monotonic()
    if args.part in ("both", "a"):
        blue, green = free_port(), free_port()
        # Prometheus first: a new target is scraped only after 5-15 s; the boot overlaps it.
        with (
            running_prometheus([f"127.0.0.1:{blue}", f"127.0.0.1:{green}"]) as prometheus,
            booted() as sandbox,  # blocking boot, before any event loop
        ):
            # Under work_dir, not /tmp: the sandbox has its own /tmp, and git runs inside it.
            base = Path(tempfile.mkdtemp(prefix="bench_canary_", dir=sandbox.work_dir))
            hap_dir = Path(tempfile.mkdtemp(prefix="bcan-"))
            try:
                root = base / "srv"
                root.mkdir()
                hap = write_haproxy_config(
                    hap_dir, free_port(), {"blue": (blue, 100), "green": (green, 0)}
                )
                with running_haproxy(hap):
                    stage = StageA(sandbox, prometheus, hap, blue, green, base, root)
                    results = asyncio.run(part_a(stage, args.runs, intervals))
            finally:
                shutil.rmtree(base, ignore_errors=True)
                shutil.rmtree(hap_dir, ignore_errors=True)
        report_a(results, args.runs)
        print()
    if args.part in ("both", "b"):
        base = Path(tempfile.mkdtemp(prefix="bench_canary_b_"))
        try:
            costs = asyncio.run(part_b(base, args.changes, args.pause_s))
        finally:
            shutil.rmtree(base, ignore_errors=True)
        report_b(costs, args.pause_s)
    print(f"(whole bench: {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
