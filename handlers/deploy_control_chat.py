"""/cancel ID, /bad SERVICE VERSION [reason], /unbad SERVICE VERSION and /halt reason:
stopping and marking."""

from __future__ import annotations

import re

from telegram import Update

from config.permissions import Action
from handlers.buttons import NO_LONGER_VALID, ButtonRoute
from handlers.callbacks import CallbackData
from handlers.commands import Command
from handlers.context import OpsContext
from handlers.deploy_render import NS_ABORT, NS_CANARY
from handlers.render import code, deploy_problem, esc, join_lines
from services.deploy.model import DeploymentError, DeploymentState
from services.errors import OpsgateError


async def cancel(update: Update, context: OpsContext) -> None:
    """Cancels a deployment that has not switched yet."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    args = context.args or []
    if len(args) != 1 or not re.fullmatch(r"#?[0-9]{1,18}", args[0]):
        await message.reply_text(
            "Usage: /cancel ID (the number on the deploy card, e.g. /cancel 12)"
        )
        return
    try:
        cancelled = await context.services.front_door.cancel(
            int(args[0].lstrip("#")), str(user.id), "cancelled from chat"
        )
    except OpsgateError as exc:
        await message.reply_text(f"⛔ {esc(exc)}")
        return
    await message.reply_text(
        f"✖ Deploy #{cancelled.id} of <b>{esc(cancelled.service)}</b> {code(cancelled.version)} "
        "cancelled; nothing was switched."
    )


async def abort_pressed(update: Update, context: OpsContext) -> None:
    """The Abort button on a running deploy's card: cancel before the switch, else roll back."""
    query = update.callback_query
    if query is None:
        return
    deployment_id = CallbackData.decode(query.data).row_id
    try:
        stopped = await context.services.pipeline.abort(deployment_id, str(query.from_user.id))
    except DeploymentError:
        await query.answer(NO_LONGER_VALID, show_alert=True)
        return
    if stopped.state is DeploymentState.CANCELLED:
        await query.answer(f"#{stopped.id} cancelled; nothing was switched.")
    else:
        await query.answer(f"Aborting #{stopped.id}: rolling back…")


CANARY_ANSWERS = {
    "promote": "⏩ #{id}: promoting the canary to 100%…",
    "pause": "⏸ #{id}: paused at {weight}%; analysis goes on.",
    "resume": "▶️ #{id}: resumed at {weight}%.",
}


async def canary_pressed(update: Update, context: OpsContext) -> None:
    """A canary card's Promote, Pause or Resume."""
    query = update.callback_query
    if query is None:
        return
    data = CallbackData.decode(query.data)
    if data.action not in CANARY_ANSWERS:
        await query.answer(NO_LONGER_VALID, show_alert=True)
        return
    try:
        row = await context.services.pipeline.canary_control(
            data.row_id, data.action, str(query.from_user.id)
        )
    except DeploymentError as exc:
        await query.answer(f"{NO_LONGER_VALID} {exc}", show_alert=True)
        return
    await query.answer(CANARY_ANSWERS[data.action].format(id=data.row_id, weight=row.weight))


async def bad(update: Update, context: OpsContext) -> None:
    """Marks a release bad by hand: /rollback will never land on it."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    args = context.args or []
    if len(args) < 2:
        await message.reply_text("Usage: /bad SERVICE VERSION [reason]")
        return
    name, version = args[0], args[1]
    problem = deploy_problem(name, context.services.ops)
    if problem:
        await message.reply_text(problem)
        return
    reason = " ".join(args[2:]) or "marked bad by hand"
    try:
        await context.services.releases.mark_bad(name, version, f"{reason} (by {user.id})")
    except OpsgateError as exc:
        await message.reply_text(f"⛔ {esc(exc)}")
        return
    await context.services.audit.record(
        "release.marked_bad", str(user.id), name, {"version": version, "reason": reason}
    )
    await message.reply_text(
        f"🚫 <b>{esc(name)}</b> {code(version)} is marked bad: {esc(reason)}. "
        "/rollback will not land on it."
    )


async def unbad(update: Update, context: OpsContext) -> None:
    """Clears a release's bad mark, so /rollback may land on it again."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    args = context.args or []
    if len(args) != 2:
        await message.reply_text("Usage: /unbad SERVICE VERSION")
        return
    name, version = args
    if problem := deploy_problem(name, context.services.ops):
        await message.reply_text(problem)
        return
    try:
        reason = await context.services.releases.clear_bad(name, version)
    except OpsgateError as exc:
        await message.reply_text(f"⛔ {esc(exc)}")
        return
    await context.services.audit.record(
        "release.unmarked_bad", str(user.id), name, {"version": version, "was": reason}
    )
    await message.reply_text(
        f"✅ <b>{esc(name)}</b> {code(version)} is no longer marked bad (it was: {esc(reason)})."
        f" /rollback {esc(name)} {esc(version)} may land on it again."
    )


async def halt(update: Update, context: OpsContext) -> None:
    """The emergency stop: cancel unswitched deploys, pause plans, lock every environment."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    reason = " ".join(context.args or [])
    if not reason:
        await message.reply_text("Usage: /halt reason (everything stops until /unlock)")
        return
    services = context.services
    try:
        report = await services.front_door.halt(str(user.id), reason)
    except OpsgateError as exc:
        await message.reply_text(f"⛔ {esc(exc)}")
        return
    who = esc(services.ops.name_of(user.id) or user.first_name)
    lines = [
        f"🛑 <b>HALT</b> by {who}: {esc(reason)}",
        f"Cancelled: {', '.join(f'#{d.id}' for d in report.cancelled) or 'none'}",
        f"Already switched, finishing or rolling back: "
        f"{', '.join(f'#{d.id}' for d in report.still_running) or 'none'}",
        f"Plans paused: {esc(', '.join(p.flag_key for p in report.paused) or 'none')}",
        f"Locked: {esc(', '.join(lock.environment for lock in report.locked) or 'none')}",
        "Nothing ships until /unlock ENV.",
    ]
    await message.reply_text(join_lines(lines))


COMMANDS = [
    Command("cancel", "cancel a deploy that has not switched: ID", cancel, action=Action.CONTROL),
    Command("bad", "mark a release bad: SERVICE VERSION [reason]", bad, action=Action.CONTROL),
    Command("unbad", "clear a release's bad mark: SERVICE VERSION", unbad, action=Action.CONTROL),
    Command("halt", "emergency stop: reason", halt, action=Action.CONTROL),
]
BUTTONS = [
    ButtonRoute(NS_ABORT, abort_pressed, action=Action.CONTROL),
    ButtonRoute(NS_CANARY, canary_pressed, action=Action.DEPLOY),
]
