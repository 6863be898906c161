"""Builds the PTB Application from settings: the one place where handlers are wired, in order."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx
from telegram import LinkPreviewOptions, Update
from telegram.constants import ParseMode
from telegram.ext import (
    AIORateLimiter,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    Defaults,
    MessageHandler,
    TypeHandler,
    filters,
)
from telegram.request import HTTPXRequest

from bot.changes import TelegramChanges
from bot.long_watch_notices import LongWatchNotices
from config.settings import Settings, UpdateMode
from handlers import (
    alerts_chat,
    approvals_chat,
    audit_chat,
    basic,
    dashboard_chat,
    deploy_chat,
    deploy_control_chat,
    drill_chat,
    flags_chat,
    locks_chat,
    report_chat,
    restore_chat,
    services_chat,
)
from handlers.access import gate
from handlers.buttons import ButtonRegistry, ButtonRoute
from handlers.callbacks import pattern_for
from handlers.commands import Command, CommandRegistry
from handlers.context import BotData, OpsApplication, OpsContext
from handlers.errors import on_error
from services.container import Services
from services.runtime import RuntimeStatus
from services.tls import client_context

# Handler groups; order matters: the gate runs first and may stop an update for all others.
GROUP_GATE = -1
GROUP_COMMANDS = 0
GROUP_FALLBACK = 1

_NO_PREVIEWS = LinkPreviewOptions(is_disabled=True)
# Idle connections are dropped after 2 s, before a server's usual 5-s keep-alive closes them
# under a request: an alert or a card edit sent after a quiet spell must not meet a socket the
# server just closed (that costs a failed send and a retry seconds later).
POOL = 256
_LIMITS = httpx.Limits(max_connections=POOL, keepalive_expiry=2.0)


class CountingRateLimiter(AIORateLimiter):
    """PTB's limiter, counting the calls it holds or runs: /health and the demo read it."""

    def __init__(self, runtime: RuntimeStatus) -> None:
        super().__init__(max_retries=3)
        self._runtime = runtime

    async def process_request(self, *args: Any, **kwargs: Any) -> Any:
        self._runtime.chat_calls_pending += 1
        try:
            return await super().process_request(*args, **kwargs)
        finally:
            self._runtime.chat_calls_pending -= 1


def all_commands(extra: Iterable[Command] = ()) -> CommandRegistry:
    handler_modules = (
        basic,
        services_chat,
        deploy_chat,
        deploy_control_chat,
        drill_chat,
        restore_chat,
        approvals_chat,
        audit_chat,
        alerts_chat,
        flags_chat,
        locks_chat,
        report_chat,
        dashboard_chat,
    )
    return CommandRegistry([c for m in handler_modules for c in m.COMMANDS] + list(extra))


def all_buttons(extra: Iterable[ButtonRoute] = ()) -> ButtonRegistry:
    modules = [services_chat, deploy_chat, deploy_control_chat, approvals_chat, alerts_chat]
    modules.append(flags_chat)
    buttons = [b for m in modules for b in m.BUTTONS]
    return ButtonRegistry([*buttons, *extra])


def file_url_for(bot_api_url: str) -> str:
    """https://api.telegram.org/bot -> https://api.telegram.org/file/bot (same for sandboxes)."""
    head, sep, _ = bot_api_url.rstrip("/").rpartition("/")
    return f"{head}/file/bot" if sep else bot_api_url


def build_application(
    settings: Settings, services: Services, commands: CommandRegistry, buttons: ButtonRegistry
) -> OpsApplication:
    context_types = ContextTypes(context=OpsContext, bot_data=BotData)
    builder = (
        ApplicationBuilder()
        .token(settings.bot_token.get_secret_value())
        .base_url(settings.bot_api_url)
        .base_file_url(file_url_for(settings.bot_api_url))
        .context_types(context_types)
        .defaults(Defaults(parse_mode=ParseMode.HTML, link_preview_options=_NO_PREVIEWS))
        .rate_limiter(CountingRateLimiter(services.runtime))
        .request(
            HTTPXRequest(
                connection_pool_size=POOL,
                httpx_kwargs={"limits": _LIMITS, "verify": client_context()},
            )
        )
        # Both Bot API clients on one TLS context; getUpdates' as PTB's default (one connection).
        .get_updates_request(
            HTTPXRequest(connection_pool_size=1, httpx_kwargs={"verify": client_context()})
        )
    )
    if settings.mode is UpdateMode.WEBHOOK:
        builder = builder.updater(None)  # updates arrive through bot/http/app.py instead
    application: OpsApplication = builder.build()
    application.bot_data.services = services
    application.bot_data.commands = commands
    application.bot_data.buttons = buttons
    services.front_door.listen(TelegramChanges(application))
    services.long_watches.listener = LongWatchNotices(application)

    application.add_handler(TypeHandler(Update, gate), group=GROUP_GATE)
    for command in commands.all():
        application.add_handler(CommandHandler(command.name, command.callback), GROUP_COMMANDS)
    for route in buttons.all():
        handler = CallbackQueryHandler(route.callback, pattern=pattern_for(route.namespace))
        application.add_handler(handler, GROUP_COMMANDS)
    # Replies carry evidence for a sign-off, or the reason for a rejection.
    replies = filters.REPLY & (filters.TEXT | filters.PHOTO | filters.Document.ALL)
    application.add_handler(
        MessageHandler(replies & ~filters.COMMAND, approvals_chat.reply_received), GROUP_COMMANDS
    )
    application.add_handler(MessageHandler(filters.COMMAND, basic.unknown_command), GROUP_FALLBACK)
    application.add_error_handler(on_error)
    return application
