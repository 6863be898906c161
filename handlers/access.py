"""The one access check every update passes first (handler group -1).

Command filters alone would not protect buttons, and a check repeated in each command would
drift; so chats, command length and roles are checked here, and a refusal stops the update.
"""

from __future__ import annotations

import logging

from telegram import Update
from telegram.ext import ApplicationHandlerStop

from handlers.buttons import NO_LONGER_VALID
from handlers.callbacks import CallbackData, InvalidCallback
from handlers.commands import parse_command
from handlers.context import OpsContext
from handlers.render import code, esc

log = logging.getLogger(__name__)

# No opsgate command needs more; longer text is a paste gone wrong, not a command.
MAX_COMMAND_CHARS = 1024


async def gate(update: Update, context: OpsContext) -> None:
    """Stop updates from unlisted chats, overlong commands and people without the role."""
    chat, user = update.effective_chat, update.effective_user
    if chat is None or user is None:
        raise ApplicationHandlerStop
    ops = context.services.ops
    message = update.message
    parsed = None
    if message is not None and message.text:
        parsed = parse_command(message.text, context.bot.username)
    command = context.commands.get(parsed.name) if parsed else None

    listed = ops.is_listed_chat(chat.id)
    if not listed and ops.bot.ignore_unlisted_chats and not (command and command.anywhere):
        log.info("ignored an update from unlisted chat %s", chat.id)
        if update.callback_query is not None:
            await update.callback_query.answer(NO_LONGER_VALID)
        raise ApplicationHandlerStop
    if update.callback_query is not None:
        await _gate_button(update, context)
        return
    if message is None or parsed is None:
        return
    if message.text and len(message.text) > MAX_COMMAND_CHARS:
        await message.reply_text(
            f"That command is too long ({len(message.text)} characters; at most "
            f"{MAX_COMMAND_CHARS}). Nothing was done."
        )
        raise ApplicationHandlerStop
    action = command.action_needed(parsed.args) if command is not None else None
    if command is not None and action is not None and not ops.may(user.id, action):
        role = ops.permissions.role_for(action)
        await context.services.audit.record(
            "command.refused",
            actor=str(user.id),
            subject=f"/{command.name}",
            data={"chat_id": chat.id, "role_needed": role},
        )
        what = f"/{esc(command.name)}" if command.action else f"That /{esc(command.name)} change"
        await message.reply_text(
            f"⛔ {what} needs the role <b>{esc(role)}</b>. "
            f"Ask an admin to add your id {code(user.id)} to "
            f"<code>roles.{esc(role)}</code> in the ops file."
        )
        raise ApplicationHandlerStop


async def _gate_button(update: Update, context: OpsContext) -> None:
    """Refuse presses opsgate did not make, and presses by people without the route's role."""
    query = update.callback_query
    assert query is not None
    try:
        route = context.buttons.get(CallbackData.decode(query.data).namespace)
    except InvalidCallback:
        route = None
    if route is None:
        log.info("refused unknown callback data from user %s", query.from_user.id)
        await query.answer(NO_LONGER_VALID, show_alert=True)
        raise ApplicationHandlerStop
    ops = context.services.ops
    if route.action and not ops.may(query.from_user.id, route.action):
        role = ops.permissions.role_for(route.action)
        await context.services.audit.record(
            "button.refused",
            actor=str(query.from_user.id),
            subject=route.namespace,
            data={"role_needed": role},
        )
        await query.answer(f"This needs the role {role}.", show_alert=True)
        raise ApplicationHandlerStop
