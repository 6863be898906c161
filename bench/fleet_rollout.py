"""A rolling deploy and a fleet rollback over real hosts: opsgate against a shell loop, and a
fleet rollback against a one-host rollback.

Eight hosts are booted on this machine (bot/dev/harness/fleet.py: each its own systemd with its
own sshd on 127.0.0.61...; opsgate reaches them over ssh, multiplexed, as the ops file says).
The test app (bot/dev/harness/gitrepo.py, tags v1 and v2 healthy) runs as a Type=notify unit on
each, bound to the host's address. Setup (off the clock): v1 deployed by opsgate, then one
uncounted round of every step below (which builds v2 on every host). Then, for N rounds, in an
order rotated every round, each step moves the hosts to the other version:

- A rolling deploy, opsgate: Deployments.request + approve + DeployPipeline.run() over the 8
  hosts, batch = 2, parallel 4 (the default), health consecutive = 1, interval 0.05 s,
  watch_s = 0, the release built already on every host ("built already"); timed from
  approved to the `succeeded` event (and to run() returning, which adds the prune);
- B rolling switch, bare: bench/fleet_rollout_baseline.sh (a shell loop): per batch of 2, per
  host in parallel, one ssh command (`ln -sfn` + `mv -T` over `current`, `systemctl restart`)
  then curl /health every 10 ms until the first 200; ssh with opsgate's options and
  multiplexing (its own ControlPath dir, warm like opsgate's);
- C fleet rollback, opsgate: request(kind=rollback) + approve + DeployPipeline.rollback() of the
  8 hosts, rollout parallel = 4 (the default), and again with parallel = 8; approved -> succeeded;
- D one-host rollback, opsgate: the same service config with one host (h1) in production, so
  the single-host pipeline runs; twice a round (there and back), approved -> succeeded.

Every opsgate step is profiled in the bench only: each Host of the registry is wrapped to time
every command (ssh) with the deployment's state at the time, SQLite writes are timed the same
way (a Storage subclass) and health GETs counted (httpx event hooks). Before every timed step
the apps are idle for SETTLE_S (off the clock); after it, every host is asked over HTTP which
version it serves. Needs root (unshare, nsenter, sshd). Run by hand:

    .venv/bin/python bench/fleet_rollout.py [--runs 5] [--hosts 8]
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
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import aiosqlite
import httpx

from bot.dev.harness.fleet import Fleet, FleetApp, booted_fleet, install_app_unit, remove_app_unit
from bot.dev.harness.gitrepo import AppRepo, make_app_repo
from bot.dev.harness.sshd import SshdUnavailable, require_tools
from bot.dev.harness.systemd import WORK_ROOT, unavailable_reason
from config.opsfile import OpsConfig, parse_ops_text
from services.control.controller import ServiceController
from services.deploy.deployments import (
    Deployment,
    DeploymentKind,
    Deployments,
    DeploymentState,
)
from services.deploy.pipeline import DeployOutcome, DeployPipeline
from services.hosts.registry import Hosts
from services.hosts.runner import CommandResult, Host, SupportsAclose
from services.progress import Progress
from services.records.audit import AuditLog
from services.records.storage import Storage, WriteResult
from services.releases.layout import ReleaseLayout

BASELINE = Path(__file__).resolve().with_name("fleet_rollout_baseline.sh")
UNIT = "b-fleet.service"
ROOT = "/srv/b-fleet"  # under /srv: every host has its own releases
VERSIONS = ("v1", "v2")  # v3 is the unhealthy one: not used here
BATCH = 2
INTERVAL_S = 0.05
SETTLE_S = 0.3  # off the clock before every timed step: the apps idle, on both sides
FIRST_OCTET = 61  # apart from the test suite's fleets (127.0.0.21...)
OFF = "off the clock"

OPS = """
[environments.production]
{hosts_toml}
[services.app]
unit = "{unit}"
[services.app.health]
url = "http://{{address}}:{port}/health"
timeout_s = 2
consecutive = 1
within_s = 10
interval_s = {interval}
[services.app.deploy]
root = "{root}"
git = "{git}"
keep = 3
watch_s = 0
[services.app.rollout]
batch = {batch}
parallel = {parallel}
[services.app.environments.production]
hosts = [{hosts}]
"""


# -- instrumentation (bench only) ---------------------------------------------------------


@dataclass(frozen=True)
class Call:
    phase: str
    host: str
    verb: str
    start: float
    end: float


@dataclass
class Recorder:
    """What one timed step did, by the deployment's state at the time."""

    phase: str = OFF
    t0: float = 0.0
    marks: list[tuple[str, float]] = field(default_factory=list)  # state entered, when
    calls: list[Call] = field(default_factory=list)  # host commands
    db: list[tuple[str, float, float]] = field(default_factory=list)  # writes: phase, span
    gets: Counter[str] = field(default_factory=Counter)  # health GETs by phase

    def start(self) -> None:
        self.phase, self.t0 = "approved", time.perf_counter()
        self.marks, self.calls, self.db, self.gets = [("approved", self.t0)], [], [], Counter()

    def enter(self, state: str) -> None:
        if self.phase != OFF:
            self.phase = state
            self.marks.append((state, time.perf_counter()))


