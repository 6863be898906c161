"""DeployPipeline's newer features on the real systemd sandbox: watch-window triggers (memory,
error rate), abort, pre-checks, migrate and smoke commands, deploy windows and freezes, drills.

Same world as tests/services/test_pipeline.py (real git, a real unit, real HTTP health checks),
but the ops file is re-read between deploys (`World.configure`), as a reload would: most tests
deploy v1 with a plain config, then v2 with the feature under test switched on.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.dev.demo_web import free_port
from bot.dev.harness.gitrepo import app_argv, make_app_repo
from bot.dev.harness.systemd import SystemdSandbox
from config.opsfile import OpsConfig, parse_ops_text
from services.alerts.model import AlertStatus, IncomingAlert
from services.control.controller import ServiceController
from services.control.systemd import quote_exec
from services.deploy.deployments import (
    DeploymentKind,
    Deployments,
    DeploymentState,
    IllegalTransition,
)
from services.deploy.pipeline import DeployPipeline
from services.deploy.steps import DeployOutcome
from services.hosts.registry import Hosts, hosts_from_config
from services.progress import Progress, Step, StepStatus
from services.records.audit import AuditLog
from services.records.storage import Storage
from services.releases.layout import ReleaseLayout

S = DeploymentState
UNIT = "t-trig.service"  # test_pipeline.py uses t-app.service: never the same unit
PYTHON_FOUND = ".".join(map(str, sys.version_info[:3]))  # what the python pre-check will report

# {environment}, {deploy} and {prechecks} are TOML lines a test adds to those tables.
OPS = """
[environments.staging]
{environment}
[hosts.sandbox]
prefix = ["nsenter", "-t", "{pid}", "-m", "-p"]
[services.app]
environment = "staging"
host = "sandbox"
unit = "{unit}"
[services.app.health]
url = "http://127.0.0.1:{port}/health"
timeout_s = 2
attempts = 1
interval_s = 0.2
consecutive = 2
within_s = 3
[services.app.deploy]
root = "{root}"
git = "{git}"
build = [["test", "-f", "app.py"]]
keep = 5
watch_s = {watch_s}
watch_interval_s = 0.2
max_failed_checks = 2
{deploy}
[services.app.deploy.prechecks]
{prechecks}
"""


class World:
    """One service on the sandbox; `configure` swaps the ops file the pipeline reads."""

    def __init__(
        self, sandbox: SystemdSandbox, base: Path, git: str, http: httpx.AsyncClient,
        deployments: Deployments,
    ) -> None:  # fmt: skip
        self.sandbox, self.base, self.git = sandbox, base, git
        self.root, self.port = base / "srv", free_port()
        self.http, self.deployments = http, deployments
        self.now: datetime | None = None  # None: the real time
        self.ops: OpsConfig = parse_ops_text(self._text())
        self.hosts: Hosts = hosts_from_config(self.ops.hosts)  # the same in every config
        self.configure()
        self.pipeline = DeployPipeline(
            lambda: self.ops,
            lambda: self.hosts,
            deployments,
            lambda: self.controller,
            http,
            start_timeout_s=10,
            clock=lambda: self.now or datetime.now(UTC),
        )
        self.layout = ReleaseLayout(self.hosts.get("sandbox"), str(self.root))

    def _text(
        self, watch_s: float = 0, deploy: str = "", prechecks: str = "", environment: str = ""
    ) -> str:
        return OPS.format(
            pid=self.sandbox.pid, unit=UNIT, port=self.port, root=self.root, git=self.git,
            watch_s=watch_s, deploy=deploy, prechecks=prechecks, environment=environment,
        )  # fmt: skip

    def configure(
        self, *, watch_s: float = 0, deploy: str = "", prechecks: str = "", environment: str = ""
    ) -> None:
        """What the pipeline reads from now on (the hosts stay as they are)."""
        self.ops = parse_ops_text(self._text(watch_s, deploy, prechecks, environment))
        self.controller = ServiceController(self.ops, self.hosts, self.http, start_timeout_s=10)

    async def request(
        self,
        version: str,
        kind: DeploymentKind = DeploymentKind.DEPLOY,
        *,
        emergency: bool = False,
        previous_version: str | None = None,
    ) -> int:
        """A deployment requested by 1001 and approved by 1002."""
        requested = await self.deployments.request(
            "app", "staging", version, "1001", kind=kind, emergency=emergency,
            previous_version=previous_version,
        )  # fmt: skip
        await self.deployments.advance(requested.id, S.APPROVED, "1002")
        return requested.id

    async def deploy(
        self,
        version: str,
        kind: DeploymentKind = DeploymentKind.DEPLOY,
        *,
        emergency: bool = False,
    ) -> tuple[int, DeployOutcome, Progress]:
        deployment_id = await self.request(version, kind, emergency=emergency)
        progress = Progress()
        if kind is DeploymentKind.ROLLBACK:
            outcome = await self.pipeline.rollback(deployment_id, progress)
        else:
            outcome = await self.pipeline.run(deployment_id, progress)
        return deployment_id, outcome, progress

    async def drill(self, version: str, back_to: str) -> tuple[int, DeployOutcome, Progress]:
        deployment_id = await self.request(version, DeploymentKind.DRILL, previous_version=back_to)
        progress = Progress()
        return deployment_id, await self.pipeline.drill(deployment_id, progress), progress

    async def states(self, deployment_id: int) -> list[str]:
        return [e.data["to"] for e in await self.deployments.events(deployment_id)]

    async def health(self) -> dict[str, Any]:
        response = await self.http.get(f"http://127.0.0.1:{self.port}/health")
        body: dict[str, Any] = response.json()
        return {"code": response.status_code, **body}

    def release_file(self, version: str, name: str) -> Path:
        # The release root is under work_dir: the same path inside the sandbox and out here.
        return Path(self.layout.path(version)) / name


@pytest.fixture
async def world(systemd_sandbox: SystemdSandbox, tmp_path: Path) -> AsyncIterator[World]:
    sandbox = systemd_sandbox
    # Under work_dir, not /tmp: the sandbox has its own /tmp, and git runs inside it.
    base = Path(tempfile.mkdtemp(prefix="triggers_", dir=sandbox.work_dir))
    repo = make_app_repo(base / "app.git")
    # SQLite only: what the triggers decide is the pipeline's, and the pipeline's writes run on
    # PostgreSQL too in test_pipeline.py (the suite's time is better spent there).
    async with Storage(tmp_path / "opsgate.db") as storage, httpx.AsyncClient() as http:
        made = World(sandbox, base, repo.url, http, Deployments(storage, AuditLog(storage)))
        argv = app_argv(f"{made.root}/current", made.port, python=sys.executable)
        unit = ["[Unit]", "Description=pipeline trigger test app", "[Service]", "Type=notify"]
        (sandbox.unit_dir / UNIT).write_text(
            "\n".join([*unit, f"ExecStart={quote_exec(argv)}", ""])
        )
        await sandbox.host.run(["systemctl", "daemon-reload"])
        yield made
    await made.hosts.aclose()
    await sandbox.host.run(["systemctl", "stop", UNIT])
    (sandbox.unit_dir / UNIT).unlink()
    await sandbox.host.run(["systemctl", "daemon-reload"])
    await sandbox.host.run(["systemctl", "reset-failed"])
    shutil.rmtree(base)


def step(progress: Progress, title: str) -> Step:
    return next(s for s in progress.steps if s.title == title)


def titles(progress: Progress) -> list[str]:
    return [s.title for s in progress.steps]


def failed_steps(progress: Progress) -> list[str]:
    return [s.title for s in progress.steps if s.status is StepStatus.FAILED]


HAPPY = ["requested", "approved", "pre_checks", "building", "switching", "verifying",
         "watching", "succeeded"]  # fmt: skip
ROLLED_BACK = [*HAPPY[:6], "failed", "rolling_back", "rolled_back"]  # failed while verifying
WATCH_ROLLED_BACK = [*HAPPY[:7], "failed", "rolling_back", "rolled_back"]  # ... while watching
FAILED_PRE_CHECKS = ["requested", "approved", "pre_checks", "failed"]


async def test_memory_over_its_limit_while_watched_rolls_back_and_marks_bad(world: World) -> None:
    # max_memory_percent = 100: the whole host's memory, which the app never reaches.
    world.configure(watch_s=1.0, deploy="max_memory_percent = 100")
    _, outcome, progress = await world.deploy("v1")
    assert outcome.ok, outcome.error
    assert "memory " in step(progress, "watch 1 s").detail  # the RSS really was read

    world.configure(watch_s=1.5, deploy="max_memory_mib = 1")  # any Python is bigger
    second, outcome, progress = await world.deploy("v2")
    assert (outcome.ok, outcome.state, outcome.rolled_back_to) == (False, S.ROLLED_BACK, "v1")
    assert outcome.error is not None and "app used too much memory 2 time(s)" in outcome.error
    assert "> 1 MiB" in outcome.error
    assert outcome.marked_bad
    assert await world.layout.bad_reason("v2") == outcome.error
    assert await world.states(second) == WATCH_ROLLED_BACK
    assert failed_steps(progress) == ["watch 1.5 s"]
    assert await world.layout.current() == "v1"
    assert (await world.health())["version"] == "v1"
    assert await world.deployments.in_flight() == []


@dataclass
class Counters:
    """Prometheus counters that grow on every scrape: `ok` and `errors` requests per scrape."""

    ok: int
    errors: int
    served: dict[str, int] = field(default_factory=lambda: {"200": 0, "500": 0})
    scrapes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def scrape(self) -> str:
        with self.lock:
            self.scrapes += 1
            self.served["200"] += self.ok
            self.served["500"] += self.errors
            lines = ["# TYPE http_requests_total counter"]
            lines += [f'http_requests_total{{code="{c}"}} {n}' for c, n in self.served.items()]
            return "\n".join([*lines, ""])


@contextmanager
def metrics_endpoint(counters: Counters) -> Iterator[str]:
    """A real HTTP server on loopback serving `counters` at /metrics; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = counters.scrape().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def error_rate(url: str) -> str:
    return "\n".join([
        "[services.app.deploy.error_rate]",
        f'url = "{url}"',
        'errors = "http_requests_total"',
        'errors_match = { code = "5.." }',
        'total = "http_requests_total"',
        "max_ratio = 0.05",
    ])  # fmt: skip


