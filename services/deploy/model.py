"""A deployment's model: its states and which may follow which, its row, its errors. No I/O.

    requested -> [awaiting_approval ->] approved -> pre_checks -> building -> switching
      -> verifying -> [watching ->] succeeded
    any working state -> failed; after a switch: failed -> rolling_back -> rolled_back
                                                                        | rollback_failed
    before switching -> cancelled

A succeeded deployment is never reopened: undoing it is a new deployment of kind rollback.
A restore (kind restore) goes requested -> ... -> pre_checks -> switching (stop, restore the
database, start) -> verifying -> succeeded; its `version` is the rollback point it restores.

Errors (text fit for chat):
    DeploymentError
     ├── UnknownDeployment
     ├── InvalidRequest
     ├── IllegalTransition     (also: cancel after switching)
     └── Busy                  .holder: the deployment that holds the lock
    env_locks.EnvLockError
     └── EnvironmentLocked     .lock: who, why, since
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from services.deploy.errors import DeployError
from services.records.audit import Event
from services.records.storage import Row

MAX_VERSION = 128
MAX_NOTE = 2000  # notes and errors; hook output tails are kept elsewhere


class DeploymentError(DeployError):
    """A deployment command that cannot be carried out; the text is fit for chat."""


class IllegalTransition(DeploymentError):
    pass


class UnknownDeployment(DeploymentError):
    pass


class InvalidRequest(DeploymentError):
    pass


class DeploymentState(StrEnum):
    REQUESTED = "requested"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    PRE_CHECKS = "pre_checks"
    BUILDING = "building"
    SWITCHING = "switching"
    VERIFYING = "verifying"
    WATCHING = "watching"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    CANCELLED = "cancelled"


class DeploymentKind(StrEnum):
    DEPLOY = "deploy"
    ROLLBACK = "rollback"
    DRILL = "drill"
    RESTORE = "restore"  # a database put back from a rollback point; `version` is the point


S = DeploymentState
TERMINAL = frozenset({S.SUCCEEDED, S.ROLLED_BACK, S.ROLLBACK_FAILED, S.CANCELLED})
# Nothing on the host has changed yet: these may be cancelled, and a failure here ends the
# deployment at once (there is nothing to roll back), releasing its lock.
BEFORE_SWITCH = frozenset({S.REQUESTED, S.AWAITING_APPROVAL, S.APPROVED, S.PRE_CHECKS, S.BUILDING})
WORKING = BEFORE_SWITCH | {S.SWITCHING, S.VERIFYING, S.WATCHING}

_COMMON: dict[S, frozenset[S]] = {
    S.REQUESTED: frozenset({S.AWAITING_APPROVAL, S.APPROVED}),
    S.AWAITING_APPROVAL: frozenset({S.APPROVED}),
    S.APPROVED: frozenset({S.PRE_CHECKS}),
    S.SWITCHING: frozenset({S.VERIFYING}),
    S.VERIFYING: frozenset({S.WATCHING, S.SUCCEEDED}),  # no watch window: done when verified
    S.WATCHING: frozenset({S.SUCCEEDED}),
    S.FAILED: frozenset({S.ROLLING_BACK}),
    S.ROLLING_BACK: frozenset({S.ROLLED_BACK, S.ROLLBACK_FAILED}),
}
_BY_KIND: dict[DeploymentKind, dict[S, frozenset[S]]] = {
    DeploymentKind.DEPLOY: {
        S.PRE_CHECKS: frozenset({S.BUILDING}),
        S.BUILDING: frozenset({S.SWITCHING}),
    },
    # A rollback builds nothing (its release exists); the immediate case skips pre-checks,
    # since the service is most likely unhealthy, which is why it is being rolled back.
    DeploymentKind.ROLLBACK: {
        S.APPROVED: frozenset({S.SWITCHING}),
        S.PRE_CHECKS: frozenset({S.SWITCHING}),
    },
    # A drill switches back, verifies, then switches forward once more and verifies again.
    DeploymentKind.DRILL: {
        S.PRE_CHECKS: frozenset({S.SWITCHING}),
        S.VERIFYING: frozenset({S.SWITCHING}),
    },
    # A restore (services/deploy/restores.py): its "switch" stops the service, puts the
    # database back and starts it; failing after that, rolling back restores the safety copy.
    DeploymentKind.RESTORE: {
        S.PRE_CHECKS: frozenset({S.SWITCHING}),
    },
}


def next_states(
    state: DeploymentState, kind: DeploymentKind = DeploymentKind.DEPLOY, dry_run: bool = False
) -> frozenset[DeploymentState]:
    """The states that may follow `state` for a deployment of this kind."""
    if state in TERMINAL:
        return frozenset()
    allowed = set(_COMMON.get(state, frozenset())) | _BY_KIND[kind].get(state, frozenset())
    if state in WORKING:
        allowed.add(S.FAILED)
    if state in BEFORE_SWITCH:
        allowed.add(S.CANCELLED)
    if dry_run:
        # A dry run changes nothing: it never builds or switches, and ends after its checks.
        allowed -= {S.BUILDING, S.SWITCHING, S.ROLLING_BACK}
        if state is S.PRE_CHECKS:
            allowed.add(S.SUCCEEDED)
    return frozenset(allowed)


def state_durations(
    events: Sequence[Event], until: datetime
) -> list[tuple[DeploymentState, timedelta]]:
    """How long each state lasted, from a deployment's events; the last one runs to `until`."""
    entered = [(S(e.data["to"]), e.at) for e in events if e.data.get("to")]
    ends = [at for _, at in entered[1:]] + [until]
    # Not strict: with no events at all, `until` pairs with nothing.
    return [(state, end - start) for (state, start), end in zip(entered, ends, strict=False)]


