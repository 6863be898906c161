"""What changed lately for the service an alert is about: the deploy or flag to undo."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from config.opsfile import OpsConfig
from services.deploy.deployments import Deployments
from services.deploy.model import DeploymentError, DeploymentKind, DeploymentState
from services.flags.store import FlagStore

RECENT = timedelta(hours=1)
# A drill ends where it began and a database restore changes no release: neither is a change
# an alert's Roll back could undo, nor one that hides the deploy before it.
_NO_RELEASE_CHANGE = frozenset({DeploymentKind.DRILL, DeploymentKind.RESTORE})


@dataclass(frozen=True)
class RecentDeploy:
    deployment_id: int
    service: str
    version: str
    previous_version: str
    at: datetime


@dataclass(frozen=True)
class RecentFlagChange:
    key: str
    to_value: str
    actor: str
    at: datetime


class RecentChanges:
    def __init__(
        self,
        deployments: Deployments,
        flags: FlagStore,
        ops: Callable[[], OpsConfig],
        clock: Callable[[], datetime],
    ) -> None:
        self._deployments = deployments
        self._flags = flags
        self._ops = ops
        self._clock = clock

    async def deploy(self, service: str) -> RecentDeploy | None:
        """The service's last successful deploy in the past hour, if there is one to undo."""
        if service not in self._ops().services:
            return None
        since = self._clock() - RECENT
        for d in await self._deployments.history(service, 5):
            if d.state is not DeploymentState.SUCCEEDED or d.kind in _NO_RELEASE_CHANGE:
                continue
            # The newest change that took: a deploy of the last hour is the one to undo; a
            # rollback (or an older deploy) means there is nothing recent to undo.
            recent = d.finished_at is not None and d.finished_at >= since
            if d.kind is DeploymentKind.DEPLOY and recent and d.previous_version:
                assert d.finished_at is not None
                return RecentDeploy(d.id, service, d.version, d.previous_version, d.finished_at)
            return None
        return None

    async def deployment(self, deployment_id: int) -> RecentDeploy | None:
        """That deployment, while it is still the service's recent one to undo."""
        try:
            found = await self._deployments.get(deployment_id)
        except DeploymentError:
            return None
        recent = await self.deploy(found.service)
        return recent if recent is not None and recent.deployment_id == deployment_id else None

    async def flag(self, service: str) -> RecentFlagChange | None:
        """The newest rollout change in the past hour of a flag the service is gated by."""
        since = self._clock() - RECENT
        found: RecentFlagChange | None = None
        for key, declared in self._ops().flags.items():
            if declared.service != service:
                continue
            for change in await self._flags.changes(key, 5):
                if change.field == "rollout_percent" and change.at >= since:
                    if found is None or change.at > found.at:
                        found = RecentFlagChange(key, change.to_value, change.actor, change.at)
                    break
        return found
