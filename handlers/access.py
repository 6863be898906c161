"""The one access check every update passes first (handler group -1).

Command filters alone would not protect buttons, and a check repeated in each command would
drift; so chats, command length and roles are checked here, and a refusal stops the update.
"""

from __future__ import annotations

import logging

from telegram import Update
from telegram.ext import ApplicationHandlerStop

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
        raise ApplicationHandlerStop
    if message is None or parsed is None:
        return
    if message.text and len(message.text) > MAX_COMMAND_CHARS:
        await message.reply_text(
            f"That command is too long ({len(message.text)} characters; at most "
            f"{MAX_COMMAND_CHARS}). Nothing was done."
        )
        raise ApplicationHandlerStop
    if command is not None and command.role and command.role not in ops.roles_of(user.id):
        await context.services.audit.record(
            "command.refused",
            actor=str(user.id),
            subject=f"/{command.name}",
            data={"chat_id": chat.id, "role_needed": command.role},
        )
        await message.reply_text(
            f"⛔ /{esc(command.name)} needs the role <b>{esc(command.role)}</b>. "
            f"Ask an admin to add your id {code(user.id)} to "
            f"<code>roles.{esc(command.role)}</code> in the ops file."
        )
        raise ApplicationHandlerStop
