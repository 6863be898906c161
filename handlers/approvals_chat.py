"""Sign-off in chat: the approval message and its buttons, replies (evidence, reasons for a
rejection), /approvals, and the reminder / escalation / expiry timer."""

from __future__ import annotations

import logging
import re

from telegram import Bot, ForceReply, Message, ReplyParameters, Update
from telegram.error import TelegramError

from handlers.approvals_render import (
    NS_EVIDENCE,
    NS_SIGNOFF,
    evidence_keyboard,
    render_request,
    render_waiting,
    request_keyboard,
)
from handlers.buttons import ButtonRoute
from handlers.callbacks import CallbackData
from handlers.commands import Command
from handlers.context import OpsContext
from handlers.dashboard_chat import with_dashboard
from handlers.edits import show
from handlers.render import code, esc, join_lines, mention, who
from services.approvals.model import (
    ApprovalError,
    ApprovalRequest,
    ButtonNoLongerValid,
    Policy,
    RequestStatus,
    TimerAction,
)
from services.container import Services
from services.deploy.model import Deployment

log = logging.getLogger(__name__)
LINK = re.compile(r"https?://[^\s\"'<>]{1,1000}")


async def open_signoff(
    bot: Bot,
    services: Services,
    deployment: Deployment,
    policy: Policy,
    origin: tuple[int, int] | None,
) -> ApprovalRequest:
    """The request and its approval message (approvals chat, else where it was asked, else
    the deploys chat); also for requests that came through the HTTP API."""
    request = await services.approvals.open(deployment, policy, origin=origin)
    chat_id = services.ops.chats.approvals or (origin[0] if origin else services.ops.chats.deploys)
    if chat_id is None:
        return request
    sent = await bot.send_message(
        chat_id,
        render_request(request, deployment, services.ops),
        reply_markup=with_dashboard(request_keyboard(request), services.ops, chat_id),
    )
    await services.approvals.set_message(request.id, sent.chat_id, sent.message_id)
    return await services.approvals.get(request.id)


async def _refresh(context: OpsContext, request: ApprovalRequest) -> None:
    await refresh_signoff(context.bot, context.services, request)


async def refresh_signoff(bot: Bot, services: Services, request: ApprovalRequest) -> None:
    """One edit of the approval message per change."""
    if request.chat_id is None or request.message_id is None:
        return
    deployment = await services.deployments.get(request.deployment_id)
    text = render_request(request, deployment, services.ops)
    markup = with_dashboard(request_keyboard(request), services.ops, request.chat_id)
    await show(bot, request.chat_id, request.message_id, text, markup)


async def signoff_pressed(update: Update, context: OpsContext) -> None:
    """A tick, Approve or Reject on an approval message; every press re-checked in the service."""
    query = update.callback_query
    if query is None:
        return
    approvals, user_id = context.services.approvals, str(query.from_user.id)
    data = CallbackData.decode(query.data)
    where = _where(query.message)
    try:
        if data.action in ("tick", "untick"):
            ticked = data.action == "tick"
            request, changed = await approvals.tick(data.row_id, user_id, ticked, where)
            answer = "Ticked." if ticked else "Unticked."
        elif data.action == "ok":
            request, changed = await approvals.approve(data.row_id, user_id, where)
            answer = "Approved." if request.is_open else "Approved: signed off."
        elif data.action == "no":
            role = await approvals.start_rejection(data.row_id, user_id, where)
            await _ask_reason(query.message, query.from_user.id, role.id, role.role, context)
            await query.answer("Reply to my message with the reason.")
            return
        else:
            raise ButtonNoLongerValid()
    except ApprovalError as exc:
        await query.answer(str(exc), show_alert=True)
        return
    await query.answer(answer if changed else "Nothing to change.")
    if changed:  # one edit per press that changed something; none for a replay
        await signoff_changed(context.bot, context.services, request)


async def signoff_changed(bot: Bot, services: Services, request: ApprovalRequest) -> None:
    """After a tick or an approval, in the chat or on the dashboard: a request now signed
    off starts its deploy (first: the deploy need not wait for an edit), then one edit."""
    if request.status is RequestStatus.APPROVED:
        await services.front_door.signed_off(request)
    await refresh_signoff(bot, services, request)


async def _ask_reason(
    message: object, user_id: int, role_id: int, role: str, context: OpsContext
) -> None:
    if not isinstance(message, Message):
        raise ButtonNoLongerValid()
    ops = context.services.ops
    prompt = await message.reply_text(
        f"✖ {mention(ops, user_id)}, reply to this message with why you reject as"
        f" <b>{esc(role)}</b>. Nothing is rejected until you do.",
        reply_markup=ForceReply(selective=True, input_field_placeholder="the reason"),
    )
    await context.services.approvals.add_rejection_prompt(
        role_id, str(user_id), prompt.chat_id, prompt.message_id
    )


async def evidence_picked(update: Update, context: OpsContext) -> None:
    """Which checklist item a piece of evidence supports."""
    query = update.callback_query
    if query is None:
        return
    choice_id = CallbackData.decode(query.data).row_id
    try:
        request, changed = await context.services.approvals.attach_evidence(
            choice_id, str(query.from_user.id), _where(query.message)
        )
    except ApprovalError as exc:
        await query.answer(str(exc), show_alert=True)
        return
    if not changed:
        await query.answer("Attached already.")
        return
    await query.answer("Attached.")
    if isinstance(query.message, Message):  # the picker, never the approval message
        await query.message.edit_text("📎 Evidence attached.", reply_markup=None)
    await _refresh(context, request)


def _where(message: object) -> tuple[int, int] | None:
    """The (chat, message) a button was pressed on; an inaccessible one matches nothing."""
    if isinstance(message, Message):
        return message.chat_id, message.message_id
    return (0, 0)


