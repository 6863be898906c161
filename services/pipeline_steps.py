"""The deploy pipeline's building blocks: what the config asks for, restart, verify.

Each block reports through a `Progress` step and raises `StepFailed` (a sentence fit for chat)
when the service does not do what it should; host and control errors pass through unchanged.
"""

from __future__ import annotations

from config.inventory import DeployConfig, HealthConfig
from services.health import HealthCheck, wait_until_healthy
from services.progress import Progress
from services.release_build import ArtifactSource, BuildStep, GitSource
from services.service_backends import ServiceBackend
from services.servicectl import ServiceController


class StepFailed(Exception):
    """A pipeline step found the service or host not as it must be; `str()` fits a chat."""


class NotTheReleasesFault(StepFailed):
    """A failure after the switch that says nothing about the release (an abort, a proxy that
    would not reload): the pipeline rolls back but does not mark the release bad."""


def source_of(deploy: DeployConfig) -> GitSource | ArtifactSource:
    if deploy.git is not None:
        return GitSource(deploy.git, deploy.ref, timeout_s=deploy.build_timeout_s)
    assert deploy.artifact is not None  # exactly one of the two: checked at load time
    return ArtifactSource(deploy.artifact, timeout_s=deploy.build_timeout_s)


def build_steps_of(deploy: DeployConfig) -> list[BuildStep]:
    return [BuildStep(tuple(argv), deploy.build_timeout_s) for argv in deploy.build]


async def restart(controller: ServiceController, name: str, progress: Progress) -> None:
    async with progress.step(f"restart {controller.service(name).control_name}"):
        await controller.backend(name).restart()


async def verify(
    name: str,
    backend: ServiceBackend,
    check: HealthCheck | None,
    health: HealthConfig | None,
    progress: Progress,
    start_timeout_s: float,
) -> int | None:
    """Running, then healthy N times in a row within T; returns the unit's NRestarts."""
    async with progress.step("wait until running") as step:
        status = await backend.wait_running(start_timeout_s)
        step.detail = f"pid {status.main_pid or '-'}"
    if check is None or health is None:
        return status.restarts
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