def ends_deployment(from_state: DeploymentState, to_state: DeploymentState) -> bool:
    """Whether this move finishes the deployment (and so releases its lock)."""
    return to_state in TERMINAL or (to_state is S.FAILED and from_state in BEFORE_SWITCH)


def check_transition(
    deployment_id: int,
    state: DeploymentState,
    to_state: DeploymentState,
    kind: DeploymentKind = DeploymentKind.DEPLOY,
    dry_run: bool = False,
) -> None:
    if to_state is S.CANCELLED and state not in BEFORE_SWITCH and state not in TERMINAL:
        raise IllegalTransition(
            f"too late to cancel #{deployment_id}: it has switched already ({state});"
            " abort it or roll back instead"
        )
    if to_state not in next_states(state, kind, dry_run):
        raise IllegalTransition(f"#{deployment_id} cannot go from {state} to {to_state}")


@dataclass(frozen=True)
class Deployment:
    id: int
    service: str
    environment: str
    version: str
    previous_version: str | None
    kind: DeploymentKind
    state: DeploymentState
    requested_by: str
    emergency: bool
    dry_run: bool
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    error: str
    progress_chat_id: int | None
    progress_message_id: int | None

    @property
    def finished(self) -> bool:
        """Ended for good: terminal, or failed before switching (nothing to roll back)."""
        return self.finished_at is not None

    def describe(self) -> str:
        return (
            f"#{self.id} {self.kind} of {self.service} {self.version} to {self.environment}"
            f" by {self.requested_by}, {self.state}"
        )


class Busy(DeploymentError):
    """Another deployment of the same service and environment holds the lock."""

    def __init__(self, holder: Deployment) -> None:
        super().__init__(
            f"{holder.service} in {holder.environment} is busy with #{holder.id}:"
            f" {holder.version} requested by {holder.requested_by}, now {holder.state}"
        )
        self.holder = holder


def from_row(row: Row) -> Deployment:
    finished_at = row["finished_at"]
    return Deployment(
        id=row["id"],
        service=row["service"],
        environment=row["environment"],
        version=row["version"],
        previous_version=row["previous_version"],
        kind=DeploymentKind(row["kind"]),
        state=DeploymentState(row["state"]),
        requested_by=row["requested_by"],
        emergency=bool(row["emergency"]),
        dry_run=bool(row["dry_run"]),
        created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
        finished_at=datetime.fromisoformat(finished_at) if finished_at else None,
        error=row["error"],
        progress_chat_id=row["progress_chat_id"],
        progress_message_id=row["progress_message_id"],
    )


def deployment_json(d: Deployment) -> dict[str, Any]:
    """A deployment as the API and the dashboard answer with it."""
    return {
        "id": d.id,
        "service": d.service,
        "environment": d.environment,
        "version": d.version,
        "previous_version": d.previous_version,
        "kind": d.kind.value,
        "state": d.state.value,
        "requested_by": d.requested_by,
        "emergency": d.emergency,
        "created_at": d.created_at.isoformat(),
        "finished_at": d.finished_at.isoformat() if d.finished_at else None,
        "error": d.error or None,
    }
