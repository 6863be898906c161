"""Alerts in chat: the outbox's Telegram side, Ack / Silence / Roll back / Set to 0% buttons,
/alerts, /silences, /silence and /unsilence, and the job that works the outbox."""

from __future__ import annotations

import contextlib
import logging
import re
from datetime import timedelta

from telegram import Bot, CallbackQuery, Message, Update

from config.permissions import Action
from handlers.alerts_render import (
    NS_ALERT,
    NS_PAGE,
    framed,
    group_keyboard,
    page_keyboard,
    render_entry,
    render_group_message,
    render_page,
    with_links,
)
from handlers.buttons import NO_LONGER_VALID, ButtonRoute
from handlers.callbacks import CallbackData
from handlers.commands import Command
from handlers.context import OpsContext
from handlers.edits import show
from handlers.render import esc, join_lines
from handlers.replies import request_rollback
from services.alerts.listing import apply as apply_filter
from services.alerts.listing import page_of, parse_filter
from services.alerts.messages import service_of
from services.alerts.model import AlertError, AlertGroup, Matcher, MatcherError, parse_matchers
from services.alerts.silences import AM_ID, SILENCE_DURATION, SilenceBook, silence_duration
from services.container import Services
from services.flags.plans import PlanError
from services.records.audit import Event

log = logging.getLogger(__name__)
# What each alert button does, for the role gate (named in the ops file's [permissions]).
BUTTON_ACTIONS = {
    "ack": Action.ACK,
    "s1": Action.SILENCE,
    "s24": Action.SILENCE,
    "rb": Action.ROLLBACK,
    "f0": Action.FLAGS,
}
MAX_COMMENT = 200
PAGE_SIZE = 10  # groups per /alerts page
PAGE_TTL = timedelta(hours=1)  # a page button older than this is no longer valid


def _book(context: OpsContext) -> SilenceBook:
    return context.services.silences


async def monitor_tick(context: OpsContext) -> None:
    """The repeating job: one sampling cycle of opsgate's own monitor rules."""
    await _book(context).sync()  # Alertmanager's silences apply to opsgate's alerts too
    reported = await context.services.monitor.cycle()
    for alert in reported:
        log.info("monitor: %s %s", alert.labels.get("alertname"), alert.status)


async def alert_pressed(update: Update, context: OpsContext) -> None:
    """Ack, Silence 1h/24h, Roll back, Set to 0%: each checked against its row now."""
    query = update.callback_query
    if query is None:
        return
    data = CallbackData.decode(query.data)
    services, user = context.services, query.from_user
    needs = BUTTON_ACTIONS.get(data.action)
    if needs is not None and not services.ops.may(user.id, needs):
        # The same gate as the commands: Ack for people with a role, Silence as /silence.
        role = services.ops.permissions.role_for(needs)
        await services.audit.record(
            "button.refused",
            actor=str(user.id),
            subject=NS_ALERT,
            data={"action": data.action, "row": data.row_id, "role_needed": role},
        )
        need = "a role in the ops file" if role == "any role" else f"the role {role}"
        await query.answer(f"This needs {need}.", show_alert=True)
        return
    if data.action == "rb":
        deployment = await services.recent_changes.deployment(data.row_id)
        if deployment is None or not isinstance(query.message, Message):
            await query.answer(NO_LONGER_VALID, show_alert=True)
            return
        await query.answer(f"Rolling back to {deployment.previous_version}…")
        await request_rollback(
            query.message, deployment.service, deployment.previous_version,
            str(user.id), "button", context,
        )  # fmt: skip
        return
    group = await services.alerts.group(data.row_id)
    if group is None or not group.firing or data.action not in ("ack", "s1", "s24", "f0"):
        await query.answer(NO_LONGER_VALID, show_alert=True)
        return
    if data.action == "ack":
        group = await services.alerts.ack(group.id, str(user.id)) or group
        await query.answer("You are on it: escalation stops.")
    elif data.action == "f0":
        await _flag_to_zero(query, group, str(user.id), context)
        return
    else:
        hours = 1 if data.action == "s1" else 24
        matchers = _matchers_for(group)
        try:
            made = await _book(context).create(
                matchers, timedelta(hours=hours), str(user.id), f"{hours}h from the alert button"
            )
        except AlertError as exc:
            await query.answer(f"Not silenced: {exc}"[:190], show_alert=True)
            return
        if made.unreachable:
            await query.answer(
                f"Alertmanager unreachable: silenced for {hours} h in opsgate only.",
                show_alert=True,
            )
        else:
            await query.answer(f"Silenced for {hours} h.")
    await _redraw(context, group.id)