async def test_error_rate_over_its_limit_while_watched_rolls_back(world: World) -> None:
    counters = Counters(ok=100, errors=0)
    with metrics_endpoint(counters) as url:
        world.configure(watch_s=1.0, deploy=error_rate(url))
        _, outcome, progress = await world.deploy("v1")
        assert outcome.ok, outcome.error  # no errors at all: the control case
        assert counters.scrapes >= 2  # a baseline, then at least one reading
        assert step(progress, "watch 1 s").detail.endswith("errors ok")

        # From now on 10 of every 110 requests fail: 10/110 = 9.1%, over 5%.
        counters.errors = 10
        scrapes_before = counters.scrapes
        second, outcome, progress = await world.deploy("v2")
    assert (outcome.ok, outcome.state, outcome.rolled_back_to) == (False, S.ROLLED_BACK, "v1")
    assert outcome.error is not None and "app had too many errors 2 time(s)" in outcome.error
    assert "error rate 9.1% over 5% (10/110)" in outcome.error
    assert outcome.marked_bad and await world.layout.bad_reason("v2") == outcome.error
    assert counters.scrapes - scrapes_before >= 3  # the baseline is never judged on its own
    assert await world.states(second) == WATCH_ROLLED_BACK
    assert failed_steps(progress) == ["watch 1 s"]
    assert (await world.health())["version"] == "v1"


