"""Sign-off requests as data: what a policy asks for, and where a request stands.

ApprovalError
├── ButtonNoLongerValid   unknown, stale or forged: "this button is no longer valid"
└── ApprovalRefused       a real button, but not for this person now (says why)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from config.approvals import Checklist, ChecklistItem
from config.opsfile import OpsConfig
from services.errors import OpsgateError


class ApprovalError(OpsgateError):
    """`str()` is the answer the presser sees."""


class ButtonNoLongerValid(ApprovalError):
    def __init__(self) -> None:
        super().__init__("This button is no longer valid.")


class ApprovalRefused(ApprovalError):
    pass


class RoleMissing(ApprovalRefused):
    """The person does not hold the role this part of the sign-off needs."""


class RequestStatus(StrEnum):
    OPEN = "open"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class PolicyRole:
    role: str
    needed: int
    items: tuple[ChecklistItem, ...]


@dataclass(frozen=True)
class Policy:
    roles: tuple[PolicyRole, ...]
    any_role: bool = False  # met when any one role is (the rollback emergency policy)


def deploy_policy(ops: OpsConfig, environment: str) -> Policy | None:
    """What a deploy into `environment` needs, or None when it needs no sign-off."""
    env = ops.environments.get(environment)
    if env is None:
        return None
    if env.approval is not None:
        roles = dict(env.approval.roles)
    elif env.requires_approval:
        roles = {"admin": 1}  # the plain policy: one admin, no checklist
    else:
        return None
    checklists = ops.approvals.checklists
    return Policy(
        tuple(
            PolicyRole(role, needed, tuple(checklists.get(role, Checklist()).items))
            for role, needed in roles.items()
        )
    )


def rollback_policy(ops: OpsConfig, environment: str) -> Policy | None:
    """A rollback where deploys need sign-off: one person of any rollback role, no checklist."""
    if deploy_policy(ops, environment) is None or not ops.approvals.rollback_roles:
        return None
    roles = tuple(PolicyRole(role, 1, ()) for role in ops.approvals.rollback_roles)
    return Policy(roles, any_role=True)


def rollback_rule(ops: OpsConfig, environment: str, requester: int) -> tuple[Policy | None, bool]:
    """(the sign-off a /rollback needs, whether it goes ahead at once as an emergency): at
    once when no policy applies, or when the requester holds a rollback role themself."""
    policy = rollback_policy(ops, environment)
    emergency = policy is not None and any(r.role in ops.roles_of(requester) for r in policy.roles)
    return policy, emergency


@dataclass(frozen=True)
class Vote:
    user_id: str
    decision: str  # approve | reject
    reason: str
    at: datetime


@dataclass(frozen=True)
class Evidence:
    id: int
    item_id: int | None
    user_id: str
    kind: str  # link | text | photo | document
    content: str  # the link or text, or a photo's/document's caption or file name
    file_id: str | None
    at: datetime


@dataclass(frozen=True)
class Item:
    id: int
    key: str
    text: str
    required: bool
    ticked_by: str | None
    ticked_at: datetime | None
    evidence: tuple[Evidence, ...]


@dataclass(frozen=True)
class RoleSignoff:
    id: int
    role: str
    needed: int
    items: tuple[Item, ...]
    votes: tuple[Vote, ...]

    @property
    def approvals(self) -> tuple[Vote, ...]:
        return tuple(v for v in self.votes if v.decision == "approve")

    @property
    def met(self) -> bool:
        return len(self.approvals) >= self.needed

    @property
    def unticked(self) -> tuple[Item, ...]:
        """Required items nobody ticked yet: approving waits for these."""
        return tuple(i for i in self.items if i.required and i.ticked_by is None)


@dataclass(frozen=True)
class ApprovalRequest:
    id: int
    deployment_id: int
    requester: str
    status: RequestStatus
    any_role: bool
    origin_chat_id: int | None
    origin_message_id: int | None
    chat_id: int | None
    message_id: int | None
    created_at: datetime
    remind_at: datetime
    escalate_at: datetime
    expires_at: datetime
    reminded: bool
    escalated: bool
    ended_at: datetime | None
    ended_by: str | None
    reason: str
    roles: tuple[RoleSignoff, ...]

    @property
    def is_open(self) -> bool:
        return self.status is RequestStatus.OPEN

    @property
    def met(self) -> bool:
        done = [role.met for role in self.roles]
        return any(done) if self.any_role else all(done)

    @property
    def waiting_on(self) -> tuple[RoleSignoff, ...]:
        return () if self.met else tuple(r for r in self.roles if not r.met)

    @property
    def evidence(self) -> tuple[Evidence, ...]:
        return tuple(e for role in self.roles for item in role.items for e in item.evidence)


@dataclass(frozen=True)
class EvidenceChoice:
    id: int
    role: str
    item_text: str


@dataclass(frozen=True)
class TimerAction:
    kind: str  # remind | escalate | expire
    request: ApprovalRequest
