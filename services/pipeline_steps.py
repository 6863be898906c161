"""The deploy pipeline's building blocks: what the config asks for, disk, restart, verify, watch.

Each block reports through a `Progress` step and raises `StepFailed` (a sentence fit for chat)
when the service does not do what it should; host and control errors pass through unchanged.
"""

from __future__ import annotations

import asyncio
import posixpath

from config.inventory import DeployConfig
from services.health import wait_until_healthy
from services.hosts import Host
from services.progress import Progress
from services.release_build import ArtifactSource, BuildStep, GitSource, HostCommandFailed
from services.servicectl import ServiceController

MIB = 1024 * 1024


class StepFailed(Exception):
    """A pipeline step found the service or host not as it must be; `str()` fits a chat."""


def source_of(deploy: DeployConfig) -> GitSource | ArtifactSource:
    if deploy.git is not None:
        return GitSource(deploy.git, deploy.ref, timeout_s=deploy.build_timeout_s)
    assert deploy.artifact is not None  # exactly one of the two: checked at load time
    return ArtifactSource(deploy.artifact, timeout_s=deploy.build_timeout_s)


def build_steps_of(deploy: DeployConfig) -> list[BuildStep]:
    return [BuildStep(tuple(argv), deploy.build_timeout_s) for argv in deploy.build]


async def free_bytes(host: Host, path: str) -> int:
    """Free bytes on the filesystem holding `path`, or its nearest existing parent (the
    release root does not exist before the first deploy)."""
    while True:
        result = await host.run(["df", "--output=avail", "-B1", "--", path], timeout=30.0)
        if result.ok:
            lines = result.stdout.split()
            if len(lines) == 2 and lines[1].isdigit():
                return int(lines[1])
            raise StepFailed(f"df gave no free space for {path}: {result.stdout.strip()[:80]}")
        parent = posixpath.dirname(path)
        if parent == path or result.connection_failed or result.timed_out:
            raise HostCommandFailed(result)
        path = parent


async def check_disk(host: Host, root: str, progress: Progress, min_free_bytes: int) -> None:
    async with progress.step("free disk") as step:
        free = await free_bytes(host, root)
        step.detail = f"{free // MIB} MiB free under {root}"
        if free < min_free_bytes:
            raise StepFailed(
                f"Only {free // MIB} MiB free under {root} on {host.name};"
                f" at least {min_free_bytes // MIB} MiB are needed."
            )


async def report_health(controller: ServiceController, name: str, progress: Progress) -> None:
    """The service's health before anything changes: reported, never a reason to stop (a
    deploy is often what fixes it)."""
    async with progress.step("current health") as step:
        state = await controller.state(name)
        if not state.running:
            step.detail = f"not running ({state.error or state.state})"
        elif state.health is None:
            step.detail = "running, no health check configured"
        else:
            step.detail = f"running, health: {state.health.reason}"


async def restart(controller: ServiceController, name: str, progress: Progress) -> None:
    async with progress.step(f"restart {controller.service(name).control_name}"):
        await controller.backend(name).restart()


async def verify(
    controller: ServiceController, name: str, progress: Progress, start_timeout_s: float
) -> int | None:
    """Running, then healthy N times in a row within T; returns the unit's NRestarts."""
    service = controller.service(name)
    async with progress.step("wait until running") as step:
        status = await controller.backend(name).wait_running(start_timeout_s)
        step.detail = f"pid {status.main_pid or '-'}"
    check = controller.health_check(name)
    if check is None or service.health is None:
        return status.restarts
    health = service.health
    async with progress.step(f"health: {health.consecutive} in a row") as step:
        wait = await wait_until_healthy(
            check, health.consecutive, health.within_s, health.interval_s
        )
        step.detail = f"{wait.checks} check(s), last: {wait.last.reason if wait.last else '-'}"
        if not wait.ok:
            reason = wait.last.reason if wait.last else "no answer"
            raise StepFailed(
                f"{name} was not healthy {health.consecutive} times in a row within"
                f" {health.within_s:g} s (last: {reason})."
            )
    return status.restarts


async def watch(
    controller: ServiceController,
    name: str,
    deploy: DeployConfig,
    progress: Progress,
    restarts_before: int | None,
) -> None:
    """For `watch_s`: a health check every `watch_interval_s`; fails after `max_failed_checks`
    failures in a row, or when NRestarts grows by more than `max_restarts` (systemd only)."""
    check = controller.health_check(name)
    backend = controller.backend(name)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deploy.watch_s
    checks = failures = 0
    async with progress.step(f"watch {deploy.watch_s:g} s") as step:
        while loop.time() < deadline:
            await asyncio.sleep(min(deploy.watch_interval_s, max(deadline - loop.time(), 0)))
            restarts = (await backend.status()).restarts
            if restarts is not None and restarts_before is not None:
                grown = restarts - restarts_before
                if grown > deploy.max_restarts:
                    raise StepFailed(
                        f"{name} restarted {grown} time(s) while watched"
                        f" (allowed: {deploy.max_restarts})."
                    )
            if check is None:
                continue
            result = await check.run()
            checks += 1
            failures = 0 if result.ok else failures + 1
            step.detail = f"{checks} check(s), last: {result.reason}"
            if failures >= deploy.max_failed_checks:
                raise StepFailed(
                    f"{name} failed {failures} health check(s) in a row while watched"
                    f" (last: {result.reason})."
                )