async def wait_for(progress: Progress, title: str) -> Step:
    """The step once the pipeline has entered it (bounded: a hang fails, never blocks)."""
    for _ in range(600):
        found = [s for s in progress.steps if s.title == title]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached step {title!r}; steps: {titles(progress)}")


async def test_abort_while_watching_rolls_back_without_marking_bad(world: World) -> None:
    assert (await world.deploy("v1"))[1].ok
    world.configure(watch_s=20)  # far longer than the test waits: only the abort ends it
    deployment_id, progress = await world.request("v2"), Progress()
    running = asyncio.create_task(world.pipeline.run(deployment_id, progress))
    await wait_for(progress, "watch 20 s")
    assert (await world.deployments.get(deployment_id)).state is S.WATCHING
    assert (await world.pipeline.abort(deployment_id, "1003")).state is S.WATCHING
    outcome = await running

    assert (outcome.ok, outcome.state, outcome.rolled_back_to) == (False, S.ROLLED_BACK, "v1")
    assert outcome.error == "Aborted by 1003 while watching."
    assert not outcome.marked_bad and await world.layout.bad_reason("v2") is None
    assert await world.states(deployment_id) == WATCH_ROLLED_BACK
    failed = [e for e in await world.deployments.events(deployment_id) if e.data["to"] == "failed"]
    assert [e.actor for e in failed] == ["1003"]  # the abort is on whoever pressed it
    assert step(progress, "watch 20 s").status is StepStatus.FAILED
    assert (await world.health())["version"] == "v1"
    # Not bad: deploying v2 again is allowed (and it is built already).
    assert not await world.layout.is_bad("v2")

    with pytest.raises(IllegalTransition, match="nothing to abort"):
        await world.pipeline.abort(deployment_id, "1003")  # finished: nothing to stop

    # Approved but not started: cancelled, and the pipeline then refuses to run it.
    waiting = await world.request("v2")
    assert (await world.pipeline.abort(waiting, "1003")).state is S.CANCELLED
    assert (await world.deployments.events(waiting))[-1].actor == "1003"
    with pytest.raises(IllegalTransition, match="not approved"):
        await world.pipeline.run(waiting, Progress())
    assert await world.deployments.in_flight() == []


