"""`/halt`: the emergency stop. Nothing new goes out until someone unlocks.

Every deployment that has not switched yet is cancelled (one that has switched finishes its
verification or rolls back: stopping it halfway would be worse), every active staged rollout
is paused where it stands, and every environment is locked with the reason.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.deploy.deployments import Deployments
from services.deploy.locks import EnvironmentLocks, EnvLock
from services.deploy.model import BEFORE_SWITCH, Deployment, DeploymentError
from services.flags.plans import Plan, PlanError, PlanService
from services.records.audit import AuditLog


@dataclass(frozen=True)
class HaltReport:
    cancelled: list[Deployment]
    still_running: list[Deployment]  # already switched: they finish or roll back
    paused: list[Plan]
    locked: list[EnvLock]


async def halt(
    deployments: Deployments,
    cancel: Callable[[int, str, str], Awaitable[Deployment]],
    plans: PlanService,
    locks: EnvironmentLocks,
    audit: AuditLog,
    environments: list[str],
    actor: str,
    reason: str,
) -> HaltReport:
    # Lock first, so nothing new can be requested while the rest is being stopped.
    locked = await locks.lock_all(environments, actor, f"halt: {reason}")
    cancelled, running = [], []
    for deployment in await deployments.in_flight():
        if deployment.state in BEFORE_SWITCH:
            try:
                cancelled.append(await cancel(deployment.id, actor, f"halt: {reason}"))
            except DeploymentError:  # it switched meanwhile: it finishes or rolls back
                running.append(deployment)
        else:
            running.append(deployment)
    paused = []
    for plan in await plans.active():
        try:
            paused.append(await plans.pause(plan.flag_key, actor))
        except PlanError:  # it finished or halted meanwhile
            continue
    data = {
        "reason": reason,
        "cancelled": [d.id for d in cancelled],
        "running": [d.id for d in running],
        "paused": [p.flag_key for p in paused],
        "locked": [lock.environment for lock in locked],
    }
    await audit.record("opsgate.halt", actor, "", data)
    return HaltReport(cancelled, running, paused, locked)
