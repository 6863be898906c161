"""The approval message: a section per role with its checklist, who ticked and approved what,
the evidence attached, and buttons for what is still open."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from config.opsfile import OpsConfig
from handlers.callbacks import CallbackData
from handlers.render import code, esc, join_lines, who
from services.approvals.model import (
    ApprovalRequest,
    Evidence,
    EvidenceChoice,
    RequestStatus,
    RoleSignoff,
)
from services.deploy.model import Deployment

NS_SIGNOFF, NS_EVIDENCE = "ap", "ev"
BUTTON_TEXT = 48  # Telegram shows about this much of a button's label on a phone


def _hm(at: datetime | None) -> str:
    return at.strftime("%H:%M") if at else ""


def _evidence(item: Evidence, ops: OpsConfig) -> str:
    if item.kind == "link":  # only http(s) links without quotes are stored as links
        shown = f'<a href="{escape(item.content, quote=True)}">link</a>'
    elif item.kind == "text":
        shown = f"“{esc(item.content[:80])}”"
    else:
        shown = f"{item.kind} {esc(item.content[:60])}".rstrip()
    return f"📎 {shown} ({who(ops, item.user_id)})"


def _role(role: RoleSignoff, ops: OpsConfig) -> list[str]:
    approvals = role.approvals
    head = f"<b>{esc(role.role)}</b> — {len(approvals)}/{role.needed}"
    if approvals:
        head += " ✅" if role.met else ""
        head += ": " + ", ".join(f"{who(ops, v.user_id)} {_hm(v.at)}" for v in approvals)
    lines = [head]
    for item in role.items:
        mark = "☑" if item.ticked_by else "☐"
        line = f"  {mark} {esc(item.text)}" + ("" if item.required else " (optional)")
        if item.ticked_by:
            line += f" — {who(ops, item.ticked_by)} {_hm(item.ticked_at)}"
        lines.append(line)
        lines += [f"      {_evidence(e, ops)}" for e in item.evidence]
    return lines


def _status(request: ApprovalRequest, ops: OpsConfig) -> str:
    if request.status is RequestStatus.OPEN:
        needs = "any one of them" if request.any_role else "every role"
        return (
            f"Needs {needs}; the requester cannot approve. Expires"
            f" {request.expires_at:%Y-%m-%d %H:%M} UTC.\nReply to this message with a link,"
            " text, photo or document to attach evidence to an item."
        )
    by = who(ops, request.ended_by)
    if request.status is RequestStatus.APPROVED:
        return "✅ Signed off: the deploy goes ahead now."
    if request.status is RequestStatus.REJECTED:
        return f"✖ Rejected by {by}: {esc(request.reason)}. The deploy was cancelled."
    if request.status is RequestStatus.EXPIRED:
        return "⌛ Expired before it was signed off. The deploy was cancelled."
    return f"✖ Ended by {by}: {esc(request.reason)}."


def render_request(request: ApprovalRequest, deployment: Deployment, ops: OpsConfig) -> str:
    kind = {"rollback": "Rollback", "restore": "Database restore"}.get(deployment.kind, "Deploy")
    lines = [
        f"📝 Sign-off #{request.id}: {kind} #{deployment.id} <b>{esc(deployment.service)}</b>"
        + (" from rollback point" * (deployment.kind == "restore"))
        + f" {code(deployment.version)}"
        + (" in " if deployment.kind == "restore" else " to ")
        + f"{esc(deployment.environment)},"
        f" asked by {who(ops, request.requester)}",
    ]
    for role in request.roles:
        lines += _role(role, ops)
    lines.append(_status(request, ops))
    return join_lines(lines)


def _label(text: str) -> str:
    return text if len(text) <= BUTTON_TEXT else text[: BUTTON_TEXT - 1] + "…"


def request_keyboard(request: ApprovalRequest) -> InlineKeyboardMarkup | None:
    if not request.is_open:
        return None
    rows: list[list[InlineKeyboardButton]] = []
    for role in request.roles:
        if role.met:
            continue
        if not role.approvals:  # once a role approved, its list is closed
            for item in role.items:
                action, mark = ("untick", "☑") if item.ticked_by else ("tick", "☐")
                data = CallbackData(NS_SIGNOFF, action, item.id).encode()
                label = _label(f"{mark} {role.role}: {item.text}")
                rows.append([InlineKeyboardButton(label, callback_data=data)])
        approve = CallbackData(NS_SIGNOFF, "ok", role.id).encode()
        reject = CallbackData(NS_SIGNOFF, "no", role.id).encode()
        rows.append(
            [
                InlineKeyboardButton(_label(f"✅ Approve as {role.role}"), callback_data=approve),
                InlineKeyboardButton(_label(f"✖ Reject as {role.role}"), callback_data=reject),
            ]
        )
    return InlineKeyboardMarkup(rows)


def evidence_keyboard(choices: Sequence[EvidenceChoice]) -> InlineKeyboardMarkup:
    rows = [
        [
            InlineKeyboardButton(
                _label(f"📎 {choice.role}: {choice.item_text}"),
                callback_data=CallbackData(NS_EVIDENCE, "pick", choice.id).encode(),
            )
        ]
        for choice in choices
    ]
    return InlineKeyboardMarkup(rows)


def render_waiting(request: ApprovalRequest, ops: OpsConfig) -> str:
    """One line per role still owed: who may give it and what is missing."""
    lines = []
    for role in request.waiting_on:
        missing = len(role.approvals), role.needed
        unticked = ", ".join(esc(i.text) for i in role.unticked)
        line = f"• <b>{esc(role.role)}</b> {missing[0]}/{missing[1]}"
        lines.append(line + (f" — to tick: {unticked}" if unticked else ""))
    return join_lines(lines)