async def test_a_critical_alert_while_watched_rolls_back_and_marks_bad(world: World) -> None:
    assert (await world.deploy("v1"))[1].ok
    world.configure(watch_s=20)
    deployment_id, progress = await world.request("v2"), Progress()
    running = asyncio.create_task(world.pipeline.run(deployment_id, progress))
    await wait_for(progress, "watch 20 s")
    now = datetime.now(UTC)

    def alert(service: str) -> IncomingAlert:
        labels = {"alertname": "ApiErrors", "severity": "critical", "service": service}
        return IncomingAlert(labels, {"summary": "5xx"}, AlertStatus.FIRING, now, None, "generic")

    # Another service's critical changes nothing here.
    await world.pipeline.critical_alerts([alert("other")])
    assert not running.done()
    await world.pipeline.critical_alerts([alert("app")])
    outcome = await running
    assert (outcome.state, outcome.rolled_back_to) == (S.ROLLED_BACK, "v1")
    assert outcome.error == "A critical alert fired while watched: ApiErrors 5xx"
    assert outcome.marked_bad and await world.layout.bad_reason("v2") == outcome.error
    assert (await world.health())["version"] == "v1"


async def test_abort_during_pre_checks_cancels_and_builds_nothing(world: World) -> None:
    assert (await world.deploy("v1"))[1].ok
    go = world.base / "go"
    # A pre-check that holds the deploy in pre_checks until the test creates `go`.
    gate = ["sh", "-c", f"while ! test -e {go}; do sleep 0.05; done"]
    world.configure(prechecks=f"commands = {{ gate = {json.dumps(gate)} }}")
    deployment_id, progress = await world.request("v2"), Progress()
    running = asyncio.create_task(world.pipeline.run(deployment_id, progress))
    try:
        await wait_for(progress, "check gate")
        assert (await world.pipeline.abort(deployment_id, "1003")).state is S.CANCELLED
    finally:
        go.touch()  # let the pre-check finish either way
    outcome = await running
    assert (outcome.ok, outcome.state) == (False, S.CANCELLED)
    assert await world.states(deployment_id) == ["requested", "approved", "pre_checks",
                                                 "cancelled"]  # fmt: skip
    assert "build v2" not in titles(progress)
    assert not await world.layout.exists("v2")
    assert await world.layout.current() == "v1"
    assert await world.deployments.in_flight() == []


