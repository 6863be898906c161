"""Sign-off of deployments: requests, checklist ticks, approvals, rejections, evidence, timers.

Every press is checked again inside one transaction against the rows and the current ops
file: the request is still open, the row belongs to it, the presser holds the role, the
requester never approves, and a press that was already applied changes nothing (a tick
button says "tick", not "toggle", so a replayed press is harmless). Every change is an
`approval.*` audit event carrying the deployment's id, so /audit tells the whole story.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from config.opsfile import OpsConfig
from services.approvals.model import (
    ApprovalRefused,
    ApprovalRequest,
    ButtonNoLongerValid,
    EvidenceChoice,
    Policy,
    RequestStatus,
    RoleMissing,
    RoleSignoff,
    TimerAction,
)
from services.approvals.rows import read_request, request_id_of_role
from services.deploy.deployments import DeploymentError, Deployments
from services.deploy.model import Deployment, DeploymentState
from services.records.audit import AuditLog, utc_now
from services.records.storage import Connection, Storage

REMIND = "UPDATE approval_requests SET reminded = 1 WHERE id = ?"
ESCALATE = "UPDATE approval_requests SET reminded = 1, escalated = 1 WHERE id = ?"
log = logging.getLogger(__name__)
MAX_EVIDENCE = 1000  # characters of a link or text kept as evidence
MAX_REASON = 500
Where = tuple[int, int] | None  # (chat id, message id) a button was pressed on


# Checklist ticks and evidence are a signer's word for a role: never the requester's.
OWN_REQUEST = "You asked for this deploy: its checklist and evidence come from someone else."


class Approvals:
    def __init__(
        self,
        storage: Storage,
        audit: AuditLog,
        deployments: Deployments,
        ops: Callable[[], OpsConfig],
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._storage = storage
        self._audit = audit
        self._deployments = deployments
        self._ops = ops
        self._clock = clock

    # -- reading ---------------------------------------------------------------------------

    async def get(self, request_id: int) -> ApprovalRequest:
        request = await read_request(self._storage.db, request_id)
        if request is None:
            raise ButtonNoLongerValid()
        return request

    async def for_deployment(self, deployment_id: int) -> ApprovalRequest | None:
        rows = list(
            await self._storage.db.execute_fetchall(
                "SELECT id FROM approval_requests WHERE deployment_id = ?", (deployment_id,)
            )
        )
        ids = [int(row[0]) for row in rows]
        return await read_request(self._storage.db, ids[0]) if ids else None

    async def by_message(self, chat_id: int, message_id: int) -> ApprovalRequest | None:
        rows = list(
            await self._storage.db.execute_fetchall(
                "SELECT id FROM approval_requests WHERE chat_id = ? AND message_id = ?",
                (chat_id, message_id),
            )
        )
        ids = [int(row[0]) for row in rows]
        return await read_request(self._storage.db, ids[0]) if ids else None

    async def open_requests(self) -> list[ApprovalRequest]:
        rows = list(
            await self._storage.db.execute_fetchall(
                "SELECT id FROM approval_requests WHERE ended_at IS NULL ORDER BY id"
            )
        )
        found = [await read_request(self._storage.db, int(row[0])) for row in rows]
        return [request for request in found if request is not None]

    # -- opening ---------------------------------------------------------------------------

    async def open(
        self,
        deployment: Deployment,
        policy: Policy,
        origin: tuple[int, int] | None = None,
    ) -> ApprovalRequest:
        """A request for `deployment` (then awaiting approval); `origin`: the chat message
        that asked for it, where the deploy card goes once signed off."""
        options = self._ops().approvals
        now = self._clock()
        at = [now + timedelta(seconds=s) for s in (options.reminder_s, options.escalate_s)]
        expires = now + timedelta(seconds=options.expire_s)
        async with self._storage.transaction() as db:
            cursor = await db.execute(
                "INSERT INTO approval_requests (deployment_id, requester, status, any_role,"
                " origin_chat_id, origin_message_id, created_at, remind_at, escalate_at,"
                " expires_at) VALUES (?, ?, 'open', ?, ?, ?, ?, ?, ?, ?)",
                (
                    deployment.id,
                    deployment.requested_by,
                    policy.any_role,
                    origin[0] if origin else None,
                    origin[1] if origin else None,
                    now.isoformat(),
                    at[0].isoformat(),
                    at[1].isoformat(),
                    expires.isoformat(),
                ),
            )
            request_id = cursor.lastrowid
            assert request_id is not None
            for position, role in enumerate(policy.roles):
                cursor = await db.execute(
                    "INSERT INTO approval_roles (request_id, role, needed, position)"
                    " VALUES (?, ?, ?, ?)",
                    (request_id, role.role, role.needed, position),
                )
                await db.executemany(
                    "INSERT INTO approval_items (role_id, item_key, text, required, position)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [
                        (cursor.lastrowid, item.key, item.text, item.required, index)
                        for index, item in enumerate(role.items)
                    ],
                )
            roles = {role.role: role.needed for role in policy.roles}
            data = {"deployment": deployment.id, "request": request_id, "roles": roles}
            data["any_role"] = policy.any_role
            await self._audit.record(
                "approval.requested", deployment.requested_by, deployment.service, data
            )
        await self._deployments.advance(
            deployment.id, DeploymentState.AWAITING_APPROVAL, "opsgate", "sign-off requested"
        )
        return await self.get(request_id)

    async def set_message(self, request_id: int, chat_id: int, message_id: int) -> None:
        """Where the approval message is: replies to it carry evidence."""
        await self._storage.write(
            "UPDATE approval_requests SET chat_id = ?, message_id = ? WHERE id = ?",
            (chat_id, message_id, request_id),
        )

    # -- presses ---------------------------------------------------------------------------

    async def tick(
        self, item_id: int, user_id: str, ticked: bool, where: Where = None
    ) -> tuple[ApprovalRequest, bool]:
        """Tick (or untick) one checklist item; pressing what is already so changes nothing.
        Returns the request and whether it changed."""
        async with self._storage.transaction() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT r.request_id, r.id, i.text, i.ticked_by FROM approval_items i"
                    " JOIN approval_roles r ON r.id = i.role_id WHERE i.id = ?",
                    (item_id,),
                )
            )
            if not rows:
                raise ButtonNoLongerValid()
            request_id, role_id, text, ticked_by = rows[0]
            request, role = await self._open_role(db, int(request_id), int(role_id), user_id, where)
            if user_id == request.requester:
                raise ApprovalRefused(OWN_REQUEST)
            if role.approvals:
                raise ApprovalRefused(f"{role.role} has approved already: its list is closed.")
            if (ticked_by is not None) == ticked:
                return request, False  # a replayed or double press
            now = self._clock().isoformat()
            await db.execute(
                "UPDATE approval_items SET ticked_by = ?, ticked_at = ? WHERE id = ?",
                (user_id if ticked else None, now if ticked else None, item_id),
            )
            kind = "approval.ticked" if ticked else "approval.unticked"
            data = {"role": role.role, "item": str(text), "item_id": item_id}
            await self._record(db, request, kind, user_id, data)
            return await self._read(db, request.id), True

    async def approve(
        self, role_id: int, user_id: str, where: Where = None
    ) -> tuple[ApprovalRequest, bool]:
        """One person's approval for one role; the request is approved once every role (or,
        for a rollback, any role) has enough. Then the deployment moves to approved.
        Returns the request and whether it changed."""
        async with self._storage.transaction() as db:
            request_id = await request_id_of_role(db, role_id)
            request, role = await self._open_role(db, request_id, role_id, user_id, where)
            if user_id == request.requester:
                raise ApprovalRefused("You asked for this deployment: someone else approves it.")
            if any(v.user_id == user_id for v in role.votes):
                return request, False  # approved already: a replayed press
            other = next(
                (r.role for r in request.roles if any(v.user_id == user_id for v in r.votes)),
                None,
            )
            if other is not None and self._ops().approvals.one_role_per_person:
                raise ApprovalRefused(f"You approved as {other} already: one role per person.")
            if role.met:
                raise ApprovalRefused(f"{role.role} has all the approvals it needs.")
            if role.unticked:
                missing = ", ".join(item.text for item in role.unticked)
                raise ApprovalRefused(f"Tick the required items first: {missing}"[:190])
            now = self._clock().isoformat()
            await db.execute(
                "INSERT INTO approval_votes (role_id, user_id, decision, at)"
                " VALUES (?, ?, 'approve', ?)",
                (role_id, user_id, now),
            )
            await self._record(db, request, "approval.approved", user_id, {"role": role.role})
            request = await self._read(db, request.id)
            if request.met:
                await self._end(db, request, RequestStatus.APPROVED, user_id, "policy met")
                request = await self._read(db, request.id)
        if request.status is RequestStatus.APPROVED:
            note = "signed off: " + ", ".join(
                f"{r.role} by {'+'.join(v.user_id for v in r.approvals)}"
                for r in request.roles
                if r.approvals
            )
            try:
                await self._deployments.advance(
                    request.deployment_id, DeploymentState.APPROVED, user_id, note
                )
            except DeploymentError as exc:  # cancelled between the sign-off and this line
                log.warning("signed-off #%s could not start: %s", request.deployment_id, exc)
        return request, True

    async def start_rejection(self, role_id: int, user_id: str, where: Where = None) -> RoleSignoff:
        """Reject pressed: checks only; the reason comes as a reply to the prompt."""
        async with self._storage.transaction() as db:
            request_id = await request_id_of_role(db, role_id)
            request, role = await self._open_role(db, request_id, role_id, user_id, where)
            if user_id == request.requester:
                raise ApprovalRefused("It is your own request: /cancel withdraws it.")
            return role

    async def add_rejection_prompt(
        self, role_id: int, user_id: str, chat_id: int, message_id: int
    ) -> None:
        await self._storage.write(
            "INSERT INTO rejection_prompts (role_id, user_id, chat_id, message_id, at)"
            " VALUES (?, ?, ?, ?, ?)",
            (role_id, user_id, chat_id, message_id, self._clock().isoformat()),
        )

    async def reject_by_reply(
        self, chat_id: int, prompt_message_id: int, user_id: str, reason: str
    ) -> ApprovalRequest | None:
        """A reply to a rejection prompt: None when the message is no such prompt (or not
        this person's). Ends the request and cancels the deployment."""
        reason = " ".join(reason.split())[:MAX_REASON]
        async with self._storage.transaction() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT p.role_id, p.user_id, r.request_id FROM rejection_prompts p"
                    " JOIN approval_roles r ON r.id = p.role_id"
                    " WHERE p.chat_id = ? AND p.message_id = ?",
                    (chat_id, prompt_message_id),
                )
            )
            if not rows or str(rows[0][1]) != user_id:
                return None
            if not reason:
                raise ApprovalRefused("A rejection needs a reason: reply with a few words.")
            role_id, _, request_id = rows[0]
            request = await self._reject(db, int(request_id), int(role_id), user_id, reason)
        await self._deployments.cancel(request.deployment_id, user_id, f"rejected: {reason}")
        return request

    async def reject(self, role_id: int, user_id: str, reason: str) -> ApprovalRequest:
        """A rejection with its reason given at once (the dashboard): ends the request and
        cancels the deployment, as a reply to the chat's prompt does."""
        reason = " ".join(reason.split())[:MAX_REASON]
        async with self._storage.transaction() as db:
            request_id = await request_id_of_role(db, role_id)
            request, _ = await self._open_role(db, request_id, role_id, user_id)
            if user_id == request.requester:
                raise ApprovalRefused("It is your own request: /cancel withdraws it.")
            if not reason:
                raise ApprovalRefused("A rejection needs a reason.")
            request = await self._reject(db, request_id, role_id, user_id, reason)
        await self._deployments.cancel(request.deployment_id, user_id, f"rejected: {reason}")
        return request

    async def _reject(
        self, db: Connection, request_id: int, role_id: int, user_id: str, reason: str
    ) -> ApprovalRequest:
        request, role = await self._open_role(db, request_id, role_id, user_id)
        now = self._clock().isoformat()
        await db.execute(
            "INSERT INTO approval_votes (role_id, user_id, decision, reason, at)"
            " VALUES (?, ?, 'reject', ?, ?) ON CONFLICT (role_id, user_id) DO UPDATE"
            " SET decision = 'reject', reason = excluded.reason, at = excluded.at",
            (role_id, user_id, reason, now),
        )
        data = {"role": role.role, "reason": reason}
        await self._record(db, request, "approval.rejected", user_id, data)
        await self._end(db, request, RequestStatus.REJECTED, user_id, reason)
        return await self._read(db, request.id)

    # -- evidence --------------------------------------------------------------------------

    async def add_evidence(
        self, request_id: int, user_id: str, kind: str, content: str, file_id: str | None
    ) -> tuple[int, list[EvidenceChoice]]:
        """Store what someone replied with; returns it and the items it may support (those
        of the roles they hold whose lists are still open)."""
        async with self._storage.transaction() as db:
            request = await self._read(db, request_id)
            if not request.is_open:
                raise ApprovalRefused("This sign-off has ended; evidence is closed.")
            held = self._roles_of(user_id)
            candidates = [
                (item.id, role.role, item.text)
                for role in request.roles
                if role.role in held and not role.approvals
                for item in role.items
            ]
            if not candidates:
                raise ApprovalRefused("None of your roles has an open checklist here.")
            if user_id == request.requester:
                raise ApprovalRefused(OWN_REQUEST)
            cursor = await db.execute(
                "INSERT INTO approval_evidence (request_id, user_id, kind, content, file_id, at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    request_id,
                    user_id,
                    kind,
                    content[:MAX_EVIDENCE],
                    file_id,
                    self._clock().isoformat(),
                ),
            )
            evidence_id = cursor.lastrowid
            assert evidence_id is not None
            choices = []
            for item_id, role_name, text in candidates:
                cursor = await db.execute(
                    "INSERT INTO evidence_choices (evidence_id, item_id) VALUES (?, ?)",
                    (evidence_id, item_id),
                )
                assert cursor.lastrowid is not None
                choices.append(EvidenceChoice(cursor.lastrowid, role_name, text))
            return evidence_id, choices

    async def attach_evidence(
        self, choice_id: int, user_id: str, where: Where = None
    ) -> tuple[ApprovalRequest, bool]:
        """File evidence under the item picked; `where`: the message pressed (the picker,
        never the approval message). Returns the request and whether it changed."""
        async with self._storage.transaction() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT e.id, e.request_id, e.user_id, e.item_id, c.item_id, i.text, r.role"
                    " FROM evidence_choices c JOIN approval_evidence e ON e.id = c.evidence_id"
                    " JOIN approval_items i ON i.id = c.item_id"
                    " JOIN approval_roles r ON r.id = i.role_id WHERE c.id = ?",
                    (choice_id,),
                )
            )
            if not rows or str(rows[0][2]) != user_id:
                raise ButtonNoLongerValid()
            evidence_id, request_id, _, attached, item_id, text, role = rows[0]
            request = await self._read(db, int(request_id))
            if where is not None and where == (request.chat_id, request.message_id):
                raise ButtonNoLongerValid()
            if attached is not None or not request.is_open:
                if attached == item_id:
                    return request, False  # a replayed press
                raise ButtonNoLongerValid()
            signoff = next(r for r in request.roles if r.role == str(role))
            if user_id == request.requester:
                raise ApprovalRefused(OWN_REQUEST)
            if signoff.role not in self._roles_of(user_id):
                raise ApprovalRefused(f"This needs the role {signoff.role}.")
            if signoff.approvals:
                raise ApprovalRefused(f"{signoff.role} has approved already: its list is closed.")
            await db.execute(
                "UPDATE approval_evidence SET item_id = ? WHERE id = ?", (item_id, evidence_id)
            )
            data = {"role": str(role), "item": str(text), "evidence": int(evidence_id)}
            await self._record(db, request, "approval.evidence", user_id, data)
            return await self._read(db, request.id), True

    # -- timers ----------------------------------------------------------------------------

    async def due(self) -> list[TimerAction]:
        """Reminders, escalations and expiries whose time has come, each taken once."""
        now = self._clock()
        actions: list[TimerAction] = []
        for request in await self.open_requests():
            kind = None
            if request.expires_at <= now:
                kind = "expire"
            elif request.escalate_at <= now and not request.escalated:
                kind = "escalate"
            elif request.remind_at <= now and not request.reminded:
                kind = "remind"
            if kind is not None and (taken := await self._take(request, kind)) is not None:
                actions.append(TimerAction(kind, taken))
        return actions

    async def _take(self, request: ApprovalRequest, kind: str) -> ApprovalRequest | None:
        async with self._storage.transaction() as db:
            current = await self._read(db, request.id)
            if not current.is_open:
                return None  # signed off or ended since it was read
            if await _deployment_ended(db, current):  # /cancel got there first
                await self._end(db, current, RequestStatus.CANCELLED, "opsgate", "deploy ended")
                return None
            if kind == "expire":
                await self._end(db, current, RequestStatus.EXPIRED, "opsgate", "expired")
            else:
                await db.execute(REMIND if kind == "remind" else ESCALATE, (current.id,))
                await self._record(db, current, f"approval.{kind}", "opsgate", {})
            taken = await self._read(db, current.id)
        if kind == "expire":
            await self._deployments.cancel(taken.deployment_id, "opsgate", "sign-off expired")
        return taken

    async def cancel_for(self, deployment_id: int, actor: str, reason: str) -> None:
        """The deployment ended another way (/cancel, /halt): its request ends too."""
        request = await self.for_deployment(deployment_id)
        if request is None or not request.is_open:
            return
        async with self._storage.transaction() as db:
            current = await self._read(db, request.id)
            if current.is_open:
                await self._end(db, current, RequestStatus.CANCELLED, actor, reason)

    # -- helpers ---------------------------------------------------------------------------

    def _roles_of(self, user_id: str) -> set[str]:
        if not user_id.isdigit():
            return set()
        return {role for role, members in self._ops().roles.items() if int(user_id) in members}

    async def _read(self, db: Connection, request_id: int) -> ApprovalRequest:
        request = await read_request(db, request_id)
        if request is None:
            raise ButtonNoLongerValid()
        return request

    async def _open_role(
        self,
        db: Connection,
        request_id: int,
        role_id: int,
        user_id: str,
        where: Where = None,
    ) -> tuple[ApprovalRequest, RoleSignoff]:
        request = await self._read(db, request_id)
        role = next((r for r in request.roles if r.id == role_id), None)
        if role is None or not request.is_open or await _deployment_ended(db, request):
            raise ButtonNoLongerValid()
        if where is not None and where != (request.chat_id, request.message_id):
            raise ButtonNoLongerValid()  # a row of another request's message
        if role.role not in self._roles_of(user_id):
            raise RoleMissing(f"This needs the role {role.role}.")
        return request, role

    async def _end(
        self,
        db: Connection,
        request: ApprovalRequest,
        status: RequestStatus,
        actor: str,
        reason: str,
    ) -> None:
        await db.execute(
            "UPDATE approval_requests SET status = ?, ended_at = ?, ended_by = ?, reason = ?"
            " WHERE id = ?",
            (status.value, self._clock().isoformat(), actor, reason, request.id),
        )
        data = {"status": status.value, "reason": reason}
        await self._record(db, request, "approval.ended", actor, data)

    async def _record(
        self,
        db: Connection,
        request: ApprovalRequest,
        kind: str,
        actor: str,
        data: Mapping[str, object],
    ) -> None:
        rows = list(
            await db.execute_fetchall(
                "SELECT service FROM deployments WHERE id = ?", (request.deployment_id,)
            )
        )
        service = str(rows[0][0]) if rows else ""
        body = {"deployment": request.deployment_id, "request": request.id, **data}
        await self._audit.record(kind, actor, service, body)


async def _deployment_ended(db: Connection, request: ApprovalRequest) -> bool:
    rows = list(
        await db.execute_fetchall(
            "SELECT finished_at FROM deployments WHERE id = ?", (request.deployment_id,)
        )
    )
    return not rows or rows[0][0] is not None
