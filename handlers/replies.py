"""Answers several chat surfaces share: a front-door request's outcome under its message."""

from __future__ import annotations

from telegram import Message

from handlers.context import OpsContext
from handlers.deploy_render import render_waiting_signoff
from handlers.render import esc
from services.deploy.front_door import Origin, Requested
from services.errors import OpsgateError


async def answer_request(message: Message, requested: Requested) -> None:
    """A request waiting for sign-off says where; one that runs has its card as the answer."""
    if requested.signoff is not None:
        text = render_waiting_signoff(requested.deployment, requested.signoff, message.chat_id)
        await message.reply_text(text)


async def request_rollback(
    message: Message,
    name: str,
    version: str | None,
    actor: str,
    door: str,
    context: OpsContext,
    environment: str | None = None,
) -> None:
    """A rollback through the front door (/rollback, or a Roll back button under `message`)."""
    origin = Origin(door, message.chat_id, message.message_id)
    try:
        requested = await context.services.front_door.rollback(
            name, version, actor, origin, environment
        )
    except OpsgateError as exc:
        await message.reply_text(f"⛔ {esc(exc)}")
        return
    await answer_request(message, requested)