async def test_cancel_mid_migration_kills_it_and_runs_nothing_after(world: World) -> None:
    assert (await world.deploy("v1"))[1].ok
    started, after = world.base / "started", world.base / "after-cancel"
    # The first migration says it started, then would wait forever; the second marks a file.
    hold = ["sh", "-c", f"touch {started}; while true; do sleep 0.05; done"]
    migrate = f"migrate = {json.dumps([hold, ['touch', str(after)]])}"
    world.configure(deploy=migrate)
    deployment_id, progress = await world.request("v2"), Progress()
    running = asyncio.create_task(world.pipeline.run(deployment_id, progress))
    while not started.exists():
        await asyncio.sleep(0.05)
    cancelled = await world.pipeline.cancel(deployment_id, "1003", "cancelled from chat")
    # cancel() returns once the run stopped: the outcome is there, and the lock is free.
    assert running.done() and cancelled.state is S.CANCELLED
    outcome = await running
    assert (outcome.ok, outcome.state) == (False, S.CANCELLED)
    assert not after.exists()  # the second migration never ran
    assert await world.layout.current() == "v1"
    assert await world.deployments.in_flight() == []
    events = await world.deployments.events(deployment_id)
    assert (events[-1].data["to"], events[-1].actor) == ("cancelled", "1003")
    assert events[-1].data["note"] == "cancelled from chat"


async def test_python_version_pre_check(world: World) -> None:
    assert (await world.deploy("v1"))[1].ok
    before = await world.health()
    python = f"python = {json.dumps([sys.executable])}"
    world.configure(prechecks=f'{python}\nmin_python = "99.0"')
    failed, outcome, progress = await world.deploy("v2")
    assert (outcome.ok, outcome.state) == (False, S.FAILED)
    assert outcome.error == (
        f"{sys.executable} on sandbox is Python {PYTHON_FOUND}; 99.0 or newer is needed."
    )
    assert await world.states(failed) == FAILED_PRE_CHECKS
    assert failed_steps(progress) == ["python version"]
    assert not await world.layout.exists("v2")  # nothing built
    assert await world.layout.current() == "v1"
    assert await world.health() == before  # same pid: never restarted

    world.configure(prechecks=f'{python}\nmin_python = "3.8"')
    _, outcome, progress = await world.deploy("v2")
    assert outcome.ok, outcome.error
    assert step(progress, "python version").detail == f"{sys.executable}: {PYTHON_FOUND}"
    assert (await world.health())["version"] == "v2"


async def test_failing_pre_checks_change_nothing(world: World) -> None:
    assert (await world.deploy("v1"))[1].ok
    before = await world.health()
    cases = [
        ('commands = { ok = ["true"], db = ["false"] }', "check db",
         "The pre-check db failed (exit status 1 on sandbox)."),
        ("min_available_memory_mib = 1000000000", "available memory",
         "MiB of memory available on sandbox; at least 1000000000 MiB are needed."),
        ("min_free_disk_mib = 1000000000", "free disk",
         "; at least 1000000000 MiB are needed."),
    ]  # fmt: skip
    for prechecks, failing_step, message in cases:
        world.configure(prechecks=prechecks)
        failed, outcome, progress = await world.deploy("v2")
        assert (outcome.ok, outcome.state) == (False, S.FAILED), prechecks
        assert outcome.error is not None and outcome.error.endswith(message), outcome.error
        assert await world.states(failed) == FAILED_PRE_CHECKS
        assert failed_steps(progress) == [failing_step]
        assert not await world.layout.exists("v2")
        assert await world.layout.current() == "v1"
        assert await world.health() == before
    assert await world.deployments.in_flight() == []


async def test_require_healthy_refuses_while_the_service_is_down(world: World) -> None:
    assert (await world.deploy("v1"))[1].ok
    stopped = await world.sandbox.host.run(["systemctl", "stop", UNIT])
    assert stopped.ok, stopped.summary

    world.configure(prechecks="require_healthy = true")
    failed, outcome, progress = await world.deploy("v2")
    assert (outcome.ok, outcome.state) == (False, S.FAILED)
    assert outcome.error is not None and outcome.error.startswith("app is not healthy now (")
    assert outcome.error.endswith("require_healthy is set.")
    assert await world.states(failed) == FAILED_PRE_CHECKS
    assert failed_steps(progress) == ["current health"]
    assert not await world.layout.exists("v2")

    # Without it the state is only reported: often a deploy is what fixes the service.
    world.configure()
    _, outcome, progress = await world.deploy("v2")
    assert outcome.ok, outcome.error
    assert step(progress, "current health").detail.startswith("not running")
    assert (await world.health())["version"] == "v2"


