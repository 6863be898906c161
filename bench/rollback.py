"""Rollback latency and per-deploy overhead of opsgate's DeployPipeline on a real systemd.

A real systemd is booted in private PID + mount namespaces (bot/dev/harness/systemd.py). The
world is the one tests/services/test_pipeline.py builds: a git repository of the test app
(bot/dev/harness/gitrepo.py; tags v1 and v2 are used, both healthy), a Type=notify unit running
ROOT/current/app.py (StartLimitIntervalSec=0, so repeated restarts are not refused) and an ops
file whose host is the sandbox's `nsenter -t PID -m -p` prefix. Three kinds of step are
interleaved for N runs, in an order rotated every run; each one moves the service to the
other version (v1 <-> v2), whichever it runs now:

- rollback, opsgate: Deployments.request(kind=rollback) + advance(approved) +
  DeployPipeline.rollback(), timed from the request until it returns (verified healthy),
  with the rollback health policy (`rollback_consecutive`, default 1: one healthy answer,
  the same as the bare operation);
- rollback, opsgate at the deploy policy: the same with `rollback_consecutive` =
  `consecutive` (2), as every rollback was verified before that setting existed;
- rollback, bare: `ln -sfn releases/vX ROOT/current` and `systemctl restart UNIT`, both run
  through the sandbox's PrefixHost, then GET /health every 10 ms until the first 200;
- deploy, opsgate: request + approve + DeployPipeline.run() of the other version, with
  `watch_s = 0` (the watch window is a configured wait, not overhead) and no build steps:
  the git fetch + checkout is the build. The target's release directory is deleted before
  each run (off the clock), so every deploy fetches; a release built already would be reused.

Health: consecutive = 2 (the test's ops file), interval 0.2 s, unless --consecutive says
otherwise; consecutive = N adds at least (N - 1) x 0.2 s by design. One warm-up round is not
counted. Every timed step starts from the same state: the app idle for SETTLE_S since the
last request it answered (off the clock), so neither side gains from where the app's
0.1-s shutdown poll happens to be. Needs root (unshare, nsenter). Run by hand:

    .venv/bin/python bench/rollback.py [--runs 20] [--consecutive 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bot.dev.demo_web import free_port
from bot.dev.harness.gitrepo import app_argv, make_app_repo
from bot.dev.harness.systemd import SystemdSandbox, booted, unavailable_reason
from config.opsfile import parse_ops_text
from services.control.controller import ServiceController
from services.control.systemd import quote_exec
from services.deploy.deployments import DeploymentKind, Deployments, DeploymentState
from services.deploy.pipeline import DeployOutcome, DeployPipeline
from services.hosts.registry import hosts_from_config
from services.progress import Progress
from services.records.audit import AuditLog
from services.records.storage import Storage
from services.releases.layout import ReleaseLayout

REPO = Path(__file__).resolve().parents[1]

UNIT = "b-rollback.service"
VERSIONS = ("v1", "v2")  # v3 is the unhealthy one: not used here
POLL_S = 0.01  # bare baseline: pause between GET /health attempts
POLL_GIVE_UP_S = 10.0
INTERVAL_S = 0.2
SETTLE_S = 0.3  # off the clock before every timed step: the app idle, as on the other side

OPS = """
[environments.staging]
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
interval_s = {interval}
consecutive = {consecutive}
rollback_consecutive = {rollback_consecutive}
within_s = 5
[services.app.deploy]
root = "{root}"
git = "{git}"
build = []
keep = 2
config_files = ["{config}"]
watch_s = 0
watch_interval_s = 0.2
max_failed_checks = 2
"""


@dataclass
class Variant:
    label: str
    totals: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)  # step title -> durations
    failures: list[str] = field(default_factory=list)

    def add_part(self, title: str, seconds: float) -> None:
        self.parts.setdefault(title, []).append(seconds)


@dataclass
class World:
    sandbox: SystemdSandbox
    pipeline: DeployPipeline  # rollback_consecutive = 1 (the default)
    deploy_policy: DeployPipeline  # rollback_consecutive = consecutive
    deployments: Deployments
    layout: ReleaseLayout
    root: Path
    url: str
    http: httpx.AsyncClient

    async def other(self) -> str:
        current = await self.layout.current()
        return VERSIONS[0] if current == VERSIONS[1] else VERSIONS[1]

    async def version_answering(self) -> object:
        response = await self.http.get(self.url)
        return response.json().get("version") if response.status_code == 200 else None


def refused(exc: BaseException) -> bool:
    """httpx wraps the socket error a few layers deep."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


