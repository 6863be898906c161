"""The one front door for every request that changes production.

Deploy, emergency deploy, rollback, drill, database restore and drill, restart, cancel and
halt come through here,
whichever surface asked (a chat command, a button, the HTTP API, the CLI): the checks
(known service, valid version, window, lock, policy) and what follows (sign-off, the
after-the-fact notice of an emergency, the run itself) are written once. What a surface shows
of it goes through a `ChangeListener`, which bot/ implements with Telegram messages.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from config.inventory import Service
from config.opsfile import OpsConfig
from services.approvals.model import ApprovalRequest, Policy, deploy_policy, rollback_rule
from services.approvals.signoff import Approvals
from services.control.controller import RestartOutcome, ServiceController, UnknownService
from services.deploy.database_backups import SqliteDatabase
from services.deploy.deployments import Deployments
from services.deploy.drills import DatabaseDrillReport, run_database_drill
from services.deploy.errors import DeployError
from services.deploy.halt import HaltReport, halt
from services.deploy.locks import EnvironmentLocked, EnvironmentLocks
from services.deploy.model import Deployment, DeploymentKind
from services.deploy.model import DeploymentState as S
from services.deploy.pipeline import DeployPipeline
from services.deploy.promotion import promotion_refusal
from services.deploy.rollback_points import (
    RollbackPoint,
    RollbackPointNotFound,
    RollbackPoints,
    validate_deployment_id,
)
from services.deploy.windows import deploy_refusal, is_production
from services.flags.plans import PlanService
from services.progress import Progress
from services.records.audit import AuditLog
from services.releases.build import validate_version
from services.releases.queries import ReleaseQueries


class NotDeployable(DeployError):
    kind = "invalid"

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} has no deploy section in the ops file.")


class OutsideWindow(DeployError):
    """A freeze or the environment's deploy windows hold the deploy back."""

    def __init__(self, refusal: str) -> None:
        super().__init__(refusal)
        self.refusal = refusal


class UnknownEnvironment(DeployError):
    kind = "not_found"

    def __init__(self, name: str, environment: str, known: list[str]) -> None:
        super().__init__(f"{name} has no environment {environment!r} (it has: {', '.join(known)}).")


class NotPromoted(DeployError):
    """An environment that takes only versions proven in another one first."""

    kind = "conflict"


class NoDatabase(DeployError):
    kind = "invalid"

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} has no sqlite_db in its deploy section: no database to restore.")


class ProductionDrill(DeployError):
    def __init__(self, name: str, environment: str) -> None:
        super().__init__(f"Drills run outside production; {name} is in {environment}.")


@dataclass(frozen=True)
class Origin:
    """Where a request came from: the door, and the chat message to answer under, if any."""

    door: str  # chat | button | api | cli
    chat_id: int | None = None
    message_id: int | None = None


class ChangeListener(Protocol):
    """What the surfaces show of a request as it moves; bot/ implements it for Telegram."""

    async def signoff_requested(
        self, deployment: Deployment, policy: Policy, origin: Origin
    ) -> ApprovalRequest:
        """Open the sign-off and post its message; the request as it is then."""

    async def signoff_ended(self, request: ApprovalRequest) -> None:
        """The deployment ended another way (/cancel, /halt): show its sign-off closed."""

    async def emergency_without_signoff(self, deployment: Deployment, actor: str) -> None:
        """An emergency deploy skipped sign-off: tell the approvers to review it now."""

    async def go(self, deployment: Deployment, origin: Origin) -> None:
        """Run an approved deployment now, with its live card where the request came from;
        returns once it runs, never waiting for the chat."""


@dataclass(frozen=True)
class Requested:
    """A request accepted: it waits for `signoff`, or (signoff None) it runs now."""

    deployment: Deployment
    signoff: ApprovalRequest | None = None


@dataclass(frozen=True)
class DryRun:
    service: Service
    refusal: str | None  # what would hold it back now
    environment: str = ""