async def test_migrate_runs_in_the_release_before_the_switch(world: World) -> None:
    assert (await world.deploy("v1"))[1].ok
    before = await world.health()
    world.configure(deploy='migrate = [["false"]]')
    failed, outcome, progress = await world.deploy("v2")
    assert (outcome.ok, outcome.state, outcome.rolled_back_to) == (False, S.FAILED, None)
    assert outcome.error == (
        "The migration false failed (exit status 1 on sandbox)."
        " Nothing was switched; the database may be partly migrated."
    )
    assert await world.states(failed) == [*HAPPY[:4], "failed"]
    assert failed_steps(progress) == ["migration: false"]
    assert await world.layout.current() == "v1"
    assert await world.health() == before
    assert not await world.layout.is_bad("v2")  # it never ran: nothing to hold against it

    world.configure(deploy='migrate = [["touch", "migrated"]]')  # cwd: the release dir
    _, outcome, progress = await world.deploy("v2")
    assert outcome.ok, outcome.error
    assert world.release_file("v2", "migrated").exists()
    assert not world.release_file("v1", "migrated").exists()
    order = titles(progress)
    assert order.index("rollback point") < order.index("migration: touch")
    assert order.index("migration: touch") < order.index(f"restart {UNIT}")
    assert step(progress, "build v2").detail == "built already"  # from the failed attempt
    assert (await world.health())["version"] == "v2"


async def test_failing_smoke_check_rolls_back_and_marks_bad(world: World) -> None:
    world.configure(deploy='smoke = [["test", "-f", "app.py"]]')  # cwd: the release dir
    _, outcome, progress = await world.deploy("v1")
    assert outcome.ok, outcome.error
    assert step(progress, "smoke check: test").status is StepStatus.OK

    world.configure(deploy='smoke = [["test", "-f", "app.py"], ["false"]]')
    second, outcome, progress = await world.deploy("v2")
    assert (outcome.ok, outcome.state, outcome.rolled_back_to) == (False, S.ROLLED_BACK, "v1")
    assert outcome.error == "The smoke check false failed (exit status 1 on sandbox)."
    assert outcome.marked_bad and await world.layout.bad_reason("v2") == outcome.error
    assert failed_steps(progress) == ["smoke check: false"]
    order = titles(progress)
    assert order.index("health: 2 in a row") < order.index("smoke check: false")
    assert await world.states(second) == ROLLED_BACK
    assert (await world.health())["version"] == "v1"


WINDOWS = """
windows = [{ days = ["mon", "tue", "wed", "thu", "fri"], start = "09:00", end = "17:00" }]
freezes = [{ start = 2030-12-20T00:00:00Z, end = 2031-01-05T00:00:00Z, reason = "holidays" }]
"""