async def reply_received(update: Update, context: OpsContext) -> None:
    """A reply to a rejection prompt (the reason) or to an approval message (evidence)."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or message.reply_to_message is None:
        return
    approvals, replied = context.services.approvals, message.reply_to_message
    text = message.text or message.caption or ""
    try:
        rejected = await approvals.reject_by_reply(
            message.chat_id, replied.message_id, str(user.id), text
        )
        if rejected is not None:
            await _refresh(context, rejected)
            await message.reply_text(f"✖ Rejected; deploy #{rejected.deployment_id} is cancelled.")
            await _tell_origin(
                context,
                rejected,
                f"✖ Rejected by {who(context.services.ops, str(user.id))}: {esc(rejected.reason)}",
            )
            return
        request = await approvals.by_message(message.chat_id, replied.message_id)
        if request is None:
            return  # a reply to something else: not ours
        kind, content, file_id = _evidence_of(message)
        if kind is None:
            await message.reply_text("Evidence is a link, text, a photo or a document.")
            return
        evidence_id, choices = await approvals.add_evidence(
            request.id, str(user.id), kind, content, file_id
        )
    except ButtonNoLongerValid:
        await message.reply_text("⛔ This sign-off has ended; nothing was changed.")
        return
    except ApprovalError as exc:
        await message.reply_text(f"⛔ {esc(exc)}")
        return
    await message.reply_text(
        "📎 Which item does this support?", reply_markup=evidence_keyboard(choices)
    )
    log.info("evidence %s stored for request %s", evidence_id, request.id)


def _evidence_of(message: Message) -> tuple[str | None, str, str | None]:
    if message.photo:
        return "photo", message.caption or "", message.photo[-1].file_id
    if message.document:
        name = message.document.file_name or "document"
        return "document", f"{name} {message.caption or ''}".strip(), message.document.file_id
    text = (message.text or "").strip()
    if not text:
        return None, "", None
    return ("link" if LINK.fullmatch(text) else "text"), text, None


async def _tell_origin(context: OpsContext, request: ApprovalRequest, text: str) -> None:
    chat_id = request.origin_chat_id
    if chat_id is None or chat_id == request.chat_id:
        return
    reply = (
        ReplyParameters(request.origin_message_id, allow_sending_without_reply=True)
        if request.origin_message_id
        else None
    )
    await context.bot.send_message(chat_id, text, reply_parameters=reply)


async def approvals_command(update: Update, context: OpsContext) -> None:
    """Open sign-off requests and what each still needs."""
    message = update.effective_message
    if message is None:
        return
    services = context.services
    requests = await services.approvals.open_requests()
    if not requests:
        await message.reply_text("No sign-off is waiting.")
        return
    lines = ["<b>Waiting for sign-off</b>"]
    for request in requests:
        deployment = await services.deployments.get(request.deployment_id)
        lines.append(
            f"#{deployment.id} <b>{esc(deployment.service)}</b> {code(deployment.version)} to"
            f" {esc(deployment.environment)}, asked by {who(services.ops, request.requester)},"
            f" expires {request.expires_at:%H:%M} UTC"
        )
        lines.append(render_waiting(request, services.ops))
    await message.reply_text(join_lines(lines))


async def approval_timers(context: OpsContext) -> None:
    """The repeating job: reminders, escalations and expiries that are due."""
    for action in await context.services.approvals.due():
        try:
            await _timer(context, action)
        except TelegramError:  # one failed message must not hold back the others
            log.exception("approval timer %s of request %s", action.kind, action.request.id)


async def _timer(context: OpsContext, action: TimerAction) -> None:
    services, request = context.services, action.request
    ops = services.ops
    deployment = await services.deployments.get(request.deployment_id)
    what = f"#{deployment.id} <b>{esc(deployment.service)}</b> {code(deployment.version)}"
    reply = (
        ReplyParameters(request.message_id, allow_sending_without_reply=True)
        if request.message_id
        else None
    )
    if action.kind == "expire":
        await _refresh(context, request)
        await _tell_origin(
            context, request, f"⌛ Sign-off of {what} expired: the deploy was cancelled."
        )
        if request.chat_id is not None:
            await context.bot.send_message(
                request.chat_id,
                f"⌛ Sign-off of {what} expired; the deploy was cancelled.",
                reply_parameters=reply,
            )
        return
    owed = [r for r in request.waiting_on]
    people = sorted(
        {uid for r in owed for uid in ops.roles.get(r.role, []) if str(uid) != request.requester}
    )
    if action.kind == "remind":
        text = f"⏰ Reminder: {what} still needs sign-off.\n{render_waiting(request, ops)}"
        text += "\n" + " ".join(mention(ops, uid) for uid in people)
        if request.chat_id is not None:
            await context.bot.send_message(request.chat_id, text, reply_parameters=reply)
        return
    escalation = ops.approvals
    chat_id = escalation.escalation_chat or request.chat_id
    if chat_id is None:
        return
    to = ops.roles.get(escalation.escalation_role or "", [])
    text = (
        f"📣 Escalation: {what} has waited since {request.created_at:%H:%M} UTC for sign-off"
        f" and expires at {request.expires_at:%H:%M} UTC.\n{render_waiting(request, ops)}"
    )
    if to:
        text += "\n" + " ".join(mention(ops, uid) for uid in to)
    same_chat = chat_id == request.chat_id
    await context.bot.send_message(chat_id, text, reply_parameters=reply if same_chat else None)


COMMANDS = [Command("approvals", "sign-offs waiting, and what each still needs", approvals_command)]
BUTTONS = [ButtonRoute(NS_SIGNOFF, signoff_pressed), ButtonRoute(NS_EVIDENCE, evidence_picked)]
