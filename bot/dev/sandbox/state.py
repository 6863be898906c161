"""Everything the sandbox remembers: users, chats, transcripts, pending updates, limits.

All of it lives on the server's event loop; nothing here does I/O. Changes that a test may wait
for (transcripts, callback answers) bump ``version`` and wake ``wait_change``.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections import deque
from typing import Any

from bot.dev.sandbox.html import command_entities
from bot.dev.sandbox.models import JSON, Callback, Chat, StoredFile, StoredMessage, User, Webhook


class Flood:
    """Sliding-window limits; None means unlimited (the default)."""

    def __init__(self) -> None:
        self.per_chat_per_minute: int | None = None
        self.global_per_second: int | None = None
        self._chats: dict[int, deque[float]] = {}
        self._global: deque[float] = deque()

    @staticmethod
    def _wait(window: deque[float], limit: int | None, span: float, now: float) -> int:
        while window and window[0] <= now - span:
            window.popleft()
        if limit is None or len(window) < limit:
            return 0
        return max(1, math.ceil(window[-limit] + span - now))

    def retry_after(self, chat_id: int, counts_global: bool) -> int:
        """Seconds to wait before this call may go through; 0 if it may now."""
        now = time.monotonic()
        chat = self._wait(
            self._chats.setdefault(chat_id, deque()), self.per_chat_per_minute, 60, now
        )
        overall = self._wait(self._global, self.global_per_second, 1, now) if counts_global else 0
        return max(chat, overall)

    def record(self, chat_id: int, counts_global: bool) -> None:
        now = time.monotonic()
        self._chats.setdefault(chat_id, deque()).append(now)
        if counts_global:
            self._global.append(now)


class Faults:
    """Injected failures of message-sending methods: some 429s and some 5xx, seeded, so a
    test sees the same sequence every run. `flood_refusals` counts 429s the flood limits
    (not the injection) gave: a client within the limits never gets one."""

    SENDING = frozenset({"sendmessage", "editmessagetext", "senddocument", "sendphoto"})

    def __init__(self) -> None:
        self.rate_429 = 0.0
        self.rate_5xx = 0.0
        self.retry_after = 1
        self.flood_refusals = 0
        self.injected = {"429": 0, "5xx": 0}
        self._random = random.Random(0)

    def configure(self, rate_429: float, rate_5xx: float, retry_after: int, seed: int) -> None:
        self.rate_429, self.rate_5xx, self.retry_after = rate_429, rate_5xx, retry_after
        self._random = random.Random(seed)

    def draw(self, method: str) -> str | None:
        """ "429", "5xx" or None for one call of `method`."""
        if method not in self.SENDING:
            return None
        roll = self._random.random()
        if roll < self.rate_429:
            self.injected["429"] += 1
            return "429"
        if roll < self.rate_429 + self.rate_5xx:
            self.injected["5xx"] += 1
            return "5xx"
        return None


class PollConflict(Exception):
    """A newer getUpdates call took over this one."""


class SandboxState:
    def __init__(self) -> None:
        self.version = 0
        self._changed = asyncio.Event()
        self._updates_arrived = asyncio.Event()
        self._poll_generation = 0
        self._update_ids = itertools.count(1)  # never restarts: a bot's offset must stay valid
        self.reset()

    def reset(self) -> None:
        """Forget everything; ``version`` keeps counting so waiters never see it go back."""
        self.users: dict[int, User] = {}
        self.chats: dict[int, Chat] = {}
        self.messages: dict[int, dict[int, StoredMessage]] = {}
        self.updates: list[JSON] = []
        self.callbacks: dict[str, Callback] = {}
        self.files: dict[str, StoredFile] = {}
        self.commands: dict[str, list[JSON]] = {}
        self.menu_buttons: dict[str, JSON] = {}  # chat id (or "default") -> MenuButton
        self.webhook: Webhook | None = None
        self.flood = Flood()
        self.outage = False
        self.slow_s = 0.0  # every Bot API answer but getUpdates waits this long (a slow API)
        self.faults = Faults()
        self.closed = False
        self._ids = itertools.count(1)
        self._message_ids: dict[int, itertools.count[int]] = {}
        self.touch()

    def touch(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def close(self) -> None:
        """Release every long poll so the server can shut down promptly."""
        self.closed = True
        self._changed.set()
        self._updates_arrived.set()

    async def wait_change(self, since: int, hold: float) -> int:
        deadline = time.monotonic() + hold
        while self.version <= since and not self.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                break
        return self.version

    def next_id(self, prefix: str = "") -> str:
        return f"{prefix}{next(self._ids)}"

    def chat(self, chat_id: int) -> Chat | None:
        """A known chat; a private chat appears on first use for a known user."""
        if chat_id not in self.chats and chat_id in self.users:
            self.chats[chat_id] = Chat(chat_id, "private", peer=self.users[chat_id])
        return self.chats.get(chat_id)

    def user(self, user_id: int) -> User:
        return self.users.setdefault(user_id, User(user_id, f"user{user_id}"))

    def message(self, chat_id: int, message_id: int) -> StoredMessage | None:
        found = self.messages.get(chat_id, {}).get(message_id)
        return None if found is None or found.deleted else found

    def add_message(self, chat: Chat, sender: User, **fields: Any) -> StoredMessage:
        counter = self._message_ids.setdefault(chat.id, itertools.count(1))
        message = StoredMessage(next(counter), chat, sender, int(time.time()), **fields)
        self.messages.setdefault(chat.id, {})[message.message_id] = message
        self.touch()
        return message

    def push_update(self, kind: str, payload: JSON) -> int:
        update_id = next(self._update_ids)
        self.updates.append({"update_id": update_id, kind: payload})
        self.wake()
        return update_id

    def confirm(self, offset: int) -> None:
        """Updates below ``offset`` are confirmed; a negative offset keeps the last -offset."""
        if offset < 0:
            del self.updates[:offset]
        else:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]

    async def next_updates(self, limit: int, hold: float, allowed: list[str] | None) -> list[JSON]:
        """Pending updates, held until one arrives or ``hold`` seconds pass (long polling)."""
        self._poll_generation += 1
        generation = self._poll_generation
        self.wake()  # an older poll wakes up and sees it was superseded
        deadline = time.monotonic() + hold
        while True:
            wanted = [u for u in self.updates if not allowed or set(u) & {*allowed}]
            if wanted or self.closed or time.monotonic() >= deadline:
                return wanted[:limit]
            arrived = self._updates_arrived
            try:
                await asyncio.wait_for(arrived.wait(), deadline - time.monotonic())
            except TimeoutError:
                continue
            if generation != self._poll_generation:
                raise PollConflict

    def wake(self) -> None:
        """Wake whoever waits for updates (long polls, the webhook sender)."""
        self._updates_arrived.set()
        self._updates_arrived = asyncio.Event()

    async def wait_wakeup(self) -> None:
        await self._updates_arrived.wait()

    def user_send(
        self,
        user_id: int,
        chat_id: int,
        text: str,
        reply_to: int | None,
        file: StoredFile | None = None,
    ) -> JSON:
        """A user writes in a chat (with a photo or document, `text` is its caption): the
        message lands in the transcript and as an update."""
        user = self.user(user_id)
        chat = self.chat(chat_id)
        if chat is None:
            raise LookupError(f"chat {chat_id} is unknown; add it first")
        replied = self.message(chat_id, reply_to) if reply_to is not None else None
        if file is not None:
            self.files[file.file_id] = file
            message = self.add_message(
                chat, user, html=text, caption=text or None, file=file, reply_to=replied
            )
        else:
            entities = command_entities(text)
            message = self.add_message(
                chat, user, text=text, html=text, entities=entities, reply_to=replied
            )
        update_id = self.push_update("message", message.to_api())
        return {"message_id": message.message_id, "update_id": update_id}

    def user_press(self, user_id: int, chat_id: int, message_id: int, data: str) -> JSON:
        """A user presses a button; ``data`` need not be on the keyboard (tests forge presses)."""
        message = self.message(chat_id, message_id)
        if message is None:
            raise LookupError(f"message {message_id} in chat {chat_id} does not exist")
        callback = Callback(
            str(4_000_000_000_000 + next(self._ids)), self.user(user_id), message, data
        )
        self.callbacks[callback.id] = callback
        query = {"id": callback.id, "from": callback.user.to_api(), "data": data}
        query |= {"chat_instance": str(abs(chat_id) * 31 + 7), "message": message.to_api()}
        update_id = self.push_update("callback_query", query)
        return {"callback_query_id": callback.id, "update_id": update_id}
