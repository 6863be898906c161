"""/services, /service NAME and /restart NAME (confirmed by a button, progress by edits)."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update

from config.permissions import Action
from handlers.buttons import NO_LONGER_VALID, ButtonRoute
from handlers.callbacks import CallbackData
from handlers.commands import Command
from handlers.context import OpsContext
from handlers.progress import ProgressMessage
from handlers.render import code, esc, service_name_problem
from handlers.services_render import (
    render_details,
    render_fleet_details,
    render_limits,
    render_overview,
    restart_footer,
)
from services.control.controller import UnknownService
from services.deploy.confirmations import ConfirmationState, StaleConfirmation
from services.progress import Progress

log = logging.getLogger(__name__)

RESTART_NS = "rs"
CONFIRM_TTL = timedelta(minutes=5)


async def services_overview(update: Update, context: OpsContext) -> None:
    """State, health and latency of every service."""
    if update.effective_message is None:
        return
    placements = await context.services.placements()
    await update.effective_message.reply_text(render_overview(placements))


async def service_details(update: Update, context: OpsContext) -> None:
    """One service in detail, with the last lines of its log."""
    message = update.effective_message
    if message is None:
        return
    args = context.args or []
    name = args[0] if args else ""
    problem = service_name_problem(name, sorted(context.services.ops.services))
    if problem or len(args) > 2:
        await message.reply_text(problem or "Usage: /service SERVICE [ENVIRONMENT]")
        return
    service = context.services.ops.services[name]
    environment = args[1] if len(args) == 2 else service.home
    if environment not in service.environment_names():
        known = ", ".join(service.environment_names())
        await message.reply_text(
            f"⛔ {esc(name)} has no environment “{esc(environment[:40])}” (it has: {esc(known)})."
        )
        return
    limits = render_limits(service, environment)
    if len(service.hosts_in(environment)) == 1:
        host = service.hosts_in(environment)[0]
        details = await context.services.controller().details(name, host=host)
        await message.reply_text(render_details(details, limits))
        return
    (placement,) = [
        p for p in await context.services.placements(name) if p.environment == environment
    ]
    # The log worth reading is the first host that is not well, else the first host.
    unwell = [h for h in placement.hosts if h not in placement.healthy]
    host = (unwell or placement.hosts)[0]
    details = await context.services.controller().details(name, host=host)
    await message.reply_text(render_fleet_details(placement, details, limits))


async def restart_request(update: Update, context: OpsContext) -> None:
    """Asks for confirmation with buttons; the restart itself starts on the press."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    services = context.services
    name = " ".join(context.args or [])
    problem = service_name_problem(name, sorted(services.ops.services))
    if problem:
        await message.reply_text(problem)
        return
    service = services.ops.services[name]
    confirmation = await services.confirmations.open(
        "restart", name, user.id, message.chat_id, CONFIRM_TTL
    )
    hosts = service.hosts_in(service.home)
    buttons = [
        InlineKeyboardButton(
            f"🔁 Restart {name}",
            callback_data=CallbackData(RESTART_NS, "ok", confirmation.id).encode(),
        ),
        InlineKeyboardButton(
            "Cancel", callback_data=CallbackData(RESTART_NS, "no", confirmation.id).encode()
        ),
    ]
    await message.reply_text(
        f"Restart <b>{esc(name)}</b> ({esc(service.home)}, {code(service.control_name)})?"
        + (f" One host after the other: {esc(' '.join(hosts))}." if len(hosts) > 1 else "")
        + f"\nSomeone with the role <b>{esc(services.ops.permissions.role_for(Action.RESTART))}</b>"
        " confirms within "
        f"{int(CONFIRM_TTL.total_seconds() // 60)} minutes.",
        reply_markup=InlineKeyboardMarkup([buttons]),
    )


async def restart_pressed(update: Update, context: OpsContext) -> None:
    """Confirm or cancel: honoured once, re-checked against its row."""
    query = update.callback_query
    if query is None or not isinstance(query.message, Message):
        return
    data = CallbackData.decode(query.data)  # well-formed: the gate and the pattern saw to it
    decision = {"ok": ConfirmationState.CONFIRMED, "no": ConfirmationState.CANCELLED}.get(
        data.action
    )
    try:
        if decision is None:
            raise StaleConfirmation(f"unknown action {data.action!r}")
        confirmation = await context.services.confirmations.decide(
            data.row_id, "restart", decision, query.from_user.id
        )
    except StaleConfirmation:
        await query.answer(NO_LONGER_VALID, show_alert=True)
        return
    who = esc(context.services.ops.name_of(query.from_user.id) or query.from_user.first_name)
    name = confirmation.subject
    if decision is ConfirmationState.CANCELLED:
        await query.answer("Cancelled.")
        await query.message.edit_text(f"Restart of <b>{esc(name)}</b> cancelled by {who}.")
        return
    await query.answer(f"Restarting {name}…")
    progress = ProgressMessage(query.message, f"🔁 Restarting <b>{esc(name)}</b> for {who}")
    await progress([])
    # Tracked by the Application: errors reach the error handler, shutdown waits for it.
    context.application.create_task(
        _run_restart(context, name, query.from_user.id, progress), update=update
    )


async def _run_restart(
    context: OpsContext, name: str, user_id: int, progress: ProgressMessage
) -> None:
    started = time.monotonic()
    try:
        outcome = await context.services.front_door.restart(name, str(user_id), Progress(progress))
    except UnknownService:
        await progress.finish(f"⚠️ {esc(name)} is no longer in the ops file; nothing was done.")
        return
    await progress.finish(restart_footer(name, outcome, time.monotonic() - started))


COMMANDS = [
    Command("services", "state and health of every service", services_overview),
    Command("service", "one service in detail, with its last log lines", service_details),
    Command(
        "restart",
        "restart a service (asks for confirmation)",
        restart_request,
        action=Action.RESTART,
    ),
]
BUTTONS = [ButtonRoute(RESTART_NS, restart_pressed, action=Action.RESTART)]