def _matchers_for(group: AlertGroup) -> tuple[Matcher, ...]:
    labels = dict(group.labels) or {"alertname": group.alerts[0].name}
    return tuple(Matcher(k, v) for k, v in sorted(labels.items()))


async def _flag_to_zero(
    query: CallbackQuery, group: AlertGroup, actor: str, context: OpsContext
) -> None:
    services = context.services
    service = service_of(group)
    flag = await services.recent_changes.flag(service) if service else None
    if flag is None:
        await query.answer(NO_LONGER_VALID, show_alert=True)
        return
    with contextlib.suppress(PlanError):  # no plan running for it
        await services.plans.pause(flag.key, actor)
    await services.flags.set_rollout(flag.key, 0, actor, note="from an alert")
    await query.answer(f"{flag.key} is at 0% now.")
    await _redraw(context, group.id)


async def _redraw(context: OpsContext, group_id: int) -> None:
    await redraw_group(context.bot, context.services, group_id)


async def redraw_group(bot: Bot, services: Services, group_id: int) -> None:
    """The group's message drawn again from its rows (after an Ack, here or on the dashboard)."""
    group = await services.alerts.group(group_id)
    if group is None or group.message_id is None:
        return
    deploy, flag = await services.alert_messages.changes_for(group)
    silences = await services.alerts.silences()
    # The same form the message was sent in: a long group keeps its "attached list" line,
    # its template line, description and link buttons.
    opening, details, links = services.alert_messages.extras_for(group)
    before, after = framed(opening, details)
    rendered = render_group_message(
        group,
        services.ops,
        silences,
        deploy=deploy,
        flag=flag,
        reserve=sum(len(x) + 1 for x in [*before, *after]),
    )
    text = "\n".join([*before, rendered.text, *after])
    markup = with_links(group_keyboard(group, deploy, flag), links)
    await show(bot, group.chat_id, group.message_id, text, markup)


