"""Deployments as rows: one active deployment per service and environment, every move audited.

Every move writes the deployment's row, its lock and a `deploy.<state>` audit event in one
transaction, so after a crash the row, the lock and the trail always agree. The lock is taken
with the insert and released with the move that finishes the deployment. The states, the
dataclass and the errors live in `deployment_model` and are re-exported here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from config.opsfile import is_valid_name
from services.deploy.canary_rows import CanaryRows
from services.deploy.host_rows import HostRows
from services.deploy.locks import EnvironmentLocked, read_lock
from services.deploy.model import (
    BEFORE_SWITCH,
    MAX_NOTE,
    MAX_VERSION,
    TERMINAL,
    Busy,
    Deployment,
    DeploymentError,
    DeploymentKind,
    DeploymentState,
    IllegalTransition,
    InvalidRequest,
    UnknownDeployment,
    check_transition,
    ends_deployment,
    from_row,
    state_durations,
)
from services.records.audit import AuditLog, Event, event_from_row, utc_now
from services.records.storage import Connection, Storage

__all__ = [
    "BEFORE_SWITCH",
    "TERMINAL",
    "Busy",
    "Deployment",
    "DeploymentError",
    "DeploymentKind",
    "DeploymentState",
    "Deployments",
    "EnvironmentLocked",
    "IllegalTransition",
    "InvalidRequest",
    "UnknownDeployment",
    "state_durations",
]


log = logging.getLogger(__name__)


class Deployments:
    def __init__(
        self, storage: Storage, audit: AuditLog, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._storage = storage
        self._audit = audit
        self._clock = clock
        # Crash drills (OPSGATE_HOLD_AT): a deployment that enters this state stays there,
        # so the process can be killed at exactly that step.
        self.hold_at: DeploymentState | None = None
        self.hosts = HostRows(storage, audit)  # a fleet deployment's hosts, one row each
        self.canary = CanaryRows(storage, audit)  # a canary rollout's step and analyses

    async def request(
        self,
        service: str,
        environment: str,
        version: str,
        requester: str,
        kind: DeploymentKind = DeploymentKind.DEPLOY,
        emergency: bool = False,
        dry_run: bool = False,
        previous_version: str | None = None,
    ) -> Deployment:
        """A new deployment in `requested`, holding its service+environment lock.

        Refused with Busy or EnvironmentLocked (and the refusal audited). A dry run changes
        nothing, so it takes no lock, but a locked environment refuses it too.
        """
        _check_request(service, environment, version, requester)
        kind = DeploymentKind(kind)
        now = self._clock().isoformat()
        try:
            async with self._storage.transaction() as db:
                held = await read_lock(db, environment)
                if held is not None:
                    raise EnvironmentLocked(held)
                async with db.execute(
                    "INSERT INTO deployments (service, environment, version, previous_version,"
                    " kind, state, requested_by, emergency, dry_run, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, 'requested', ?, ?, ?, ?, ?)",
                    (
                        service,
                        environment,
                        version,
                        previous_version,
                        kind.value,
                        requester,
                        emergency,
                        dry_run,
                        now,
                        now,
                    ),
                ) as cursor:
                    deployment_id = cursor.lastrowid
                assert deployment_id is not None
                if not dry_run:
                    await self._acquire(db, service, environment, deployment_id, now)
                data = {
                    "deployment": deployment_id,
                    "from": None,
                    "to": "requested",
                    "note": "",
                    "environment": environment,
                    "version": version,
                    "kind": kind.value,
                    "emergency": emergency,
                    "dry_run": dry_run,
                }
                await self._audit.record("deploy.requested", requester, service, data)
        except (Busy, EnvironmentLocked) as refused:
            data = {"environment": environment, "version": version, "reason": str(refused)}
            await self._audit.record("deploy.refused", requester, service, data)
            raise
        return await self.get(deployment_id)

    async def advance(
        self, deployment_id: int, to_state: DeploymentState, actor: str, note: str = ""
    ) -> Deployment:
        return await self._move(deployment_id, DeploymentState(to_state), actor, note)

    async def fail(self, deployment_id: int, actor: str, error: str) -> Deployment:
        """Failed before switching: finished. After: stays in flight until rolled back."""
        return await self._move(deployment_id, DeploymentState.FAILED, actor, error, error)

    async def cancel(self, deployment_id: int, actor: str, note: str = "") -> Deployment:
        """Only before switching; afterwards the way back is a rollback."""
        return await self._move(deployment_id, DeploymentState.CANCELLED, actor, note)

    async def get(self, deployment_id: int) -> Deployment:
        return await _read(self._storage.db, deployment_id)

    async def history(self, service: str | None = None, limit: int = 20) -> list[Deployment]:
        """Newest first."""
        rows = await self._storage.db.execute_fetchall(
            "SELECT * FROM deployments WHERE ? IS NULL OR service = ? ORDER BY id DESC LIMIT ?",
            (service, service, limit),
        )
        return [from_row(row) for row in rows]

    async def latest_finished(
        self, service: str, environment: str, version: str
    ) -> Deployment | None:
        """The newest finished deploy or rollback of `version` there: promotion asks it."""
        rows = await self._storage.db.execute_fetchall(
            "SELECT * FROM deployments WHERE service = ? AND environment = ? AND version = ?"
            " AND finished_at IS NOT NULL AND kind NOT IN ('drill', 'restore')"
            " AND dry_run = 0"
            " AND state != 'cancelled' ORDER BY id DESC LIMIT 1",
            (service, environment, version),
        )
        return next((from_row(row) for row in rows), None)

    async def in_flight(self) -> list[Deployment]:
        """Unfinished deployments, oldest first: what recovery must reconcile after a crash."""
        rows = await self._storage.db.execute_fetchall(
            "SELECT * FROM deployments WHERE finished_at IS NULL ORDER BY id"
        )
        return [from_row(row) for row in rows]

    async def events(self, deployment_id: int) -> list[Event]:
        """The deployment's audit trail, in order (durations: `state_durations`)."""
        deployment = await self.get(deployment_id)
        # Compared as text: SQLite reads the JSON number as an integer, PostgreSQL as text.
        rows = await self._storage.db.execute_fetchall(
            "SELECT id, at, kind, actor, subject, data FROM events WHERE subject = ?"
            " AND kind LIKE 'deploy.%' AND CAST(json_extract(data, '$.deployment') AS TEXT)"
            " = CAST(? AS TEXT) ORDER BY id",
            (deployment.service, deployment_id),
        )
        return [event_from_row(row) for row in rows]

    async def set_progress_message(self, deployment_id: int, chat_id: int, message_id: int) -> None:
        """Where the progress card is, so the bot can edit it again after a restart."""
        await self._set(
            deployment_id, "progress_chat_id = ?, progress_message_id = ?", (chat_id, message_id)
        )

    async def set_previous_version(self, deployment_id: int, version: str) -> None:
        """What ran before the switch (known to the pipeline once it reads the host)."""
        await self._set(deployment_id, "previous_version = ?", (version,))

    async def _set(self, deployment_id: int, assignments: str, params: tuple[object, ...]) -> None:
        # `assignments` is a constant from the callers above; values are bound parameters.
        written = await self._storage.write(
            f"UPDATE deployments SET {assignments} WHERE id = ?",  # noqa: S608
            (*params, deployment_id),
        )
        if written.rowcount != 1:
            raise UnknownDeployment(f"no deployment #{deployment_id}")

    async def _acquire(
        self, db: Connection, service: str, environment: str, deployment_id: int, now: str
    ) -> None:
        # The primary key makes this the one place two requests can race; the loser's insert
        # does nothing, and its whole transaction (its deployment row too) is rolled back.
        async with db.execute(
            "INSERT INTO deployment_locks (service, environment, deployment_id, acquired_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (service, environment) DO NOTHING",
            (service, environment, deployment_id, now),
        ) as cursor:
            won = cursor.rowcount == 1
        if not won:
            rows = await db.execute_fetchall(
                "SELECT deployment_id FROM deployment_locks WHERE service = ? AND environment = ?",
                (service, environment),
            )
            raise Busy(await _read(db, next(iter(rows))[0]))

    async def _move(
        self,
        deployment_id: int,
        to_state: DeploymentState,
        actor: str,
        note: str,
        error: str | None = None,
    ) -> Deployment:
        note = note[:MAX_NOTE]
        async with self._storage.transaction() as db:
            current = await _read(db, deployment_id)
            if current.finished:
                raise IllegalTransition(f"#{deployment_id} has finished already ({current.state})")
            check_transition(deployment_id, current.state, to_state, current.kind, current.dry_run)
            now = self._clock().isoformat()
            ends = ends_deployment(current.state, to_state)
            await db.execute(
                "UPDATE deployments SET state = ?, updated_at = ?, finished_at = ?, error = ?"
                " WHERE id = ?",
                (
                    to_state.value,
                    now,
                    now if ends else None,
                    current.error if error is None else error[:MAX_NOTE],
                    deployment_id,
                ),
            )
            if ends:
                await db.execute(
                    "DELETE FROM deployment_locks WHERE deployment_id = ?", (deployment_id,)
                )
            data = {
                "deployment": deployment_id,
                "from": current.state.value,
                "to": to_state.value,
                "note": note,
            }
            await self._audit.record(f"deploy.{to_state.value}", actor, current.service, data)
            moved = await _read(db, deployment_id)
        if to_state is self.hold_at:
            log.warning("deployment #%s holds in %s (OPSGATE_HOLD_AT)", deployment_id, to_state)
            await asyncio.Event().wait()
        return moved


def _check_request(service: str, environment: str, version: str, requester: str) -> None:
    # Names are checked strictly here too: this row outlives the chat message that asked.
    if not is_valid_name(service):
        raise InvalidRequest(f"not a service name: {service[:40]!r}")
    if not is_valid_name(environment):
        raise InvalidRequest(f"not an environment name: {environment[:40]!r}")
    if not 0 < len(version) <= MAX_VERSION or not version.isprintable() or " " in version:
        raise InvalidRequest(f"not a version: {version[:40]!r}")
    if not requester:
        raise InvalidRequest("a deployment needs a requester")


async def _read(db: Connection, deployment_id: int) -> Deployment:
    async with db.execute("SELECT * FROM deployments WHERE id = ?", (deployment_id,)) as cursor:
        row = await cursor.fetchone()
    if row is None:
        raise UnknownDeployment(f"no deployment #{deployment_id}")
    return from_row(row)