class FrontDoor:
    def __init__(
        self,
        ops: Callable[[], OpsConfig],
        deployments: Deployments,
        pipeline: DeployPipeline,
        approvals: Approvals,
        releases: ReleaseQueries,
        controller: Callable[[], ServiceController],
        env_locks: EnvironmentLocks,
        plans: PlanService,
        audit: AuditLog,
        clock: Callable[[], datetime],
    ) -> None:
        self._ops, self._deployments, self._pipeline = ops, deployments, pipeline
        self._approvals, self._releases, self._controller = approvals, releases, controller
        self._env_locks, self._plans, self._audit, self._clock = env_locks, plans, audit, clock
        self._listener: ChangeListener | None = None

    def listen(self, listener: ChangeListener) -> None:
        """The composition root sets who shows requests once the chat exists."""
        self._listener = listener

    @property
    def listener(self) -> ChangeListener:
        if self._listener is None:
            raise RuntimeError("no ChangeListener wired into the front door")
        return self._listener

    def deployable(self, name: str) -> Service:
        """The service `name`, or UnknownService / NotDeployable."""
        ops = self._ops()
        if name not in ops.services:
            raise UnknownService(name, sorted(ops.services))
        service = ops.services[name]
        if service.deploy is None:
            raise NotDeployable(name)
        return service

    def environment_of(self, service: Service, name: str, environment: str | None) -> str:
        """The environment asked for, or the service's first (in promotion order)."""
        if environment is None:
            return service.home
        known = service.environment_names()
        if environment not in known:
            raise UnknownEnvironment(name, environment, known)
        return environment

    def window_refusal(self, service: Service, environment: str | None = None) -> str | None:
        env_name = environment or service.home
        environment_config = self._ops().environments.get(env_name)
        if environment_config is None:
            return None
        return deploy_refusal(env_name, environment_config, self._clock())

    async def promotion_refusal(
        self, name: str, service: Service, environment: str, version: str
    ) -> str | None:
        """Why `version` may not go to `environment` yet (services/deploy/promotion.py)."""
        placement = service.in_environment(environment)
        if placement is None or placement.promote_from is None:
            return None
        last = await self._deployments.latest_finished(name, placement.promote_from, version)
        return promotion_refusal(name, environment, placement, version, last, self._clock())

    async def dry_run(
        self, name: str, version: str, actor: str, environment: str | None = None
    ) -> DryRun:
        service = self.deployable(name)
        validate_version(version)
        env = self.environment_of(service, name, environment)
        data = {"version": version, "environment": env}
        await self._audit.record("deploy.dry_run", actor, name, data)
        refusal = self.window_refusal(service, env)
        refusal = refusal or await self.promotion_refusal(name, service, env, version)
        return DryRun(service, refusal, env)

    async def deploy(
        self,
        name: str,
        version: str,
        actor: str,
        origin: Origin,
        *,
        emergency: bool = False,
        environment: str | None = None,
    ) -> Requested:
        """A deploy: checked, then waiting for sign-off, or running (an emergency skips the
        window, the promotion rule and the sign-off, and the approvers are told at once)."""
        service = self.deployable(name)
        validate_version(version)
        env = self.environment_of(service, name, environment)
        if not emergency and (refusal := self.window_refusal(service, env)) is not None:
            raise OutsideWindow(refusal)
        if not emergency and (refusal := await self.promotion_refusal(name, service, env, version)):
            await self._audit.record(
                "deploy.refused",
                actor,
                name,
                {"environment": env, "version": version, "reason": refusal},
            )
            raise NotPromoted(refusal)
        deployment = await self._request(name, env, version, actor, emergency=emergency)
        policy = deploy_policy(self._ops(), env)
        if policy is not None and not emergency:
            return await self._ask(deployment, policy, origin)
        note = "emergency: approval after the fact" if policy else "no approval needed"
        if origin.door != "chat":
            note += f" (through the {origin.door})"
        deployment = await self._deployments.advance(deployment.id, S.APPROVED, actor, note)
        await self.listener.go(deployment, origin)  # first: the notice must not delay it
        if policy is not None:
            await self.listener.emergency_without_signoff(deployment, actor)
        return Requested(deployment)

    async def promote(
        self, name: str, actor: str, origin: Origin, source: str | None = None
    ) -> Requested:
        """Deploy what runs in `source` (default: the first environment another one is
        promoted from) to the environment promoted from it, through the usual sign-off."""
        service = self.deployable(name)
        sources = [e.promote_from for e in service.environments.values() if e.promote_from]
        if source is None:
            if not sources:
                raise NotPromoted(f"No environment of {name} is promoted from another.")
            source = sources[0]
        self.environment_of(service, name, source)
        target = next(
            (env for env, e in service.environments.items() if e.promote_from == source), None
        )
        if target is None:
            raise NotPromoted(f"No environment of {name} is promoted from {source}.")
        running = await self._releases.current_by_host(name, source)
        versions = sorted({v for v in running.values() if v is not None})
        if len(versions) != 1 or None in running.values():
            seen = ", ".join(f"{h}: {v or '-'}" for h, v in running.items())
            raise NotPromoted(
                f"{name} in {source} does not run one version on every host ({seen})."
            )
        return await self.deploy(name, versions[0], actor, origin, environment=target)

    async def rollback(
        self,
        name: str,
        version: str | None,
        actor: str,
        origin: Origin,
        environment: str | None = None,
    ) -> Requested:
        """A rollback to `version`, or to the newest good release before the current one.
        Where deploys need sign-off it needs one person of a rollback role: the requester
        themself when they hold one (recorded as an emergency), else someone else."""
        service = self.deployable(name)
        env = self.environment_of(service, name, environment)
        # An API token of a role is no person: where sign-off is needed, a person gives it.
        requester = int(actor) if actor.isdigit() else 0
        policy, emergency = rollback_rule(self._ops(), env, requester)
        target = await self._releases.rollback_target(name, version, env)
        deployment = await self._request(
            name, env, target, actor, kind=DeploymentKind.ROLLBACK, emergency=emergency
        )
        if policy is not None and not emergency:
            return await self._ask(deployment, policy, origin)
        note = "emergency policy: the requester holds a rollback role" if emergency else "rollback"
        deployment = await self._deployments.advance(deployment.id, S.APPROVED, actor, note)
        await self.listener.go(deployment, origin)
        return Requested(deployment)

    async def drill(
        self, name: str, actor: str, origin: Origin, environment: str | None = None
    ) -> Requested:
        """Roll back to the previous good release, verify, roll forward: outside production."""
        service = self.deployable(name)
        env = self.environment_of(service, name, environment)
        env_config = self._ops().environments.get(env)
        if env_config is None or is_production(env, env_config):
            raise ProductionDrill(name, env)
        current, back_to = await self._releases.drill_pair(name, env)
        deployment = await self._request(
            name,
            env,
            current,
            actor,
            kind=DeploymentKind.DRILL,
            previous_version=back_to,
        )
        deployment = await self._deployments.advance(
            deployment.id, S.APPROVED, "opsgate", "drill outside production"
        )
        await self.listener.go(deployment, origin)
        return Requested(deployment)

    async def restore(
        self, name: str, point: str, actor: str, origin: Origin, environment: str | None = None
    ) -> Requested:
        """Put back the database backup of rollback point `point` (services/deploy/restores.py):
        checked first (the point exists and its backup is intact), then signed off wherever a
        deploy would be; no window holds it back, as none holds back a rollback."""
        service = self.deployable(name)
        env = self.environment_of(service, name, environment)
        points, database = self._points(name, service, env)
        point_id = _point_id(name, point)
        await points.checked_database(await points.load(point_id), database)
        deployment = await self._request(name, env, point_id, actor, kind=DeploymentKind.RESTORE)
        policy = deploy_policy(self._ops(), env)
        if policy is not None:
            return await self._ask(deployment, policy, origin)
        note = "no approval needed" + (f" (through the {origin.door})" * (origin.door != "chat"))
        deployment = await self._deployments.advance(deployment.id, S.APPROVED, actor, note)
        await self.listener.go(deployment, origin)
        return Requested(deployment)

    async def restore_points(
        self, name: str, environment: str | None = None
    ) -> list[RollbackPoint]:
        """The rollback points of `name` that hold a database backup, newest first."""
        service = self.deployable(name)
        points, _ = self._points(name, service, self.environment_of(service, name, environment))
        return [point for point in await points.all() if point.database is not None]

    async def database_drill(
        self, name: str, actor: str, point: str | None = None, environment: str | None = None
    ) -> DatabaseDrillReport:
        """Restore a backup (the newest, or `point`'s) into a scratch copy and check it; the
        live database is never touched, so it runs in any environment, production too."""
        service = self.deployable(name)
        env = self.environment_of(service, name, environment)
        points, database = self._points(name, service, env)
        point_id = None if point is None else _point_id(name, point)
        report = await run_database_drill(points, database, point_id)
        data = {"environment": env, "point": report.point, "ok": report.ok}
        await self._audit.record("drill.database", actor, name, data | {"tables": report.tables})
        return report

    def _points(
        self, name: str, service: Service, env: str
    ) -> tuple[RollbackPoints, SqliteDatabase]:
        assert service.deploy is not None  # deployable
        if not service.deploy.sqlite_db:
            raise NoDatabase(name)
        points = self._pipeline.rollback_points(name, env)
        return points, SqliteDatabase(service.deploy.sqlite_db)

    async def signed_off(self, request: ApprovalRequest) -> None:
        """Sign-off complete: the deployment runs, its card under the request that asked."""
        deployment = await self._deployments.get(request.deployment_id)
        origin = Origin("chat", request.origin_chat_id, request.origin_message_id)
        await self.listener.go(deployment, origin)

    async def restart(
        self, name: str, actor: str, progress: Progress, environment: str | None = None
    ) -> RestartOutcome:
        """A verified restart (confirmed by a second press in chat); on a fleet, one host
        after the other, stopping at the first that does not come back healthy."""
        started = time.monotonic()
        controller = self._controller()
        service = controller.service(name)
        env = self.environment_of(service, name, environment)
        for host in service.hosts_in(env):
            outcome = await controller.restart(name, progress, host)
            if not outcome.ok:
                break
        data = {
            "ok": outcome.ok,
            "old_pid": outcome.old_pid,
            "new_pid": outcome.new_pid,
            "error": outcome.error,
            "seconds": round(time.monotonic() - started, 3),
        }
        await self._audit.record("restart.finished", actor, name, data)
        return outcome

    async def cancel(self, deployment_id: int, actor: str, reason: str) -> Deployment:
        """Cancel a deployment that has not switched; its sign-off ends with it."""
        cancelled = await self._pipeline.cancel(deployment_id, actor, reason)
        await self._end_signoff(cancelled.id, actor, reason)
        return cancelled

    async def halt(self, actor: str, reason: str) -> HaltReport:
        """The emergency stop: lock everything, cancel what has not switched, stop rollouts
        before their next host, pause plans."""
        self._pipeline.halt_rollouts(actor)
        report = await halt(
            self._deployments,
            self._pipeline.cancel,
            self._plans,
            self._env_locks,
            self._audit,
            sorted(self._ops().environments),
            actor,
            reason,
        )
        for deployment in report.cancelled:
            await self._end_signoff(deployment.id, actor, f"halt: {reason}")
        return report

    async def _request(
        self, service: str, environment: str, version: str, actor: str, **kwargs: Any
    ) -> Deployment:
        """Deployments.request, with a lock's holder named as people know them."""
        try:
            return await self._deployments.request(service, environment, version, actor, **kwargs)
        except EnvironmentLocked as exc:
            name = self._ops().name_of_actor(exc.lock.locked_by)
            raise EnvironmentLocked(exc.lock, name) from None

    async def _ask(self, deployment: Deployment, policy: Policy, origin: Origin) -> Requested:
        request = await self.listener.signoff_requested(deployment, policy, origin)
        return Requested(deployment, request)

    async def _end_signoff(self, deployment_id: int, actor: str, reason: str) -> None:
        await self._approvals.cancel_for(deployment_id, actor, reason)
        request = await self._approvals.for_deployment(deployment_id)
        if request is not None:
            await self.listener.signoff_ended(request)


def _point_id(name: str, point: str) -> str:
    try:
        return validate_deployment_id(point)
    except ValueError:
        raise RollbackPointNotFound(f"{point[:40]!r} is not a rollback point of {name}.") from None
