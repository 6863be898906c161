"""Editing a message the bot sent earlier to show a new state."""

from __future__ import annotations

from telegram import Bot, InlineKeyboardMarkup
from telegram.error import BadRequest


async def show(
    bot: Bot,
    chat_id: int,
    message_id: int,
    text: str,
    reply_markup: InlineKeyboardMarkup | None,
) -> None:
    """Edit it; a state that is already shown is no error (Telegram's "not modified")."""
    try:
        await bot.edit_message_text(
            text, chat_id=chat_id, message_id=message_id, reply_markup=reply_markup
        )
    except BadRequest as exc:
        if "not modified" not in str(exc):
            raise
