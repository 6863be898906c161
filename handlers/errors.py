"""The global error handler: log first with a reference, then tell the user that reference."""

from __future__ import annotations

import logging
import secrets

from telegram import Update
from telegram.error import TelegramError

from handlers.context import OpsContext
from handlers.render import code

log = logging.getLogger(__name__)


def describe_update(update: object) -> str:
    if isinstance(update, Update):
        chat = update.effective_chat.id if update.effective_chat else None
        user = update.effective_user.id if update.effective_user else None
        return f"update {update.update_id} (chat {chat}, user {user})"
    return type(update).__name__


async def on_error(update: object, context: OpsContext) -> None:
    """Logs the traceback under a short ref and answers "something went wrong (ref ...)"."""
    ref = secrets.token_hex(4)
    if isinstance(context.error, TelegramError):
        context.services.runtime.chat_api_errors += 1
    log.error(
        "unhandled error, ref %s, in %s", ref, describe_update(update), exc_info=context.error
    )
    if not isinstance(update, Update) or update.effective_chat is None:
        return
    try:
        await context.bot.send_message(
            update.effective_chat.id,
            f"⚠️ Something went wrong (ref {code(ref)}). Nothing more was done; "
            "an admin can find the details in the log under that ref.",
        )
    except TelegramError as exc:
        log.warning("could not tell chat about error ref %s: %s", ref, exc)


async def check_chat_reachable(context: OpsContext) -> None:
    """The repeating job behind /health's "telegram": one getMe."""
    runtime = context.services.runtime
    try:
        await context.bot.get_me()
    except TelegramError as exc:
        runtime.chat_api_errors += 1
        runtime.checked(False, context.services.clock())
        log.warning("the Bot API did not answer getMe: %s", exc)
        return
    runtime.checked(True, context.services.clock())


async def retention_tick(context: OpsContext) -> None:
    """The repeating job: prune, archive audit events, back the database up."""
    report = await context.services.retention.run()
    log.info(
        "retention: %d alert(s), %d deployment(s) pruned; %d event(s) archived to %s; backup %s",
        report.alerts,
        report.deployments,
        report.events_archived,
        report.archive,
        report.backup,
    )
