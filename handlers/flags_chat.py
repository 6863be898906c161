"""/flags and /flag KEY ...: rollouts, targeting, the kill switch and staged plans."""

from __future__ import annotations

import logging

from telegram import Update

from config.permissions import Action
from handlers.buttons import NO_LONGER_VALID, ButtonRoute
from handlers.callbacks import CallbackData
from handlers.commands import Command
from handlers.context import OpsContext
from handlers.edits import show
from handlers.flags_parse import FlagCommand, FlagCommandError, parse_flag_command
from handlers.flags_render import (
    NS_FOUR_EYES,
    render_flag,
    render_flags,
    render_plan_event,
    render_request,
    request_buttons,
)
from handlers.render import esc, join_lines
from services.flags.edits import apply_targeting, describe
from services.flags.four_eyes import ChangeRequest
from services.flags.plans import Phase, PlanError, phases_from
from services.flags.types import Flag, FlagError

log = logging.getLogger(__name__)


def action_of_flag(args: str) -> Action | None:
    """Reading a flag is open to all; any change needs the role (the gate enforces it)."""
    try:
        return Action.FLAGS if parse_flag_command(args).changes_something else None
    except FlagCommandError:
        return None  # the handler explains what is wrong; nothing will change


async def flags_overview(update: Update, context: OpsContext) -> None:
    """Every flag with its rollout and plan."""
    if update.effective_message is None:
        return
    services = context.services
    flags = await services.flags.all()
    plans = {f.key: await services.plans.current(f.key) for f in flags}
    await update.effective_message.reply_text(render_flags(flags, plans))


async def flag_command(update: Update, context: OpsContext) -> None:
    """Show or change one flag; every change is recorded with who, when, from and to. A
    change above the flag's four-eyes threshold becomes a request with Approve / Reject."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or message.text is None:
        return
    args = message.text.partition(" ")[2]
    try:
        command = parse_flag_command(args)
        request = await _four_eyes_request(command, str(user.id), context)
        if request is not None:
            sent = await message.reply_text(
                render_request(request, context.services.ops), reply_markup=request_buttons(request)
            )
            await context.services.four_eyes.set_message(request.id, sent.chat_id, sent.message_id)
            return
        text = await _apply(command, str(user.id), context)
    except (FlagCommandError, FlagError) as exc:
        text = f"⚠️ {esc(exc)} Nothing was changed."
    await message.reply_text(text)


async def _four_eyes_request(
    command: FlagCommand, actor: str, context: OpsContext
) -> ChangeRequest | None:
    """The request a change above the flag's threshold becomes; None when it needs none."""
    four_eyes, key = context.services.four_eyes, command.key
    if command.action == "percent" and command.percent is not None:
        if four_eyes.needs_approval(key, command.percent):
            return await four_eyes.request(key, {"percent": command.percent}, actor)
    elif command.action in ("plan", "plan_declared"):
        phases = _phases_of(command, context)
        if four_eyes.needs_approval(key, max(p.percent for p in phases)):
            if await context.services.plans.current(key) is not None:
                raise PlanError(f"{key} already has a plan: pause, resume or abort it first")
            return await four_eyes.request(key, {"phases": [p.to_json() for p in phases]}, actor)
    return None


def _phases_of(command: FlagCommand, context: OpsContext) -> tuple[Phase, ...]:
    if command.phases:
        return command.phases
    if command.action == "plan":
        assert command.every is not None
        return tuple(Phase(step, command.every) for step in command.steps)
    declared = context.services.ops.flags.get(command.key)
    if declared is None or declared.plan is None:
        raise PlanError(f"{command.key} has no [flags.{command.key}.plan] in the ops file.")
    return phases_from(declared.plan)


