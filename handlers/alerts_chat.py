"""Alerts in chat: the outbox's Telegram side, Ack / Silence / Roll back / Set to 0% buttons,
/alerts, /silences, /silence and /unsilence, and the job that works the outbox."""

from __future__ import annotations

import contextlib
import logging
import re
from datetime import timedelta

from telegram import CallbackQuery, Message, Update

from config.permissions import Action
from handlers.alerts_render import (
    NS_ALERT,
    group_keyboard,
    render_group,
    render_group_message,
    render_silence,
)
from handlers.buttons import NO_LONGER_VALID, ButtonRoute
from handlers.callbacks import CallbackData
from handlers.commands import Command
from handlers.context import OpsContext
from handlers.edits import show
from handlers.render import esc, join_lines
from handlers.replies import request_rollback
from services.alerts.messages import service_of
from services.alerts.model import AlertGroup, Matcher, MatcherError, parse_matchers
from services.flags.plans import PlanError

log = logging.getLogger(__name__)
# What each alert button does, for the role gate (named in the ops file's [permissions]).
BUTTON_ACTIONS = {
    "ack": Action.ACK,
    "s1": Action.SILENCE,
    "s24": Action.SILENCE,
    "rb": Action.ROLLBACK,
    "f0": Action.FLAGS,
}
DURATION = re.compile(r"([0-9]{1,4})([smhd])")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_SILENCE = timedelta(days=30)


async def monitor_tick(context: OpsContext) -> None:
    """The repeating job: one sampling cycle of opsgate's own monitor rules."""
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
        await services.alerts.silence(matchers, timedelta(hours=hours), str(user.id), "button")
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
    services = context.services
    group = await services.alerts.group(group_id)
    if group is None or group.message_id is None:
        return
    deploy, flag = await services.alert_messages.changes_for(group)
    silences = await services.alerts.silences()
    # The same form the message was sent in: a long group keeps its "attached list" line.
    text = render_group_message(group, services.ops, silences, deploy=deploy, flag=flag).text
    markup = group_keyboard(group, deploy, flag)
    await show(context.bot, group.chat_id, group.message_id, text, markup)


async def alerts_command(update: Update, context: OpsContext) -> None:
    """What is firing now, by group."""
    message = update.effective_message
    if message is None:
        return
    services = context.services
    groups = await services.alerts.firing_groups()
    if not groups:
        await message.reply_text("✅ Nothing is firing.")
        return
    silences = await services.alerts.silences()
    texts = [render_group(g, services.ops, silences) for g in groups[:10]]
    more = f"\n… and {len(groups) - 10} more group(s)" if len(groups) > 10 else ""
    await message.reply_text(join_lines(texts)[:3900] + more)


async def silences_command(update: Update, context: OpsContext) -> None:
    """Silences in force."""
    message = update.effective_message
    if message is None:
        return
    services = context.services
    active = await services.alerts.silences()
    if not active:
        await message.reply_text("No silences in force.")
        return
    await message.reply_text(join_lines([render_silence(s, services.ops) for s in active]))


async def silence_command(update: Update, context: OpsContext) -> None:
    """/silence MATCHERS DURATION [comment]: e.g. /silence alertname=DiskFull 2h disk swap."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    args = context.args or []
    durations = [i for i, a in enumerate(args) if DURATION.fullmatch(a)]
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
    duration = parse_duration(args[at])
    if not timedelta(0) < duration <= MAX_SILENCE:
        await message.reply_text("⛔ A silence lasts 1 s to 30 days. Nothing was silenced.")
        return
    comment = " ".join(args[at + 1 :])
    silence = await context.services.alerts.silence(matchers, duration, str(user.id), comment)
    text = render_silence(silence, context.services.ops)
    await message.reply_text(f"{text}. /unsilence {silence.id} ends it.")


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `2h`, `1d` (checked by DURATION before)."""
    match = DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    return timedelta(seconds=int(match.group(1)) * UNITS[match.group(2)])


async def unsilence_command(update: Update, context: OpsContext) -> None:
    """/unsilence ID: ends a silence now."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    args = context.args or []
    if len(args) != 1 or not re.fullmatch(r"#?[0-9]{1,9}", args[0]):
        await message.reply_text("Usage: /unsilence ID (see /silences)")
        return
    ended = await context.services.alerts.unsilence(int(args[0].lstrip("#")), str(user.id))
    if ended is None:
        await message.reply_text(f"⛔ No silence #{esc(args[0].lstrip('#'))} in force.")
        return
    await message.reply_text(f"🔔 Silence #{ended.id} ended; its alerts notify again.")


COMMANDS = [
    Command("alerts", "alerts firing now", alerts_command),
    Command("silences", "silences in force", silences_command),
    Command(
        "silence",
        "silence alerts: MATCHERS DURATION [comment]",
        silence_command,
        action=Action.SILENCE,
    ),
    Command("unsilence", "end a silence: ID", unsilence_command, action=Action.SILENCE),
]
BUTTONS = [ButtonRoute(NS_ALERT, alert_pressed)]
