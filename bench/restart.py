"""Overhead of opsgate's verified restart over a bare `systemctl restart` and one GET.

A real systemd is booted in private PID + mount namespaces (bot/dev/harness/systemd.py) and
runs b-web.service (bot/dev/demo_web.py, Type=notify: `systemctl restart` returns once the
new process listens). Interleaved for N runs, in an order rotated every run, so machine noise
hits all three alike:

- baseline: `nsenter -t PID -m -p systemctl restart b-web.service` as one subprocess, then
  one GET /health (retried only while the connection is refused; counted);
- opsgate, consecutive = 1: ServiceController.restart() with an ops file whose health check
  needs one healthy answer;
- opsgate, consecutive = 2, interval 0.2 s: what a cautious ops file would use; by design it
  adds at least one interval (0.2 s) on top of consecutive = 1.

One warm-up round is not counted. Needs root (unshare, nsenter). Run by hand:

    .venv/bin/python bench/restart.py [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bot.dev import demo_web as testservice
from bot.dev.harness.systemd import SystemdSandbox, booted, service_unit, unavailable_reason
from config.opsfile import parse_ops_text
from services.control.controller import ServiceController
from services.control.systemd import SystemdManager
from services.hosts.registry import hosts_from_config
from services.progress import Progress

REPO = Path(__file__).resolve().parents[1]

UNIT = "b-web.service"
REFUSED_RETRY_S = 0.01  # baseline: pause between GETs while the port is not yet bound
REFUSED_GIVE_UP_S = 10.0

OPS = """
[environments.production]

[hosts.sandbox]
prefix = ["nsenter", "-t", "{pid}", "-m", "-p"]

[services.web]
environment = "production"
host = "sandbox"
unit = "{unit}"

[services.web.health]
url = "http://127.0.0.1:{port}/health"
consecutive = {consecutive}
interval_s = {interval}
"""


@dataclass
class Variant:
    label: str
    totals: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)  # step title -> durations
    failures: list[str] = field(default_factory=list)

    def add_part(self, title: str, seconds: float) -> None:
        self.parts.setdefault(title, []).append(seconds)


def refused(exc: BaseException) -> bool:
    """httpx wraps the socket error a few layers deep."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


async def baseline_once(
    pid: int, url: str, client: httpx.AsyncClient, result: Variant, old_pid: list[int]
) -> int:
    """One bare restart and GET; returns how many GETs were refused before the answer."""
    argv = ["nsenter", "-t", str(pid), "-m", "-p", "systemctl", "restart", UNIT]
    retries = 0
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await process.communicate()
    restarted = time.perf_counter()
    if process.returncode != 0:
        result.failures.append(f"systemctl exit {process.returncode}: {stderr.decode().strip()}")
        return retries
    while True:
        try:
            response = await client.get(url)
            break
        except httpx.ConnectError as exc:
            if not refused(exc) or time.perf_counter() - restarted > REFUSED_GIVE_UP_S:
                result.failures.append(f"GET /health: {exc!r}")
                return retries
            retries += 1
            await asyncio.sleep(REFUSED_RETRY_S)
    finished = time.perf_counter()
    # Checked off the clock: the restart worked and a new process answered.
    new_pid = response.json().get("pid") if response.status_code == 200 else None
    if response.status_code != 200:
        result.failures.append(f"GET /health answered {response.status_code}")
    elif new_pid == old_pid[0]:
        result.failures.append(f"pid {new_pid} did not change")
    else:
        result.totals.append(finished - started)
        result.add_part("systemctl restart (one subprocess)", restarted - started)
        result.add_part("GET /health (incl. refused retries)", finished - restarted)
    old_pid[0] = new_pid if isinstance(new_pid, int) else 0
    return retries


async def opsgate_once(controller: ServiceController, result: Variant, old_pid: list[int]) -> None:
    progress = Progress()
    started = time.perf_counter()
    outcome = await controller.restart("web", progress)
    elapsed = time.perf_counter() - started
    if not outcome.ok:
        result.failures.append(outcome.error or "not ok")
    elif outcome.new_pid in (None, old_pid[0]):
        result.failures.append(f"pid {outcome.old_pid} -> {outcome.new_pid}: no new process")
    else:
        result.totals.append(elapsed)
        for step in progress.steps:
            result.add_part(step.title, step.duration_s)
        result.add_part("(outside the steps)", elapsed - sum(s.duration_s for s in progress.steps))
    old_pid[0] = outcome.new_pid or 0


def controller_for(
    sandbox: SystemdSandbox, port: int, consecutive: int, interval: float, http: httpx.AsyncClient
) -> ServiceController:
    text = OPS.format(
        pid=sandbox.pid, unit=UNIT, port=port, consecutive=consecutive, interval=interval
    )
    ops = parse_ops_text(text, "bench ops file")
    return ServiceController(ops, hosts_from_config(ops.hosts), http)