async def alerts_command(update: Update, context: OpsContext) -> None:
    """/alerts [service|severity|matchers]: what is firing now, by group, a page at a time."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    services, text = context.services, " ".join(context.args or [])
    try:
        where = parse_filter(text, list(services.ops.services))
    except MatcherError as exc:
        await message.reply_text(f"⛔ {esc(exc)}. Try /alerts web, /alerts critical.")
        return
    groups = apply_filter(await services.alerts.firing_groups(), where)
    page = page_of(groups, 1, PAGE_SIZE)
    assert page is not None  # page 1 always exists
    listed = None
    if page.pages > 1:  # the buttons point at this record: the filter, the chat, when
        data = {"filter": str(where), "chat": message.chat_id}
        listed = await services.audit.record("alerts.listed", str(user.id), "", data)
    silences = await services.alerts.silences()
    body = render_page(page, where, services.ops, silences)
    markup = page_keyboard(page, listed.id) if listed is not None else None
    await message.reply_text(body, reply_markup=markup)


async def page_pressed(update: Update, context: OpsContext) -> None:
    """Next / Previous on an /alerts list: the filter re-read from its record, re-checked."""
    query = update.callback_query
    if query is None or not isinstance(query.message, Message):
        return
    data, services = CallbackData.decode(query.data), context.services
    listed = await _listing(context, data.row_id, query.message.chat_id)
    number = int(data.action[1:]) if re.fullmatch(r"p[0-9]{1,4}", data.action) else 0
    try:
        where = parse_filter(str(listed.data.get("filter", "")) if listed else "", [])
    except MatcherError:
        listed = None  # a record opsgate did not write this way
    groups = apply_filter(await services.alerts.firing_groups(), where) if listed else []
    page = page_of(groups, number, PAGE_SIZE) if listed else None
    if listed is None or page is None:
        await query.answer(NO_LONGER_VALID, show_alert=True)
        return
    await query.answer()
    silences = await services.alerts.silences()
    body = render_page(page, where, services.ops, silences)
    markup = page_keyboard(page, listed.id)
    await show(context.bot, query.message.chat_id, query.message.message_id, body, markup)


async def _listing(context: OpsContext, event_id: int, chat_id: int) -> Event | None:
    """The /alerts record a page button points at, if it is one, for this chat, and recent."""
    found = await context.services.audit.events(after_id=event_id - 1, limit=1)
    if not found or found[0].id != event_id or found[0].kind != "alerts.listed":
        return None
    event = found[0]
    if event.data.get("chat") != chat_id or context.services.clock() - event.at > PAGE_TTL:
        return None
    return event


async def silences_command(update: Update, context: OpsContext) -> None:
    """Silences in force: Alertmanager's (made by anyone) and opsgate's own."""
    message = update.effective_message
    if message is None:
        return
    services = context.services
    entries, unreachable = await _book(context).active()
    lines = [render_entry(e, services.ops) for e in entries]
    if unreachable:
        lines.insert(0, "⚠️ Alertmanager is unreachable: only opsgate's own silences are shown.")
    await message.reply_text(join_lines(lines) if lines else "No silences in force.")


async def silence_command(update: Update, context: OpsContext) -> None:
    """/silence MATCHERS DURATION [comment]: e.g. /silence alertname=DiskFull 2h disk swap."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    args = context.args or []
    durations = [i for i, a in enumerate(args) if SILENCE_DURATION.fullmatch(a)]
    if not durations or durations[0] == 0:
        await message.reply_text(
            "Usage: /silence label=value [label=~regex ...] DURATION [comment]"
            " (DURATION like 30m, 2h, 1d)"
        )
        return
    at = durations[0]
    try:
        matchers = parse_matchers(" ".join(args[:at]))
    except MatcherError as exc:
        await message.reply_text(f"⛔ {esc(exc)}. Nothing was silenced.")
        return
    duration = silence_duration(args[at])
    if duration is None:
        await message.reply_text("⛔ A silence lasts 1 s to 30 days. Nothing was silenced.")
        return
    comment = " ".join(args[at + 1 :])
    if len(comment) > MAX_COMMENT:
        await message.reply_text(
            f"⛔ The comment is too long (at most {MAX_COMMENT} characters). Nothing was silenced."
        )
        return
    try:
        made = await _book(context).create(matchers, duration, str(user.id), comment)
    except AlertError as exc:
        await message.reply_text(f"⛔ {esc(exc)}. Nothing was silenced.")
        return
    text = render_entry(made.entry, context.services.ops)
    text += f". /unsilence {made.entry.short_id.lstrip('#')} ends it."
    if made.unreachable:
        text = "⚠️ Alertmanager is unreachable: silenced in opsgate only.\n" + text
    await message.reply_text(text)


async def unsilence_command(update: Update, context: OpsContext) -> None:
    """/unsilence ID: ends a silence now."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    args = context.args or []
    ok = len(args) == 1 and (re.fullmatch(r"#?[0-9]{1,9}", args[0]) or AM_ID.fullmatch(args[0]))
    if not ok:
        await message.reply_text("Usage: /unsilence ID (see /silences)")
        return
    try:
        ended = await _book(context).expire(args[0], str(user.id))
    except AlertError as exc:
        await message.reply_text(f"⛔ {esc(exc)[:1].upper()}{esc(exc)[1:]}. Nothing changed.")
        return
    await message.reply_text(f"🔔 Silence {esc(ended.short_id)} ended; its alerts notify again.")


COMMANDS = [
    Command("alerts", "alerts firing now: [service|severity|matchers]", alerts_command),
    Command("silences", "silences in force", silences_command),
    Command(
        "silence",
        "silence alerts: MATCHERS DURATION [comment]",
        silence_command,
        action=Action.SILENCE,
    ),
    Command("unsilence", "end a silence: ID", unsilence_command, action=Action.SILENCE),
]
BUTTONS = [ButtonRoute(NS_ALERT, alert_pressed), ButtonRoute(NS_PAGE, page_pressed)]