async def test_windows_and_freezes_hold_planned_deploys_but_not_emergencies(world: World) -> None:
    world.configure(environment=WINDOWS)
    world.now = datetime(2030, 6, 5, 10, 0, tzinfo=UTC)  # a Wednesday, 10:00 UTC
    _, outcome, progress = await world.deploy("v1")
    assert outcome.ok, outcome.error
    assert step(progress, "deploy window").detail == "open"

    world.now = datetime(2030, 6, 5, 20, 0, tzinfo=UTC)  # the same day, after hours
    late, outcome, progress = await world.deploy("v2")
    assert (outcome.ok, outcome.state) == (False, S.FAILED)
    assert outcome.error == (
        "staging takes deploys only in its window(s): mon,tue,wed,thu,fri 09:00-17:00 UTC."
    )
    assert await world.states(late) == FAILED_PRE_CHECKS
    assert failed_steps(progress) == ["deploy window"]

    world.now = datetime(2030, 12, 24, 10, 0, tzinfo=UTC)  # a Tuesday inside the window, frozen
    frozen, outcome, _ = await world.deploy("v2")
    assert (outcome.ok, outcome.state) == (False, S.FAILED)
    assert outcome.error == "staging is frozen until 2031-01-05 00:00 UTC: holidays."
    assert await world.states(frozen) == FAILED_PRE_CHECKS
    assert not await world.layout.exists("v2")  # refused before anything was built
    assert await world.layout.current() == "v1"

    urgent, outcome, progress = await world.deploy("v2", emergency=True)
    assert outcome.ok, outcome.error
    assert step(progress, "deploy window").detail == "emergency: windows and freezes do not apply"
    assert (await world.deployments.get(urgent)).emergency
    assert (await world.health())["version"] == "v2"

    # A rollback is never held back either (it has no window step at all).
    _, outcome, progress = await world.deploy("v1", DeploymentKind.ROLLBACK)
    assert outcome.ok, outcome.error
    assert "deploy window" not in titles(progress)
    assert (await world.health())["version"] == "v1"


DRILL = ["requested", "approved", "pre_checks", "switching", "verifying", "switching",
         "verifying", "succeeded"]  # fmt: skip


async def test_rollback_drill_goes_back_and_forward(world: World) -> None:
    assert (await world.deploy("v1"))[1].ok
    assert (await world.deploy("v2"))[1].ok
    drill, outcome, progress = await world.drill("v2", back_to="v1")
    assert (outcome.ok, outcome.state, outcome.version) == (True, S.SUCCEEDED, "v2")
    assert outcome.previous_version == "v1" and outcome.error is None
    assert isinstance(outcome.recovered_s, float) and outcome.recovered_s > 0
    assert isinstance(outcome.forward_s, float) and outcome.forward_s > 0
    assert await world.states(drill) == DRILL
    events = await world.deployments.events(drill)
    assert "time to recover" in events[-1].data["note"]
    assert events[3].data["note"] == "drill: back to v1"
    assert step(progress, "releases").detail == "v2 runs; drill: back to v1, then forward"
    # Each leg verified: back as a rollback would be (1 in a row), forward as a deploy (2).
    assert [t for t in titles(progress) if t.startswith("health:")] == [
        "health: 1 in a row",
        "health: 2 in a row",
    ]
    assert failed_steps(progress) == []
    assert await world.layout.current() == "v2"
    health = await world.health()
    assert (health["code"], health["version"]) == (200, "v2")
    assert not await world.layout.is_bad("v1") and not await world.layout.is_bad("v2")
    assert await world.deployments.in_flight() == []


async def test_failing_drill_marks_the_older_release_bad_and_goes_back(world: World) -> None:
    assert (await world.deploy("v2"))[1].ok
    _, outcome, _ = await world.deploy("v3")  # /health answers 503: rolled back, marked bad
    assert (outcome.state, outcome.rolled_back_to) == (S.ROLLED_BACK, "v2")
    await world.layout.clear_bad("v3")  # as if someone cleared it: the drill finds it out

    drill, outcome, progress = await world.drill("v2", back_to="v3")
    assert (outcome.ok, outcome.state, outcome.rolled_back_to) == (False, S.ROLLED_BACK, "v2")
    assert outcome.error is not None and "HTTP 503" in outcome.error
    assert outcome.error.endswith("v3 is marked bad: /rollback will not land on it.")
    # marked_bad speaks of outcome.version (v2), which stays good; v3 is the one marked.
    assert not outcome.marked_bad and not await world.layout.is_bad("v2")
    reason = await world.layout.bad_reason("v3")
    assert reason is not None and reason.startswith("failed a rollback drill: ")
    assert await world.states(drill) == [
        "requested", "approved", "pre_checks", "switching", "verifying", "failed",
        "rolling_back", "rolled_back",
    ]  # fmt: skip
    assert failed_steps(progress) == ["health: 1 in a row"]  # the back leg: rollback policy
    assert await world.layout.current() == "v2"
    health = await world.health()
    assert (health["code"], health["version"]) == (200, "v2")
    assert await world.deployments.in_flight() == []
