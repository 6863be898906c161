"""Who must sign off a deployment: checklists per role, sign-off per environment, timers.

    [approvals]
    reminder_s = 1800            # remind the roles that still owe a sign-off
    escalate_s = 3600            # then escalate: to escalation_chat, mentioning escalation_role
    expire_s = 14400             # then the request ends and the deployment is cancelled
    escalation_chat = -100...
    escalation_role = "eng_lead"
    one_role_per_person = true   # a person's approval counts for one role of a request
    rollback_roles = ["oncall"]  # the emergency policy for /rollback (see below)

    [approvals.checklists.qa]
    items = [{ key = "regression", text = "Regression suite green" },
             { key = "perf", text = "Load test", required = false }]

    [environments.production.approval]
    roles = { eng_lead = 1, qa = 1, sre = 2 }   # distinct people per role

The requester never approves their own deployment. A /rollback into an environment with a
policy goes ahead at once when its requester holds one of `rollback_roles` (recorded as an
emergency), and otherwise asks one person holding one of them.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from config.inventory import ChatId, Name
from config.strict import StrictModel

ItemText = Annotated[str, StringConstraints(min_length=1, max_length=120)]


class ChecklistItem(StrictModel):
    key: Name
    text: ItemText
    required: bool = True


class Checklist(StrictModel):
    items: list[ChecklistItem] = Field(default_factory=list, max_length=10)

    @model_validator(mode="after")
    def _unique_keys(self) -> Checklist:
        keys = [item.key for item in self.items]
        if len(set(keys)) != len(keys):
            raise ValueError("item keys must be unique within a checklist")
        return self


class ApprovalOptions(StrictModel):
    reminder_s: float = Field(default=1800, gt=0)
    escalate_s: float = Field(default=3600, gt=0)
    expire_s: float = Field(default=4 * 3600, gt=0)
    check_s: float = Field(default=15.0, ge=0.05, le=600)  # how often timers are looked at
    escalation_chat: ChatId | None = None
    escalation_role: Name | None = None
    one_role_per_person: bool = True
    rollback_roles: list[Name] = Field(default_factory=list)
    checklists: dict[Name, Checklist] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ordered(self) -> ApprovalOptions:
        if not self.reminder_s < self.escalate_s < self.expire_s:
            raise ValueError("reminder_s < escalate_s < expire_s is needed")
        return self


class EnvironmentApproval(StrictModel):
    """Per environment: role -> how many distinct people of that role must approve."""

    roles: dict[Name, Annotated[int, Field(ge=1, le=10)]] = Field(min_length=1, max_length=10)
