"""Restart a service and verify it: running, then healthy N times in a row within T.

Each reports through a `Progress` step and raises `StepFailed` (a sentence fit for chat) when
the service does not do what it should; host and control errors pass through unchanged.
"""

from __future__ import annotations

from config.inventory import HealthConfig
from services.control.backends import ServiceBackend
from services.control.controller import ServiceController
from services.control.health import HealthCheck, wait_until_healthy
from services.deploy.errors import StepFailed
from services.progress import Progress


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
