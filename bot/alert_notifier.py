"""The alert outbox's Telegram side: renders what services/alerts/messages.py decided and sends
it, mapping Bot API failures to the outbox's (retry later, or give up)."""

from __future__ import annotations

import logging
from datetime import timedelta
from html import escape

from telegram import Bot, InputFile, ReplyParameters
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter

from handlers.alerts_render import (
    AlertText,
    framed,
    group_keyboard,
    render_digest,
    render_group_message,
    with_links,
)
from handlers.context import OpsApplication, OpsContext
from handlers.render import esc, mention
from services.alerts.links import Link
from services.alerts.messages import Backup, Digest, Escalation, GroupMessage
from services.alerts.outbox import Delivery, DeliveryFailed, RetryLater, Sent
from services.container import Services

log = logging.getLogger(__name__)


class TelegramNotifier:
    """Delivers outbox rows as Telegram messages."""

    def __init__(self, bot: Bot, services: Services) -> None:
        self._bot = bot
        self._services = services

    async def deliver(self, delivery: Delivery) -> Sent:
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

    async def _deliver(self, delivery: Delivery) -> Sent:
        message = await self._services.alert_messages.message_for(delivery)
        if isinstance(message, Digest):
            return await self._digest(message)
        if isinstance(message, GroupMessage):
            return await self._group(message)
        if isinstance(message, Escalation):
            return Sent(await self._escalate(message))
        if isinstance(message, Backup):
            return Sent(await self._backup(message))
        return Sent(None, 0)

    async def _digest(self, digest: Digest) -> Sent:
        rendered = render_digest(digest.alerts, digest.silences)
        sent = await self._bot.send_message(
            digest.chat_id, rendered.text, disable_notification=digest.silent
        )
        return await self._with_list(sent.chat_id, sent.message_id, rendered, "digest")

    async def _with_list(
        self, chat_id: int, message_id: int, rendered: AlertText, name: str
    ) -> Sent:
        """The message, and when it could not name every alert, the full list under it."""
        if rendered.full_list is None:
            return Sent(message_id)
        await self._bot.send_document(
            chat_id,
            InputFile(rendered.full_list.encode(), filename=f"alerts-{name}.txt"),
            caption="Every alert of the message above, one a line.",
            reply_parameters=ReplyParameters(message_id, allow_sending_without_reply=True),
            disable_notification=True,
        )
        return Sent(message_id, 2)

    async def _group(self, message: GroupMessage) -> Sent:
        try:
            return await self._send_group(message, link_buttons=True)
        except BadRequest as exc:
            if not message.links or "url" not in str(exc).lower():
                raise
            # Telegram refuses some URLs as buttons (a host it will not link, say): the
            # alert still goes out, its links in the text.
            log.warning("link buttons refused (%s); sending them as text links", exc)
            return await self._send_group(message, link_buttons=False)

    async def _send_group(self, message: GroupMessage, *, link_buttons: bool) -> Sent:
        ops, group = self._services.ops, message.group
        mentions = " ".join(mention(ops, uid) for uid in message.mention)
        before, after = framed(message.opening, message.details)
        if message.links and not link_buttons:
            after.append(" · ".join(text_link(x) for x in message.links))
        after += [mentions] if mentions else []
        rendered = render_group_message(
            group,
            ops,
            message.silences,
            kind=message.kind,
            deploy=message.deploy,
            flag=message.flag,
            reserve=sum(len(x) + 1 for x in [*before, *after]),
        )
        text = "\n".join([*before, rendered.text, *after])
        markup = group_keyboard(group, message.deploy, message.flag)
        if link_buttons:
            markup = with_links(markup, message.links)
        name = f"group-{group.id}"
        if message.edit_message_id is not None:
            try:
                await self._bot.edit_message_text(
                    text,
                    chat_id=group.chat_id,
                    message_id=message.edit_message_id,
                    reply_markup=markup,
                )
            except BadRequest as exc:
                if "not modified" in str(exc):
                    return Sent(message.edit_message_id, 0)
                if "not found" not in str(exc):
                    raise
            else:  # edited: its list (if any) goes under it; a failure there is not the edit's
                return await self._with_list(group.chat_id, message.edit_message_id, rendered, name)
        sent = await self._bot.send_message(
            message.chat_id, text, reply_markup=markup, disable_notification=message.silent
        )
        return await self._with_list(sent.chat_id, sent.message_id, rendered, name)

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


def text_link(link: Link) -> str:
    """A validated link in the text: its URL escaped for the href attribute."""
    return f'<a href="{escape(link.url, quote=True)}">{esc(link.label)}</a>'


def _seconds(value: object) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(str(value))


async def alert_tick(context: OpsContext) -> None:
    """The repeating job: due groups into the outbox, the outbox into the chats."""
    await deliver_alerts(context.ops_application)


async def deliver_alerts(application: OpsApplication) -> None:
    """Due groups into the outbox, the outbox into the chats; one run at a time (two would
    send the same rows twice)."""
    data = application.bot_data
    services = data.require_services()
    async with data.alert_delivery:
        data.alert_delivery_queued = False  # from here on, new rows are seen by this run
        await services.alert_scheduler.flush()
        await services.outbox.deliver_due(TelegramNotifier(application.bot, services))


def deliver_alerts_soon(application: OpsApplication) -> None:
    """Right after a webhook stored alerts: what may go out now does not wait for the next
    tick. Under load the calls fold into one waiting run."""
    if application.bot_data.alert_delivery_queued:
        return
    application.bot_data.alert_delivery_queued = True
    application.create_task(deliver_alerts(application))
