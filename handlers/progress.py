"""One message per long job, edited as its steps advance, within Telegram's edit limits."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from telegram import InlineKeyboardMarkup, Message
from telegram.error import BadRequest

from handlers.render import esc, join_lines
from services.progress import Step, StepStatus

log = logging.getLogger(__name__)

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


class ProgressMessage:
    """A progress listener: edits `message` at most every `min_interval` seconds.

    Intermediate states may be skipped under the throttle; `finish` always shows the last one.
    `controls` (e.g. an Abort button) stay on the message until `finish` replaces them: an
    edit without reply_markup would drop them.
    """

    def __init__(
        self,
        message: Message,
        title: str,
        min_interval: float = 1.0,
        controls: InlineKeyboardMarkup | None = None,
    ) -> None:
        self._message = message
        self._title = title
        self._min_interval = min_interval
        self._controls = controls
        self._steps: Sequence[Step] = ()
        self._sent = message.text_html or ""
        self._last_edit = 0.0

    async def __call__(self, steps: Sequence[Step]) -> None:
        self._steps = steps
        if time.monotonic() - self._last_edit >= self._min_interval:
            await self._edit(render_steps(self._title, steps), self._controls)

    async def finish(self, footer: str, reply_markup: InlineKeyboardMarkup | None = None) -> None:
        self._controls = None
        await self._edit(render_steps(self._title, self._steps, footer), reply_markup, final=True)

    async def _edit(
        self, text: str, reply_markup: InlineKeyboardMarkup | None, *, final: bool = False
    ) -> None:
        if text == self._sent and not final:
            return
        try:
            await self._message.edit_text(text, reply_markup=reply_markup)
        except BadRequest as exc:
            if "not modified" not in str(exc):
                raise
        self._sent = text
        self._last_edit = time.monotonic()