def verb(argv: Sequence[str]) -> str:
    """`systemctl show`, `test -f`, `readlink`: what a command is, without its paths."""
    if argv[0] == "systemctl":
        return "systemctl " + next((a for a in argv[1:] if not a.startswith("-")), "")
    if len(argv) > 1 and argv[1].startswith("-") and argv[1] != "--":
        return f"{argv[0]} {argv[1]}"
    return argv[0]


class CountingHost:
    """A Host that times every command it runs for the recorder, then answers as `inner`."""

    def __init__(self, inner: Host, recorder: Recorder) -> None:
        self.inner, self.name, self._recorder = inner, inner.name, recorder

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        input: bytes | None = None,
        output_limit: int = 64 * 1024,
    ) -> CommandResult:
        phase, started = self._recorder.phase, time.perf_counter()
        result = await self.inner.run(
            argv, timeout=timeout, env=env, cwd=cwd, input=input, output_limit=output_limit
        )
        if phase != OFF:
            call = Call(phase, self.name, verb(argv), started, time.perf_counter())
            self._recorder.calls.append(call)
        return result

    async def aclose(self) -> None:
        if isinstance(self.inner, SupportsAclose):
            await self.inner.aclose()


class TimedStorage(Storage):
    """Times each write transaction (lock wait included) for the recorder."""

    recorder: Recorder

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        phase, started = self.recorder.phase, time.perf_counter()
        async with super().transaction() as db:
            yield db
        if phase != OFF:
            self.recorder.db.append((phase, started, time.perf_counter()))

    async def write(self, sql: str, params: Sequence[object] = ()) -> WriteResult:
        phase, started = self.recorder.phase, time.perf_counter()
        inside = self._owner is not None and self._owner is asyncio.current_task()
        result = await super().write(sql, params)
        if phase != OFF and not inside:  # one inside a transaction is timed with it
            self.recorder.db.append((phase, started, time.perf_counter()))
        return result


class TimedDeployments(Deployments):
    """Marks when the deployment enters each state (after its event is written)."""

    recorder: Recorder

    async def advance(
        self, deployment_id: int, to_state: DeploymentState, actor: str, note: str = ""
    ) -> Deployment:
        deployment = await super().advance(deployment_id, to_state, actor, note)
        self.recorder.enter(DeploymentState(to_state).value)
        return deployment


# -- results --------------------------------------------------------------------------------


@dataclass
class Variant:
    label: str
    totals: list[float] = field(default_factory=list)  # approved -> succeeded
    returned: list[float] = field(default_factory=list)  # approved -> run() returned
    states: dict[str, list[float]] = field(default_factory=dict)
    steps: dict[str, list[float]] = field(default_factory=dict)
    commands: Counter[tuple[str, str]] = field(default_factory=Counter)  # (phase, verb)
    ssh_s: dict[str, list[float]] = field(default_factory=dict)  # phase -> per host-run
    db: dict[str, list[float]] = field(default_factory=dict)  # phase -> per run: s, writes
    writes: Counter[str] = field(default_factory=Counter)
    gets: Counter[str] = field(default_factory=Counter)
    host_runs: int = 0  # hosts x runs, for "per host" figures
    runs_profiled: int = 0
    timeline: list[Call] = field(default_factory=list)  # the last run's calls on one host
    failures: list[str] = field(default_factory=list)

    def add(self, into: dict[str, list[float]], key: str, seconds: float) -> None:
        into.setdefault(key, []).append(seconds)