async def _apply(command: FlagCommand, actor: str, context: OpsContext) -> str:
    services = context.services
    key = command.key
    before = await services.flags.get(key)
    if before is None:
        known = ", ".join(sorted(f.key for f in await services.flags.all())) or "none"
        return f"Unknown flag <code>{esc(key)}</code>. Known: {esc(known)}."
    if command.action == "show":
        plan = await services.plans.latest(key)
        names = {str(user_id): name for user_id, name in services.ops.people.items()}
        changes = await services.flags.changes(key, limit=5)
        served = services.flag_source.tally.last_hour(key)
        return render_flag(before, plan, changes, names, services.ops.segments, served)
    after = await _change(command, actor, context)
    if command.action == "reject":
        return f"✖ The change to <b>{esc(key)}</b> was rejected; nothing was changed."
    if after.version == before.version and command.action not in ("pause", "resume", "abort"):
        return f"🚩 <b>{esc(key)}</b> is already so ({_summary(after)}); nothing changed."
    who = esc(services.ops.name_of(int(actor)) or actor)
    moved = describe(before, after)
    if not moved:  # a plan control: the plan moved, not the flag
        return f"🚩 <b>{esc(key)}</b>: {_summary(after)} (by {who})"
    return join_lines(
        [f"🚩 <b>{esc(key)}</b> changed by {who}:", *(f"• {esc(line)}" for line in moved)]
    )


async def _change(command: FlagCommand, actor: str, context: OpsContext) -> Flag:
    flags, plans, key = context.services.flags, context.services.plans, command.key
    match command.action:
        case "percent":
            assert command.percent is not None
            return await flags.set_rollout(key, command.percent, actor)
        case "on" | "off":
            return await flags.set_enabled(key, command.action == "on", actor)
        case "kill":
            return await flags.kill(key, actor, "killed from chat")
        case "unkill":
            return await flags.unkill(key, actor)
        case "targeting":
            assert command.edit is not None
            segments = context.services.ops.segments
            return await apply_targeting(flags, segments, key, command.edit, actor)
        case "split":
            return await flags.set_split(key, command.split, actor)
        case "plan" | "plan_declared":
            await plans.start_phases(key, _phases_of(command, context), actor)
        case "approve" | "reject":
            assert command.request_id is not None
            await _decide(command.action, command.request_id, actor, context)
        case "pause":
            await plans.pause(key, actor)
        case "resume":
            await plans.resume(key, actor)
        case "abort":
            await plans.abort(key, actor)
    flag = await flags.get(key)
    assert flag is not None
    return flag


async def _decide(verdict: str, request_id: int, actor: str, context: OpsContext) -> None:
    """Approve or reject a four-eyes request; its message (if any) says who decided."""
    four_eyes = context.services.four_eyes
    if verdict == "approve":
        request = await four_eyes.approve(request_id, actor)
    else:
        request = await four_eyes.reject(request_id, actor)
    if request.chat_id is not None and request.message_id is not None:
        text = render_request(request, context.services.ops)
        await show(context.bot, request.chat_id, request.message_id, text, None)


async def four_eyes_pressed(update: Update, context: OpsContext) -> None:
    """Approve / Reject on a four-eyes request: someone else with the flags role decides."""
    query = update.callback_query
    if query is None:
        return
    data = CallbackData.decode(query.data)
    if data.action not in ("ok", "no"):
        await query.answer(NO_LONGER_VALID, show_alert=True)
        return
    try:
        await _decide("approve" if data.action == "ok" else "reject", data.row_id,
                      str(query.from_user.id), context)  # fmt: skip
    except FlagError as exc:
        await query.answer(str(exc)[:190], show_alert=True)
        return
    await query.answer("Approved: applied." if data.action == "ok" else "Rejected.")


def _summary(flag: Flag) -> str:
    if flag.killed:
        return "killed"
    if not flag.enabled:
        return "off"
    if flag.split:
        return "split " + ",".join(f"{name}={weight}" for name, weight in flag.split)
    return f"{flag.rollout_percent:g}%"


async def run_plan_tick(context: OpsContext) -> None:
    """The repeating job: advance due plans, halt breached ones, tell the deploys chat;
    and keep the flagd export in step with the flags."""
    services = context.services
    events = await services.plans.tick()
    await services.flagd.export_if_changed()
    chat_id = services.ops.chats.deploys
    for event in events:
        log.info("flag plan %s: %s at %s%%", event.plan.flag_key, event.kind, event.percent)
        if chat_id is not None:
            await context.bot.send_message(chat_id, render_plan_event(event))


BUTTONS = [ButtonRoute(NS_FOUR_EYES, four_eyes_pressed, action=Action.FLAGS)]

COMMANDS = [
    Command("flags", "every feature flag and its rollout", flags_overview),
    Command(
        "flag",
        "show or change a flag: KEY [25|on|off|kill|exclude|allow|segment|chats|plan|...]",
        flag_command,
        action_for=action_of_flag,
    ),
]
