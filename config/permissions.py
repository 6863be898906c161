"""Which role each action needs: the role vocabulary in one place.

Commands, buttons, the HTTP API and the CLI name an `Action`; the ops file's `[permissions]`
table says which role of `[roles]` may do it, so a team whose roles are called otherwise
renames them here once (`deploy = "release-managers"`).
"""

from __future__ import annotations

from enum import StrEnum

from config.inventory import Name
from config.strict import StrictModel


class Action(StrEnum):
    DEPLOY = "deploy"  # /deploy, the API's deploys
    EMERGENCY = "emergency"  # /deploy --emergency: skips sign-off
    ROLLBACK = "rollback"  # /rollback, the Roll back buttons
    DRILL = "drill"
    CONTROL = "control"  # /cancel, Abort, /bad, /halt
    LOCK = "lock"  # /lock, /unlock
    RESTART = "restart"
    FLAGS = "flags"  # changing a flag
    SILENCE = "silence"  # /silence, /unsilence, the alerts' Silence buttons
    ACK = "ack"  # the alerts' Ack button
    ADMIN = "admin"  # /reload


class Permissions(StrictModel):
    deploy: Name = "sre"
    emergency: Name = "oncall"
    rollback: Name = "sre"
    drill: Name = "sre"
    control: Name = "sre"
    lock: Name = "sre"
    restart: Name = "sre"
    flags: Name = "sre"
    silence: Name = "sre"
    # None: anyone listed in [people] who holds any role (an on-call rota changes often).
    ack: Name | None = None
    admin: Name = "admin"

    def role_for(self, action: Action) -> str:
        """The role's name, as refusals show it ("any role" for an open Ack)."""
        role: str | None = getattr(self, action.value)
        return "any role" if role is None else role

    def allows(self, action: Action, roles: frozenset[str]) -> bool:
        role: str | None = getattr(self, action.value)
        return bool(roles) if role is None else role in roles
