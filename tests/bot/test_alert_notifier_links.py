"""The notifier's link handling: links as URL buttons under the group's own buttons; when
Telegram refuses a URL button, the alert still goes out with its links in the text."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

from telegram import Bot, InlineKeyboardMarkup
from telegram.error import BadRequest

from bot.alert_notifier import TelegramNotifier
from config.opsfile import parse_ops_text
from services.alerts.links import Link
from services.alerts.messages import GroupMessage
from services.alerts.model import Alert, AlertGroup, AlertStatus
from services.alerts.outbox import Delivery
from services.container import Services
from tests.config.test_opsfile import VALID

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
RUNBOOK = Link("📖 Runbook", "https://wiki.example.com/a?b=1&c=2")
SOURCE = Link("📈 Source", "http://prometheus:9090/graph")


@dataclass
class FakeBot:
    """Records what is sent; refuses URL buttons when `refuse_urls`, as Telegram does with
    BUTTON_URL_INVALID for a URL it will not link."""

    refuse_urls: bool
    sent: list[tuple[str, InlineKeyboardMarkup | None]] = field(default_factory=list)

    async def send_message(
        self, chat_id: int, text: str, reply_markup: Any = None, **_: Any
    ) -> SimpleNamespace:
        rows = reply_markup.inline_keyboard if reply_markup else ()
        if self.refuse_urls and any(b.url for row in rows for b in row):
            raise BadRequest("Button_url_invalid")
        self.sent.append((text, reply_markup))
        return SimpleNamespace(chat_id=chat_id, message_id=len(self.sent))


def message(links: tuple[Link, ...]) -> GroupMessage:
    alert = Alert(
        "fp", 1, {"alertname": "DiskFull", "severity": "warning"}, {}, "alertmanager",
        AlertStatus.FIRING, NOW, None, NOW, NOW,
    )  # fmt: skip
    group = AlertGroup(1, "k", {}, -100, 0, None, NOW, NOW, 0, None, None, (alert,))
    return GroupMessage(-100, group, "notify", [], None, None, [], None, False, links=links)


async def deliver(bot: FakeBot, group_message: GroupMessage) -> None:
    async def message_for(_: Delivery) -> GroupMessage:
        return group_message

    services = SimpleNamespace(
        ops=parse_ops_text(VALID),
        runtime=SimpleNamespace(chat_api_errors=0),
        alert_messages=SimpleNamespace(message_for=message_for),
    )
    notifier = TelegramNotifier(cast(Bot, bot), cast(Services, services))
    delivery = Delivery(1, -100, "notify", 1, (), False)
    await notifier.deliver(delivery)


async def test_links_are_url_buttons_two_a_row_under_the_group_buttons() -> None:
    bot = FakeBot(refuse_urls=False)
    await deliver(bot, message((RUNBOOK, SOURCE)))
    [(text, markup)] = bot.sent
    assert markup is not None
    rows = [[(b.text, b.url) for b in row] for row in markup.inline_keyboard]
    assert rows[0] == [("👀 Ack", None), ("🔕 1h", None), ("🔕 24h", None)]
    assert rows[1] == [(RUNBOOK.label, RUNBOOK.url), (SOURCE.label, SOURCE.url)]
    assert "<a href" not in text


async def test_a_refused_url_button_sends_the_links_in_the_text() -> None:
    bot = FakeBot(refuse_urls=True)
    await deliver(bot, message((RUNBOOK, SOURCE)))
    [(text, markup)] = bot.sent
    assert markup is not None and all(not b.url for row in markup.inline_keyboard for b in row)
    assert (
        '<a href="https://wiki.example.com/a?b=1&amp;c=2">📖 Runbook</a> · '
        '<a href="http://prometheus:9090/graph">📈 Source</a>'
    ) in text
