"""One message per long job, edited as its steps advance, within Telegram's edit limits."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from telegram import Bot, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.error import BadRequest, NetworkError, TelegramError

from handlers.render import esc, join_lines
from services.progress import Step, StepStatus

log = logging.getLogger(__name__)

FINAL_RETRY_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # then the card is left as it was
_ICONS = {StepStatus.RUNNING: "⏳", StepStatus.OK: "✅", StepStatus.FAILED: "❌"}


def render_steps(title: str, steps: Sequence[Step], footer: str = "") -> str:
    """`title` is HTML made by the caller; step titles and details are escaped here."""
    lines = [title]
    for step in steps:
        line = f"{_ICONS[step.status]} {esc(step.title)}"
        if step.status is not StepStatus.RUNNING:
            line += f" — {step.duration_s:.2f} s"
        if step.detail:
            line += f"\n    {esc(step.detail)}"
        lines.append(line)
    if footer:
        lines.append(footer)
    return join_lines(lines)


@dataclass(frozen=True)
class NewCard:
    """Where to post a progress message that does not exist yet (under `reply_to`)."""

    bot: Bot
    chat_id: int
    reply_to: int | None = None


Posted = Callable[[int, int], Awaitable[None]]  # (chat_id, message_id) once posted


class ProgressMessage:
    """A progress listener that never makes the work wait for the chat.

    A call records the latest steps and returns at once; a task of its own posts the message
    (when given a `NewCard`) and edits it, at most every `min_interval` seconds, always with
    the newest state: states that arrive while an edit is under way or held by Telegram's
    limits are folded into the next one. A failed send is logged and tried again with the next
    change. `finish` waits for that task, then shows the last state with the footer.
    `controls` (e.g. an Abort button) stay on the message until `finish` replaces them.
    """

    def __init__(
        self,
        target: Message | NewCard,
        title: str,
        min_interval: float = 1.0,
        controls: InlineKeyboardMarkup | None = None,
        on_posted: Posted | None = None,
    ) -> None:
        self._message = target if isinstance(target, Message) else None
        self._card = target if isinstance(target, NewCard) else None
        self._title = title
        self._min_interval = min_interval
        self._controls = controls
        self._on_posted = on_posted
        self._steps: Sequence[Step] = ()
        self._sent = self._message.text_html or "" if self._message else ""
        self._last_edit = 0.0
        self._changed = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Post the card now (on its own path); the first step change would do it too."""
        self._changed.set()
        if self._task is None:
            self._task = asyncio.create_task(self._deliver(), name=f"progress {self._title[:40]}")

    async def __call__(self, steps: Sequence[Step]) -> None:
        self._steps = steps
        self.start()

    async def finish(self, footer: str, reply_markup: InlineKeyboardMarkup | None = None) -> None:
        self._closing = True
        self._changed.set()
        if self._task is not None:
            await self._task  # the send under way, if any; it never raises
        self._controls = None
        text = render_steps(self._title, self._steps, footer)
        # The end must reach the chat: through a slow or unreachable Bot API, try again.
        for delay in (*FINAL_RETRY_S, None):
            try:
                await self._show(text, reply_markup, final=True)
                return
            except BadRequest as exc:  # a NetworkError in PTB, but refused for good
                log.warning("could not show the end of %r: %s", self._title[:60], exc)
                return
            except NetworkError as exc:  # timeouts and 5xx: the chat may come back
                if delay is None:
                    log.warning("gave up showing the end of %r: %s", self._title[:60], exc)
                    return
                await asyncio.sleep(delay)
            except TelegramError as exc:  # refused for good (deleted, forbidden)
                log.warning("could not show the end of %r: %s", self._title[:60], exc)
                return

    async def _deliver(self) -> None:
        while True:
            await self._changed.wait()
            if self._closing:
                return
            wait = self._min_interval - (time.monotonic() - self._last_edit)
            if wait > 0 and self._message is not None:
                await asyncio.sleep(wait)  # fold what arrives meanwhile into one edit
            self._changed.clear()
            if self._closing:
                return
            try:
                await self._show(render_steps(self._title, self._steps), self._controls)
            except TelegramError as exc:  # shown with the next change, or by finish
                log.warning("progress of %r not shown: %s", self._title[:60], exc)
                self._last_edit = time.monotonic()

    async def _show(
        self, text: str, reply_markup: InlineKeyboardMarkup | None, *, final: bool = False
    ) -> None:
        if self._message is None:
            assert self._card is not None
            reply = self._card.reply_to
            self._message = await self._card.bot.send_message(
                self._card.chat_id,
                text,
                reply_markup=reply_markup,
                reply_parameters=None
                if reply is None
                else ReplyParameters(reply, allow_sending_without_reply=True),
            )
            self._sent, self._last_edit = text, time.monotonic()
            if self._on_posted is not None:
                await self._on_posted(self._message.chat_id, self._message.message_id)
            return
        if text == self._sent and not final:
            return
        try:
            await self._message.edit_text(text, reply_markup=reply_markup)
        except BadRequest as exc:
            if "not modified" not in str(exc):
                raise
        self._sent = text
        self._last_edit = time.monotonic()
