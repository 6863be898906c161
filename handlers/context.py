"""Typed access to opsgate's services from any handler, through PTB's custom ContextTypes."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

from telegram.ext import Application, CallbackContext, ExtBot

from services.container import Services

if TYPE_CHECKING:
    from handlers.buttons import ButtonRegistry
    from handlers.commands import CommandRegistry


class BotData:
    """The Application's bot_data: holds the services container once start-up has opened it."""

    def __init__(self) -> None:
        # One alert delivery at a time: the tick job and a webhook's prompt delivery share it.
        self.alert_delivery = asyncio.Lock()
        self.alert_delivery_queued = False  # one prompt delivery waiting is enough
        self.services: Services | None = None
        self.commands: CommandRegistry | None = None
        self.buttons: ButtonRegistry | None = None

    def require_services(self) -> Services:
        if self.services is None:
            raise RuntimeError("services are not wired yet")
        return self.services


class OpsContext(CallbackContext[ExtBot[Any], dict[Any, Any], dict[Any, Any], BotData]):
    @property
    def services(self) -> Services:
        services = self.bot_data.services
        if services is None:
            raise RuntimeError("services are not wired yet")
        return services

    @property
    def commands(self) -> CommandRegistry:
        commands = self.bot_data.commands
        if commands is None:
            raise RuntimeError("commands are not registered yet")
        return commands

    @property
    def buttons(self) -> ButtonRegistry:
        buttons = self.bot_data.buttons
        if buttons is None:
            raise RuntimeError("buttons are not registered yet")
        return buttons

    @property
    def ops_application(self) -> OpsApplication:
        """The Application, typed as the one build_application made (PTB types it loosely)."""
        return cast("OpsApplication", self.application)


OpsApplication = Application[Any, OpsContext, Any, Any, BotData, Any]
