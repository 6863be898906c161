"""Progress of long work as a list of steps, reported to a listener after every change.

services/ stays Telegram-free: the chat side passes a listener that edits one message.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum


class StepStatus(StrEnum):
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"


@dataclass
class Step:
    title: str
    status: StepStatus = StepStatus.RUNNING
    duration_s: float = 0.0
    detail: str = ""


ProgressListener = Callable[[Sequence[Step]], Awaitable[None]]


class Progress:
    def __init__(self, listener: ProgressListener | None = None) -> None:
        self.steps: list[Step] = []
        self._listener = listener

    async def _changed(self) -> None:
        if self._listener is not None:
            await self._listener(list(self.steps))

    async def changed(self) -> None:
        """A running step's detail changed (e.g. a fleet's host grid): show it now."""
        await self._changed()

    @asynccontextmanager
    async def step(self, title: str) -> AsyncIterator[Step]:
        """Times the block; an exception marks the step failed (with its text) and propagates."""
        step = Step(title)
        self.steps.append(step)
        await self._changed()
        started = time.monotonic()
        try:
            yield step
        except BaseException as exc:
            step.status = StepStatus.FAILED
            step.detail = step.detail or str(exc)
            raise
        else:
            if step.status is StepStatus.RUNNING:
                step.status = StepStatus.OK
        finally:
            step.duration_s = time.monotonic() - started
            await self._changed()

    @property
    def failed(self) -> bool:
        return any(s.status is StepStatus.FAILED for s in self.steps)
