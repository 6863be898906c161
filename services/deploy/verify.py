"""Restart a service and verify it: running, then healthy N times in a row within T.

Each reports through a `Progress` step and raises `StepFailed` (a sentence fit for chat) when
the service does not do what it should; host and control errors pass through unchanged.
"""

from __future__ import annotations

import asyncio

from config.inventory import HealthConfig
from services.control.backends import ServiceBackend
from services.control.controller import ServiceController
from services.control.health import HealthCheck, HealthWait, wait_until_healthy
from services.control.units import StartLimitHit
from services.deploy.errors import NotTheReleasesFault, StepFailed
from services.progress import Progress


async def restart(
    controller: ServiceController, name: str, progress: Progress, host: str | None = None
) -> None:
    """Restart; when systemd's start limit refuses the restart opsgate asked for, clear it
    once (saying so on the step) and try again. A limit that holds is not the release's
    fault: the release is not marked bad for it."""
    backend = controller.backend(name, host)
    async with progress.step(f"restart {controller.service(name).control_name}") as step:
        try:
            await backend.restart()
        except StartLimitHit as exc:
            if not await backend.clear_start_limit():
                raise NotTheReleasesFault(str(exc)) from exc
            step.detail = (
                "systemd's start limit refused the restart: cleared it once"
                f" (systemctl reset-failed {exc.unit}) and restarted"
            )
            try:
                await backend.restart()
            except StartLimitHit as again:
                raise NotTheReleasesFault(str(again)) from again


async def verify(
    name: str,
    backend: ServiceBackend,
    check: HealthCheck | None,
    health: HealthConfig | None,
    progress: Progress,
    start_timeout_s: float,
    *,
    rollback: bool = False,
) -> int | None:
    """Running, then healthy N times in a row within T (N: the health config's
    `rollback_consecutive` after a rollback, else `consecutive`); returns NRestarts."""
    healthy: asyncio.Future[HealthWait] | None = None
    if check is not None and health is not None:
        needed = health.needed(rollback=rollback)
        # The health streak starts beside the unit's state query, not after it: a restart
        # that returned has most often started the service, and the answers are independent.
        healthy = asyncio.ensure_future(
            wait_until_healthy(check, needed, health.within_s, health.interval_s)
        )
    try:
        async with progress.step("wait until running") as step:
            status = await backend.wait_running(start_timeout_s)
            step.detail = f"pid {status.main_pid or '-'}"
    except BaseException:
        if healthy is not None:
            healthy.cancel()
            await asyncio.gather(healthy, return_exceptions=True)
        raise
    if healthy is None or health is None:
        return status.restarts
    async with progress.step(f"health: {needed} in a row") as step:
        wait = await healthy
        step.detail = f"{wait.checks} check(s), last: {wait.last.reason if wait.last else '-'}"
        if not wait.ok:
            reason = wait.last.reason if wait.last else "no answer"
            raise StepFailed(
                f"{name} was not healthy {needed} times in a row within"
                f" {health.within_s:g} s (last: {reason})."
            )
    return status.restarts