def row(label: str, values: list[float]) -> str:
    if not values:
        return f"{label:<44} (no successful runs)"
    median = statistics.median(values)
    return f"{label:<44} {median:8.3f} {min(values):8.3f} {max(values):8.3f}"


def median_or_nan(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def bench(sandbox: SystemdSandbox, runs: int) -> None:
    systemd = SystemdManager(sandbox.host)
    port = testservice.free_port()
    url = f"http://127.0.0.1:{port}/health"
    # systemd refuses a 6th start within 10 s by default (StartLimitBurst=5), and every
    # restart counts: without this the unit fails after a few runs.
    unit = service_unit("--port", str(port), unit=["StartLimitIntervalSec=0"])
    await systemd.install_unit(UNIT, unit)
    try:
        await systemd.start(UNIT)
        first_pid = (await systemd.show(UNIT)).main_pid or 0
        async with httpx.AsyncClient() as http:
            await run_all(sandbox, systemd, port, url, http, runs, first_pid)
    finally:
        await systemd.stop(UNIT)
        await systemd.remove_unit(UNIT)


async def run_all(
    sandbox: SystemdSandbox,
    systemd: SystemdManager,
    port: int,
    url: str,
    http: httpx.AsyncClient,
    runs: int,
    first_pid: int,
) -> None:
    cautious_interval = 0.2
    baseline = Variant("baseline: systemctl restart + 1 GET")
    quick = Variant("opsgate: consecutive=1, interval 0.05 s")
    cautious = Variant(f"opsgate: consecutive=2, interval {cautious_interval:g} s")
    show = Variant("reference: one SystemdManager.show()")
    quick_ctl = controller_for(sandbox, port, 1, 0.05, http)
    cautious_ctl = controller_for(sandbox, port, 2, cautious_interval, http)
    last_pid = [first_pid]  # the service's pid before the next restart, whichever variant
    retried_runs = 0

    async def one_baseline(into: Variant) -> None:
        nonlocal retried_runs
        retries = await baseline_once(sandbox.pid, url, http, into, last_pid)
        retried_runs += retries > 0

    async def one_show(into: Variant) -> None:
        started = time.perf_counter()
        await systemd.show(UNIT)
        into.totals.append(time.perf_counter() - started)

    steps: list[tuple[Variant, Callable[[Variant], Awaitable[None]]]] = [
        (baseline, one_baseline),
        (quick, lambda into: opsgate_once(quick_ctl, into, last_pid)),
        (cautious, lambda into: opsgate_once(cautious_ctl, into, last_pid)),
        (show, one_show),
    ]
    warm_up = Variant("warm-up")
    for _, step in steps:
        await step(warm_up)
    retried_runs = 0
    for run in range(runs):
        shift = run % len(steps)
        for variant, step in steps[shift:] + steps[:shift]:
            await step(variant)

    version = (await sandbox.host.run(["systemctl", "--version"])).stdout.split("\n", 1)[0]
    print(
        f"{version}, sandbox {sandbox.state}; python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs; {runs} runs interleaved (order rotated), 1 warm-up round"
    )
    print(f"{'seconds (ratios: of the medians)':<44} {'median':>8} {'min':>8} {'max':>8}")
    for variant in (baseline, quick, cautious):
        print(row(variant.label, variant.totals))
        for title, values in variant.parts.items():
            print(row(f"  {title}", values))
    print(row(show.label, show.totals))
    base = median_or_nan(baseline.totals)
    for variant in (quick, cautious):
        median = median_or_nan(variant.totals)
        print(
            f"ratio {variant.label.split(',')[0]} / baseline".ljust(44)
            + f" {median / base:8.2f}   (+{(median - base) * 1000:.0f} ms)"
        )
    gap = median_or_nan(cautious.totals) - median_or_nan(quick.totals)
    print(
        f"consecutive=2 over consecutive=1: +{gap * 1000:.0f} ms; its floor is "
        f"(2 - 1) x {cautious_interval:g} s = {cautious_interval * 1000:.0f} ms of sleep "
        "plus one more check"
    )
    print(f"baseline runs whose GET was refused first (retried): {retried_runs} of {runs}")
    if not any(v.failures for v in (baseline, quick, cautious, warm_up)):
        print("failures: none (every restart gave a new pid and a healthy answer)")
    for variant in (baseline, quick, cautious):
        if variant.failures:
            print(f"FAILED {variant.label}: {len(variant.failures)}x, e.g. {variant.failures[0]}")
    if warm_up.failures:
        print(f"FAILED in warm-up: {warm_up.failures}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    reason = unavailable_reason()
    if reason is not None:
        sys.exit(f"cannot boot the systemd sandbox: {reason}")
    with booted() as sandbox:  # blocking boot, before any event loop
        asyncio.run(bench(sandbox, runs))


if __name__ == "__main__":
    main()
