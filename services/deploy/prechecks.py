"""Pre-deploy checks: what must hold on the host before a deploy changes anything.

Each is one Progress step; the first that fails raises `StepFailed` with a sentence that says
what was found and what was needed, and the deploy ends `failed` with nothing changed.
"""

from __future__ import annotations

from datetime import datetime

from config.inventory import PreChecks
from config.opsfile import Environment
from services.control.controller import ServiceController
from services.deploy.errors import StepFailed
from services.deploy.hooks import output_tail
from services.deploy.model import Deployment
from services.deploy.windows import deploy_refusal
from services.hosts.facts import (
    MIB,
    free_bytes,
    meminfo,
    parse_version,
    python_version,
)
from services.hosts.runner import Host
from services.progress import Progress


async def check_current_health(
    controller: ServiceController,
    name: str,
    progress: Progress,
    *,
    required: bool,
    host: str | None = None,
) -> None:
    """Reported; a reason to stop only when `required` (often a deploy is what fixes it)."""
    async with progress.step("current health") as step:
        state = await controller.state(name, host)
        if not state.running:
            step.detail = f"not running ({state.error or state.state})"
        elif state.health is None:
            step.detail = "running, no health check configured"
        else:
            step.detail = f"running, health: {state.health.reason}"
        healthy = state.running and (state.health is None or state.health.ok)
        if required and not healthy:
            raise StepFailed(f"{name} is not healthy now ({step.detail}); require_healthy is set.")


async def run_prechecks(host: Host, root: str, checks: PreChecks, progress: Progress) -> None:
    async with progress.step("free disk") as step:
        free = await free_bytes(host, root, checks.timeout_s)
        step.detail = f"{free // MIB} MiB free under {root}"
        if free < checks.min_free_disk_mib * MIB:
            raise StepFailed(
                f"Only {free // MIB} MiB free under {root} on {host.name};"
                f" at least {checks.min_free_disk_mib} MiB are needed."
            )
    if checks.min_available_memory_mib is not None:
        async with progress.step("available memory") as step:
            available = (await meminfo(host, checks.timeout_s)).get("MemAvailable", 0)
            step.detail = f"{available // MIB} MiB available"
            if available < checks.min_available_memory_mib * MIB:
                raise StepFailed(
                    f"Only {available // MIB} MiB of memory available on {host.name};"
                    f" at least {checks.min_available_memory_mib} MiB are needed."
                )
    if checks.python is not None:
        async with progress.step("python version") as step:
            found = await python_version(host, checks.python, checks.timeout_s)
            shown = ".".join(map(str, found))
            step.detail = f"{checks.python[0]}: {shown}"
            if checks.min_python and found < parse_version(checks.min_python):
                raise StepFailed(
                    f"{checks.python[0]} on {host.name} is Python {shown};"
                    f" {checks.min_python} or newer is needed."
                )
    for name, argv in checks.commands.items():
        async with progress.step(f"check {name}") as step:
            result = await host.run(argv, timeout=checks.timeout_s)
            step.detail = output_tail(result) or result.summary
            if not result.ok:
                tail = output_tail(result)
                raise StepFailed(
                    f"The pre-check {name} failed ({result.summary})."
                    + (f" Output: {tail}" if tail else "")
                )


async def check_window(
    deployment: Deployment, environment: Environment | None, now: datetime, progress: Progress
) -> None:
    """Windows and freezes hold back planned deploys, never an emergency."""
    if environment is None or not (environment.windows or environment.freezes):
        return
    async with progress.step("deploy window") as step:
        if deployment.emergency:
            step.detail = "emergency: windows and freezes do not apply"
            return
        refusal = deploy_refusal(deployment.environment, environment, now)
        if refusal is not None:
            raise StepFailed(f"{refusal}.")
        step.detail = "open"