async def opsgate_once(
    world: World, kind: DeploymentKind, result: Variant, pipeline: DeployPipeline | None = None
) -> None:
    """request + approve + rollback()/run() of the other version, timed end to end."""
    pipeline = pipeline or world.pipeline
    version = await world.other()
    progress = Progress()
    await asyncio.sleep(SETTLE_S)
    started = time.perf_counter()
    requested = await world.deployments.request("app", "staging", version, "1001", kind=kind)
    await world.deployments.advance(requested.id, DeploymentState.APPROVED, "1002")
    approved = time.perf_counter()
    outcome: DeployOutcome
    if kind is DeploymentKind.ROLLBACK:
        outcome = await pipeline.rollback(requested.id, progress)
    else:
        outcome = await pipeline.run(requested.id, progress)
    elapsed = time.perf_counter() - started
    answering = await world.version_answering()  # off the clock: the right release answers
    if not outcome.ok:
        result.failures.append(f"{outcome.state}: {outcome.error}")
        return
    if answering != version:
        result.failures.append(f"{version} deployed but /health says {answering!r}")
        return
    result.totals.append(elapsed)
    result.add_part("(request + approve)", approved - started)
    for step in progress.steps:
        result.add_part(step.title.replace(version, "<version>"), step.duration_s)
    in_steps = sum(s.duration_s for s in progress.steps)
    result.add_part("(pipeline outside the steps)", elapsed - (approved - started) - in_steps)


async def bare_once(world: World, result: Variant) -> None:
    """ln -sfn + systemctl restart through the PrefixHost, then GET until the first 200."""
    version = await world.other()
    host = world.sandbox.host
    link = ["ln", "-sfn", f"releases/{version}", f"{world.root}/current"]
    await asyncio.sleep(SETTLE_S)
    started = time.perf_counter()
    linked = await host.run(link)
    switched = time.perf_counter()
    restarted_ok = await host.run(["systemctl", "restart", UNIT])
    restarted = time.perf_counter()
    for done, what in ((linked, "ln"), (restarted_ok, "systemctl restart")):
        if not done.ok:
            result.failures.append(f"{what} exit {done.exit_status}: {done.stderr.strip()}")
            return
    while True:
        try:
            response = await world.http.get(world.url)
            if response.status_code == 200:
                break
        except httpx.ConnectError as exc:
            if not refused(exc):
                result.failures.append(f"GET /health: {exc!r}")
                return
        if time.perf_counter() - restarted > POLL_GIVE_UP_S:
            result.failures.append(f"no 200 from /health within {POLL_GIVE_UP_S:g} s")
            return
        await asyncio.sleep(POLL_S)
    finished = time.perf_counter()
    answering = response.json().get("version")
    if answering != version:
        result.failures.append(f"switched to {version} but /health says {answering!r}")
        return
    result.totals.append(finished - started)
    result.add_part("ln -sfn (one PrefixHost command)", switched - started)
    result.add_part("systemctl restart (one PrefixHost command)", restarted - switched)
    result.add_part("GET /health until the first 200", finished - restarted)


async def deploy_once(world: World, result: Variant) -> None:
    target = await world.other()
    shutil.rmtree(world.root / "releases" / target, ignore_errors=True)  # so it is fetched
    await opsgate_once(world, DeploymentKind.DEPLOY, result)


def row(label: str, values: list[float]) -> str:
    if not values:
        return f"{label:<48} (no successful runs)"
    median = statistics.median(values)
    return f"{label:<48} {median:8.3f} {min(values):8.3f} {max(values):8.3f}"


