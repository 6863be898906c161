"""The alert outbox's Telegram side: renders what services/alerts/messages.py decided and sends
it, mapping Bot API failures to the outbox's (retry later, or give up)."""

from __future__ import annotations

import logging
from datetime import timedelta

from telegram import Bot
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter

from handlers.alerts_render import group_keyboard, render_digest, render_group
from handlers.context import OpsContext
from handlers.render import esc, mention
from services.alerts.messages import Backup, Digest, Escalation, GroupMessage
from services.alerts.outbox import Delivery, DeliveryFailed, RetryLater
from services.container import Services

log = logging.getLogger(__name__)


class TelegramNotifier:
    """Delivers outbox rows as Telegram messages."""

    def __init__(self, bot: Bot, services: Services) -> None:
        self._bot = bot
        self._services = services

    async def deliver(self, delivery: Delivery) -> int | None:
        try:
            return await self._deliver(delivery)
        except RetryAfter as exc:
            self._services.runtime.chat_api_errors += 1
            raise RetryLater(_seconds(exc.retry_after)) from exc
        except (BadRequest, Forbidden) as exc:
            self._services.runtime.chat_api_errors += 1
            raise DeliveryFailed(str(exc), permanent=True) from exc
        except NetworkError as exc:  # includes TimedOut and 5xx answers
            self._services.runtime.chat_api_errors += 1
            raise DeliveryFailed(str(exc), permanent=False) from exc

    async def _deliver(self, delivery: Delivery) -> int | None:
        message = await self._services.alert_messages.message_for(delivery)
        if isinstance(message, Digest):
            return await self._digest(message)
        if isinstance(message, GroupMessage):
            return await self._group(message)
        if isinstance(message, Escalation):
            return await self._escalate(message)
        if isinstance(message, Backup):
            return await self._backup(message)
        return None

    async def _digest(self, digest: Digest) -> int | None:
        message_id = None
        for text in render_digest(digest.alerts, digest.silences):
            sent = await self._bot.send_message(
                digest.chat_id, text, disable_notification=digest.silent
            )
            message_id = sent.message_id
        return message_id

    async def _group(self, message: GroupMessage) -> int:
        ops, group = self._services.ops, message.group
        text = render_group(
            group,
            ops,
            message.silences,
            kind=message.kind,
            deploy=message.deploy,
            flag=message.flag,
        )
        if message.mention:
            text += "\n" + " ".join(mention(ops, uid) for uid in message.mention)
        markup = group_keyboard(group, message.deploy, message.flag)
        if message.edit_message_id is not None:
            try:
                await self._bot.edit_message_text(
                    text,
                    chat_id=group.chat_id,
                    message_id=message.edit_message_id,
                    reply_markup=markup,
                )
                return message.edit_message_id
            except BadRequest as exc:
                if "not modified" in str(exc):
                    return message.edit_message_id
                if "not found" not in str(exc):
                    raise
        sent = await self._bot.send_message(
            message.chat_id, text, reply_markup=markup, disable_notification=message.silent
        )
        return sent.message_id

    async def _escalate(self, escalation: Escalation) -> int:
        """The on-call people, each in a private chat; the group chat if none can be reached."""
        text = (
            f"🚨 Unacknowledged critical in the alerts chat: "
            f"{esc(', '.join(sorted({a.name for a in escalation.group.firing})))}."
            " Press 👀 Ack there."
        )
        reached = None
        for user_id in escalation.oncall:
            try:
                reached = (await self._bot.send_message(user_id, text)).message_id
            except Forbidden:  # they never started a chat with the bot
                log.warning("could not message on-call %s directly", user_id)
        if reached is None:
            return await self._backup(escalation.backup)
        return reached

    async def _backup(self, backup: Backup) -> int:
        ops = self._services.ops
        people = " ".join(mention(ops, uid) for uid in backup.mention)
        names = esc(", ".join(sorted({a.name for a in backup.group.firing})))
        text = f"📣 Still unacknowledged: {names}. {people}".rstrip()
        sent = await self._bot.send_message(backup.chat_id, text)
        return sent.message_id


def _seconds(value: object) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(str(value))


async def alert_tick(context: OpsContext) -> None:
    """The repeating job: due groups into the outbox, the outbox into the chats."""
    services = context.services
    await services.alert_scheduler.flush()
    await services.outbox.deliver_due(TelegramNotifier(context.bot, services))