def busy(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of the intervals: a host's time with a command in flight."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def profile(variant: Variant, recorder: Recorder, hosts: Sequence[str], returned: float) -> None:
    marks = [*recorder.marks, ("returned", returned)]
    for (state, at), (_, until) in pairwise(marks):
        label = "(after succeeded: prune)" if state == "succeeded" else state
        variant.add(variant.states, label, until - at)
    variant.host_runs += len(hosts)
    variant.runs_profiled += 1
    for call in recorder.calls:
        variant.commands[(call.phase, call.verb)] += 1
    phases = dict.fromkeys(s for s, _ in recorder.marks)
    for phase in phases:
        for host in hosts:
            spans = [
                (c.start, c.end) for c in recorder.calls if c.phase == phase and c.host == host
            ]
            variant.add(variant.ssh_s, phase, busy(spans))
        spans = [(start, end) for p, start, end in recorder.db if p == phase]
        variant.add(variant.db, phase, busy(spans))  # wall time with a write in flight
        variant.writes[phase] += len(spans)
    variant.gets.update(recorder.gets)
    variant.timeline = [c for c in recorder.calls if c.host == hosts[-1]]


# -- the world ------------------------------------------------------------------------------


@dataclass
class World:
    fleet: Fleet
    app: FleetApp
    names: list[str]
    recorder: Recorder
    deployments: TimedDeployments
    rolling: DeployPipeline  # batch 2, parallel 4
    wide: DeployPipeline  # the same with parallel 8
    single: DeployPipeline  # production = [h1]
    layouts: dict[str, ReleaseLayout]
    http: httpx.AsyncClient
    baseline_control: str

    async def currents(self, names: Sequence[str]) -> dict[str, str | None]:
        found = await asyncio.gather(*(self.layouts[n].current() for n in names))
        return dict(zip(names, found, strict=True))

    async def serving(self, names: Sequence[str]) -> dict[str, object]:
        async def version(name: str) -> object:
            response = await self.http.get(self.fleet.host(name).url(self.app.port))
            return response.json().get("version") if response.status_code == 200 else None

        return dict(zip(names, await asyncio.gather(*map(version, names)), strict=True))

    async def other(self, names: Sequence[str]) -> str:
        now = set((await self.currents(names)).values())
        if len(now) != 1:
            raise RuntimeError(f"hosts disagree on `current`: {sorted(map(str, now))}")
        return VERSIONS[1] if now == {VERSIONS[0]} else VERSIONS[0]  # nothing yet: v1


def other_ops(fleet: Fleet, repo: AppRepo, port: int, hosts: Sequence[str], parallel: int) -> str:
    return OPS.format(
        hosts_toml=fleet.ops_hosts_toml(), unit=UNIT, port=port, interval=INTERVAL_S, root=ROOT,
        git=repo.url, batch=BATCH, parallel=parallel, hosts=", ".join(f'"{h}"' for h in hosts),
    )  # fmt: skip


async def opsgate_once(
    world: World,
    pipeline: DeployPipeline,
    kind: DeploymentKind,
    hosts: Sequence[str],
    variant: Variant,
) -> None:
    """request + approve off the clock; run() or rollback() timed from approved."""
    version = await world.other(hosts)
    deployments, recorder = world.deployments, world.recorder
    await asyncio.sleep(SETTLE_S)
    requested = await deployments.request("app", "production", version, "1001", kind=kind)
    await deployments.advance(requested.id, DeploymentState.APPROVED, "1002")
    progress = Progress()
    recorder.start()
    try:
        outcome: DeployOutcome
        if kind is DeploymentKind.ROLLBACK:
            outcome = await pipeline.rollback(requested.id, progress)
        else:
            outcome = await pipeline.run(requested.id, progress)
        returned = time.perf_counter()
    finally:
        recorder.phase = OFF
    succeeded = dict(recorder.marks).get("succeeded")
    if not outcome.ok or succeeded is None:
        variant.failures.append(f"{outcome.state}: {outcome.error}")
        return
    answering = await world.serving(hosts)
    if set(answering.values()) != {version}:
        variant.failures.append(f"{version} deployed but the hosts serve {answering}")
        return
    variant.totals.append(succeeded - recorder.t0)
    variant.returned.append(returned - recorder.t0)
    for step in progress.steps:
        variant.add(variant.steps, step.title.replace(version, "<version>"), step.duration_s)
    profile(variant, recorder, hosts, returned)


async def bare_once(world: World, variant: Variant, names: Sequence[str], batch: int) -> None:
    version = await world.other(names)
    hosts = [world.fleet.host(n) for n in names]
    argv = [str(BASELINE), version, ROOT, UNIT, str(world.app.port), str(batch)]
    argv += [world.fleet.identity_file, world.fleet.known_hosts_file, world.baseline_control]
    argv += [f"{h.address}:{h.ssh_port}" for h in hosts]
    await asyncio.sleep(SETTLE_S)
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    outside = time.perf_counter() - started
    words = out.decode().split()
    if proc.returncode != 0 or len(words) != 3 or words[0] != "elapsed":
        variant.failures.append(f"exit {proc.returncode}: {err.decode().strip()[-300:]}")
        return
    answering = await world.serving(names)
    if set(answering.values()) != {version}:
        variant.failures.append(f"switched to {version} but the hosts serve {answering}")
        return
    variant.totals.append(float(words[2]) - float(words[1]))
    variant.returned.append(outside)


# -- the run --------------------------------------------------------------------------------


def row(label: str, values: Sequence[float], width: int = 52) -> str:
    if not values:
        return f"{label:<{width}} (no successful runs)"
    median = statistics.median(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return (
        f"{label:<{width}} {median:8.3f} {min(values):8.3f} {max(values):8.3f} {spread:8.3f}"
        f" {len(values):3d}"
    )


def median_or_nan(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio_line(label: str, top: Variant, bottom: Variant, goal: float, every: int = 1) -> str:
    """Ratio of the medians; the spread is of the ratios within each round (`every`: the
    bottom's samples a round)."""
    a, b = median_or_nan(top.totals), median_or_nan(bottom.totals)
    pairs = [x / y for x, y in zip(top.totals, bottom.totals[::every], strict=False)]
    spread = f"per round {min(pairs):.2f}-{max(pairs):.2f}" if pairs else "no pairs"
    verdict = "met" if a / b <= goal else "MISSED"
    return (
        f"{label:<40} {a / b:6.2f}x  (+{(a - b) * 1000:.0f} ms; {spread};"
        f" goal <= {goal:g}x: {verdict})"
    )


def print_profile(variant: Variant, hosts: int) -> None:
    """Per phase: wall time, host commands per host by kind, ssh busy time, SQLite, GETs."""
    runs = max(variant.runs_profiled, 1)
    print(f"  profile of {variant.label} ({hosts} host(s), medians over {runs} run(s)):")
    head = f"    {'phase':<28} {'wall s':>7} {'ssh/host':>8} {'busy s/host':>11}"
    print(head + f" {'db s':>6} {'writes':>6} {'GETs':>5}  commands per host")
    for phase, walls in variant.states.items():
        key = "succeeded" if phase.startswith("(after") else phase
        counts = {v: n for (p, v), n in variant.commands.items() if p == key}
        per_host = sum(counts.values()) / variant.host_runs if variant.host_runs else 0.0
        what = ", ".join(
            f"{v} {n / variant.host_runs:.3g}"
            for v, n in sorted(counts.items(), key=lambda i: -i[1])
        )
        print(
            f"    {phase:<28} {median_or_nan(walls):7.3f} {per_host:8.2f}"
            f" {median_or_nan(variant.ssh_s.get(key, [])):11.3f}"
            f" {median_or_nan(variant.db.get(key, [])):6.3f} {variant.writes[key] / runs:6.1f}"
            f" {variant.gets[key] / runs:5.1f}  {what}"
        )


def print_timeline(variant: Variant) -> None:
    calls = variant.timeline
    if not calls:
        return
    first, host = calls[0].start, calls[0].host
    print(f"{variant.label}, last run: every command on {host} (start offset, duration, phase):")
    for call in calls:
        print(
            f"    {call.start - first:7.3f} {call.end - call.start:6.3f}  {call.phase:<11}"
            f" {call.verb}"
        )


async def run_all(world: World, runs: int) -> int:
    names = world.names
    deploy = Variant(f"A rolling deploy, opsgate ({len(names)} hosts, batch {BATCH})")
    bare = Variant(f"B rolling switch, shell loop ({len(names)} hosts, batch {BATCH})")
    back4 = Variant(f"C fleet rollback, opsgate ({len(names)} hosts, parallel 4)")
    back8 = Variant(f"C' fleet rollback, opsgate ({len(names)} hosts, parallel 8)")
    single = Variant("D rollback, opsgate (1 host)")
    # What this machine allows: the bare switch of 8 hosts at once, 4 at once, and of 1.
    bare8 = Variant(f"  bare switch, {len(names)} hosts at once")
    bare4 = Variant(f"  bare switch, {len(names)} hosts, 4 at once")
    bare1 = Variant("  bare switch, 1 host")
    setup = Variant("setup + warm-up")

    async def d_pair(into: Variant) -> None:  # there and back: h1 ends where the fleet is
        for _ in range(2):
            await opsgate_once(world, world.single, DeploymentKind.ROLLBACK, names[:1], into)

    async def bare1_pair(into: Variant) -> None:
        for _ in range(2):
            await bare_once(world, into, names[:1], 1)

    rollback = DeploymentKind.ROLLBACK
    steps: list[tuple[Variant, Callable[[Variant], Awaitable[None]]]] = [
        (deploy, lambda v: opsgate_once(world, world.rolling, DeploymentKind.DEPLOY, names, v)),
        (bare, lambda v: bare_once(world, v, names, BATCH)),
        (back4, lambda v: opsgate_once(world, world.rolling, rollback, names, v)),
        (back8, lambda v: opsgate_once(world, world.wide, rollback, names, v)),
        (single, d_pair),
        (bare8, lambda v: bare_once(world, v, names, len(names))),
        (bare4, lambda v: bare_once(world, v, names, 4)),
        (bare1, bare1_pair),
    ]
    await opsgate_once(world, world.rolling, DeploymentKind.DEPLOY, names, setup)  # v1
    if setup.failures:
        sys.exit(f"setup failed: {setup.failures}")
    for _, step in steps:  # warm-up: builds v2, warms every ssh master
        await step(setup)
    if setup.failures:
        sys.exit(f"warm-up failed: {setup.failures}")
    load_before = os.getloadavg()
    for run in range(runs):
        shift = run % len(steps)
        for variant, step in steps[shift:] + steps[:shift]:
            await step(variant)
    load_after = os.getloadavg()

    systemd = await world.fleet.hosts[0].sandbox.host.run(["systemctl", "--version"])
    ssh = await world.fleet.hosts[0].sandbox.host.run(["ssh", "-V"])
    print(
        f"{systemd.stdout.splitlines()[0]}; {ssh.stderr.strip()}; python"
        f" {sys.version.split()[0]}; {os.cpu_count()} CPUs; load average"
        f" {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(
        f"{len(names)} hosts (own systemd + sshd each, 127.0.0.{FIRST_OCTET}+); {runs} rounds,"
        f" order rotated, 1 warm-up round; each step moves the hosts v1 <-> v2;"
        f" {SETTLE_S:g} s idle before each"
    )
    print(
        f"health: consecutive 1 (rollback_consecutive 1), interval {INTERVAL_S:g} s;"
        " watch_s 0; releases built already; times: approved -> `succeeded` event"
    )
    print()
    header = f"{'seconds':<52} {'median':>8} {'min':>8} {'max':>8} {'stdev':>8} {'n':>3}"
    print(header)
    for variant in (deploy, bare, back4, back8, single, bare8, bare4, bare1):
        print(row(variant.label, variant.totals))
        if variant in (bare, bare8, bare4, bare1):
            print(row("  (outside: bash start + exit included)", variant.returned))
            continue
        print(row("  (until run() returned)", variant.returned))
        for state, values in variant.states.items():
            print(row(f"  state {state}", values))
    print()
    print(ratio_line("A/B rolling deploy / shell loop", deploy, bare, 1.2))
    print(ratio_line("C/D fleet rollback (parallel 4) / 1 host", back4, single, 1.5, 2))
    print(ratio_line("C'/D fleet rollback (parallel 8) / 1 host", back8, single, 1.5, 2))
    print("  (D runs twice a round; per-round pairs use the first of each)")
    print("this machine's floor for C/D (the bare switch; 8 hosts share its CPUs):")
    print(ratio_line("  bare 8 hosts, 4 at once / 1 host", bare4, bare1, 1.5, 2))
    print(ratio_line("  bare 8 hosts at once / 1 host", bare8, bare1, 1.5, 2))
    print("opsgate's own share (each against the bare switch of the same shape):")
    print(ratio_line("  C / bare 8 hosts, 4 at once", back4, bare4, 1.5))
    print(ratio_line("  C' / bare 8 hosts at once", back8, bare8, 1.5))
    print(ratio_line("  D / bare 1 host", single, bare1, 1.5))
    print()
    print(
        "profiles: wall s = the state's duration; ssh/host = host commands per host (over ssh);"
        "\n  busy s/host = a host's time with one in flight; db s = time with an SQLite write"
        " in flight\n  (its lock wait included; synchronous=FULL), writes and health GETs per run"
    )
    print()
    for variant in (deploy, back4, back8, single):
        print(f"{variant.label}: progress steps")
        for title, values in variant.steps.items():
            print(row(f"  {title}", values))
        print_profile(variant, 1 if variant is single else len(names))
        print()
    print_timeline(deploy)
    print_timeline(single)
    variants = (deploy, bare, back4, back8, single, bare8, bare4, bare1, setup)
    failed = [v for v in variants if v.failures]
    if not failed:
        print("failures: none (every step ended with every host serving the other version)")
    for variant in failed:
        print(f"FAILED {variant.label}: {len(variant.failures)}x, e.g. {variant.failures[0]}")
    return 1 if failed else 0


async def bench(fleet: Fleet, runs: int) -> int:
    names = [host.name for host in fleet.hosts]
    repo = make_app_repo(fleet.shared_dir / "app.git")  # seen at this path on every host
    app = await install_app_unit(fleet, UNIT, root=ROOT, port=fleet.free_port())
    recorder = Recorder()

    def ops(hosts: Sequence[str], parallel: int) -> OpsConfig:
        return parse_ops_text(other_ops(fleet, repo, app.port, hosts, parallel), "bench ops")

    rolling_ops, wide_ops, single_ops = ops(names, 4), ops(names, 8), ops(names[:1], 4)
    registry = fleet.registry()  # as opsgate builds it: ssh, multiplexed
    hosts = Hosts({n: CountingHost(registry.get(n), recorder) for n in names})
    baseline_control = tempfile.mkdtemp(prefix="ogb-", dir="/tmp")  # short: socket paths
    hooks = {"request": [lambda request: _count_get(recorder)]}
    try:
        with tempfile.TemporaryDirectory() as db_dir:
            storage = TimedStorage(Path(db_dir) / "opsgate.db")
            storage.recorder = recorder
            async with storage, httpx.AsyncClient(event_hooks=hooks) as http:
                deployments = TimedDeployments(storage, AuditLog(storage))
                deployments.recorder = recorder

                def pipeline(config: OpsConfig) -> DeployPipeline:
                    controller = ServiceController(config, hosts, http, start_timeout_s=10)
                    return DeployPipeline(
                        lambda: config,
                        lambda: hosts,
                        deployments,
                        lambda: controller,
                        http,
                        start_timeout_s=10,
                    )

                world = World(
                    fleet,
                    app,
                    names,
                    recorder,
                    deployments,
                    pipeline(rolling_ops),
                    pipeline(wide_ops),
                    pipeline(single_ops),
                    {n: ReleaseLayout(hosts.get(n), ROOT) for n in names},
                    http,
                    baseline_control,
                )
                return await run_all(world, runs)
    finally:
        await registry.aclose()
        await asyncio.gather(*(_close_master(fleet, h, baseline_control) for h in names))
        shutil.rmtree(baseline_control, ignore_errors=True)
        await remove_app_unit(fleet, app)


async def _count_get(recorder: Recorder) -> None:
    if recorder.phase != OFF:
        recorder.gets[recorder.phase] += 1


async def _close_master(fleet: Fleet, name: str, control_dir: str) -> None:
    host = fleet.host(name)
    argv = ["ssh", "-o", f"ControlPath={control_dir}/%C", "-p", str(host.ssh_port), "-O", "exit"]
    proc = await asyncio.create_subprocess_exec(
        *argv, f"root@{host.address}", stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--hosts", type=int, default=8)
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason is None:
        try:
            require_tools()
        except SshdUnavailable as exc:
            reason = str(exc)
    if reason is not None:
        sys.exit(f"cannot boot the fleet: {reason}")
    base = WORK_ROOT / f"bench-fleet-{os.getpid()}"
    with booted_fleet(args.hosts, base, first_octet=FIRST_OCTET) as fleet:  # blocking boot
        status = asyncio.run(bench(fleet, args.runs))
    sys.exit(status)


if __name__ == "__main__":
    main()