def median_or_nan(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def bench(sandbox: SystemdSandbox, runs: int, consecutive: int) -> None:
    # Under work_dir, not /tmp: the sandbox has its own /tmp, and git runs inside it.
    base = Path(tempfile.mkdtemp(prefix="bench_rollback_", dir=sandbox.work_dir))
    repo = make_app_repo(base / "app.git")
    config = base / "app.env"
    config.write_text("GREETING=hello\n")
    root, port = base / "srv", free_port()
    argv = app_argv(f"{root}/current", port, python=sys.executable)
    unit = ["[Unit]", "Description=rollback bench app", "StartLimitIntervalSec=0", "[Service]"]
    unit += ["Type=notify", f"ExecStart={quote_exec(argv)}", ""]
    (sandbox.unit_dir / UNIT).write_text("\n".join(unit))
    await sandbox.host.run(["systemctl", "daemon-reload"])

    def ops_text(rollback_consecutive: int) -> str:
        return OPS.format(
            pid=sandbox.pid, unit=UNIT, port=port, root=root, git=repo.url, config=config,
            interval=INTERVAL_S, consecutive=consecutive,
            rollback_consecutive=rollback_consecutive,
        )  # fmt: skip

    ops = parse_ops_text(ops_text(1), "bench ops file")
    ops_deploy_policy = parse_ops_text(ops_text(consecutive), "bench ops file")
    hosts = hosts_from_config(ops.hosts)
    try:
        with tempfile.TemporaryDirectory() as db_dir:
            async with (
                Storage(Path(db_dir) / "opsgate.db") as storage,
                httpx.AsyncClient() as http,
            ):
                deployments = Deployments(storage, AuditLog(storage))
                controller = ServiceController(ops, hosts, http, start_timeout_s=10)
                controller2 = ServiceController(ops_deploy_policy, hosts, http, start_timeout_s=10)
                pipeline = DeployPipeline(
                    lambda: ops,
                    lambda: hosts,
                    deployments,
                    lambda: controller,
                    http,
                    start_timeout_s=10,
                )
                deploy_policy = DeployPipeline(
                    lambda: ops_deploy_policy,
                    lambda: hosts,
                    deployments,
                    lambda: controller2,
                    http,
                    start_timeout_s=10,
                )
                layout = ReleaseLayout(hosts.get("sandbox"), str(root))
                url = f"http://127.0.0.1:{port}/health"
                world = World(
                    sandbox, pipeline, deploy_policy, deployments, layout, root, url, http
                )
                await run_all(world, runs, consecutive)
    finally:
        await hosts.aclose()
        await sandbox.host.run(["systemctl", "stop", UNIT])
        (sandbox.unit_dir / UNIT).unlink()
        await sandbox.host.run(["systemctl", "daemon-reload"])
        await sandbox.host.run(["systemctl", "reset-failed"])
        shutil.rmtree(base)


async def run_all(world: World, runs: int, consecutive: int) -> None:
    rollback = Variant("rollback, opsgate: request -> healthy")
    at_deploy_policy = Variant(f"rollback, opsgate, {consecutive} healthy in a row")
    bare = Variant("rollback, bare: ln + restart + GET to first 200")
    deploy = Variant("deploy, opsgate (watch_s = 0, fresh fetch)")
    setup = Variant("setup + warm-up")
    # Setup: v2 then v1 deployed (both built), then one uncounted round of every step.
    for _ in VERSIONS:
        await deploy_once(world, setup)
    if setup.failures:
        sys.exit(f"setup failed: {setup.failures}")

    steps: list[tuple[Variant, Callable[[Variant], Awaitable[None]]]] = [
        (rollback, lambda into: opsgate_once(world, DeploymentKind.ROLLBACK, into)),
        (
            at_deploy_policy,
            lambda into: opsgate_once(world, DeploymentKind.ROLLBACK, into, world.deploy_policy),
        ),
        (bare, lambda into: bare_once(world, into)),
        (deploy, lambda into: deploy_once(world, into)),
    ]
    for _, step in steps:
        await step(setup)
    for run in range(runs):
        shift = run % len(steps)
        for variant, step in steps[shift:] + steps[:shift]:
            await step(variant)

    sandbox = world.sandbox
    version = (await sandbox.host.run(["systemctl", "--version"])).stdout.split("\n", 1)[0]
    print(
        f"{version}, sandbox {sandbox.state}; python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs; {runs} runs interleaved (order rotated), 1 warm-up round"
    )
    print(
        f"each step moves the service v1 <-> v2; health: consecutive={consecutive} (deploys),"
        f" rollback_consecutive=1, interval {INTERVAL_S:g} s; {SETTLE_S:g} s idle before each"
    )
    print(f"{'seconds (ratios: of the medians)':<48} {'median':>8} {'min':>8} {'max':>8}")
    for variant in (rollback, at_deploy_policy, bare):
        print(row(variant.label, variant.totals))
        for title, values in variant.parts.items():
            print(row(f"  {title}", values))
    base = median_or_nan(bare.totals)
    for label, variant in (("", rollback), (", deploy policy", at_deploy_policy)):
        median = median_or_nan(variant.totals)
        print(
            f"ratio rollback opsgate{label} / bare".ljust(48)
            + f" {median / base:8.2f}   (+{(median - base) * 1000:.0f} ms)"
        )
    floor = (consecutive - 1) * INTERVAL_S
    print(f"  deploy policy, by design: (consecutive - 1) x interval = {floor * 1000:.0f} ms")
    print()
    print(row(deploy.label, deploy.totals))
    build_times = deploy.parts.get("build <version>", [])
    overhead = [t - b for t, b in zip(deploy.totals, build_times, strict=True)]
    print(row("  total minus the build step (overhead)", overhead))
    for title, values in deploy.parts.items():
        print(row(f"  {title}", values))
    print("deploy: no build steps; the build step is git init + fetch --depth 1 + checkout")
    print("  (the target's release dir is deleted before every run: a built one is reused)")
    variants = (rollback, at_deploy_policy, bare, deploy, setup)
    if not any(v.failures for v in variants):
        print("failures: none (every step ended with the other version answering 200)")
    for variant in variants:
        if variant.failures:
            print(f"FAILED {variant.label}: {len(variant.failures)}x, e.g. {variant.failures[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--consecutive", type=int, default=2)
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason is not None:
        sys.exit(f"cannot boot the systemd sandbox: {reason}")
    with booted() as sandbox:  # blocking boot, before any event loop
        asyncio.run(bench(sandbox, args.runs, args.consecutive))


if __name__ == "__main__":
    main()
