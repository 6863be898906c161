"""The terminal chat: type as a chosen user in a chosen chat, see the bot's replies and edits.

Script lines (and interactive input) look like this:

    alice> /help              alice, in her private chat with the bot
    bob@deploys> /status      bob, in the group the ops file calls `deploys`
    carol@approvals> [2]      carol presses button 2 of the newest message with buttons there
    :wait                     wait until the bot has been quiet for a few seconds
    :alert critical ApiErrors web 5xx above 5%
                              an alert arrives (severity, name, service, summary), as
                              Alertmanager would send it
    # a comment

Interactively, `:as NAME` and `:in CHAT` change who and where, `:quit` leaves.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TextIO

from bot.dev.sandbox import SandboxClient, SandboxMessage

PRIVATE = "private"
# Seconds without any change in the chats that, together with opsgate saying it has nothing
# under way (`busy`), mean the bot is done. Without a `busy` check, longer: a rate-limited
# group may hold a reply for 3 s.
SETTLED_QUIET = 0.5
UNSURE_QUIET = 4.0
_LINE_RE = re.compile(
    r"^(?P<user>[a-z][a-z0-9_-]*)(?:@(?P<chat>[a-z][a-z0-9_-]*))?>\s?(?P<text>.*)$"
)
_PRESS_RE = re.compile(r"^\[(\d{1,2})\]$")


@dataclass(frozen=True)
class ChatRef:
    name: str
    chat_id: int


AlertHook = Callable[[list[str]], Awaitable[str]]
BusyCheck = Callable[[bool], Awaitable[bool]]  # (everything) -> work under way


class ScriptError(ValueError):
    """A script line that names an unknown user or chat, or is not `user[@chat]> text`."""


class TerminalChat:
    """Acts as people through the sandbox's control API and prints what changed."""

    def __init__(
        self,
        client: SandboxClient,
        people: dict[str, int],
        groups: dict[str, int],
        out: TextIO = sys.stdout,
        quiet: float = 0.4,
        alerts: AlertHook | None = None,
        busy: BusyCheck | None = None,
    ) -> None:
        self._client = client
        self._alerts = alerts
        self._busy = busy  # `:wait` also waits while this says work is under way
        self._people = people
        self._groups = groups
        self._out = out
        self._quiet = quiet
        self._seen: dict[tuple[int, int], tuple[int, bool]] = {}  # (chat, msg) -> (edits, deleted)
        self.user = next(iter(people))
        self.chat = PRIVATE

    def chat_of(self, user: str, chat: str) -> ChatRef:
        if chat == PRIVATE:
            return ChatRef(f"{user} (private)", self._people[user])
        if chat not in self._groups:
            known = ", ".join([PRIVATE, *self._groups])
            raise ScriptError(f"unknown chat {chat!r} (known: {known})")
        return ChatRef(chat, self._groups[chat])

    async def act(self, user: str, chat: str, text: str) -> None:
        """Send text (or press `[N]`) as `user` in `chat`, then print what the bot did."""
        if user not in self._people:
            raise ScriptError(f"unknown user {user!r} (known: {', '.join(self._people)})")
        where = self.chat_of(user, chat)
        press = _PRESS_RE.match(text.strip())
        if press:
            message = await self._newest_with_buttons(where.chat_id)
            if message is None:
                raise ScriptError(f"no message with buttons in {where.name}")
            index = int(press.group(1))
            await self._client.press_button(
                self._people[user], where.chat_id, message.message_id, index
            )
            label = [b.text for row in message.buttons for b in row][index - 1]
            print(f"[{where.name}] {user} pressed [{index}] {label}", file=self._out)
        else:
            await self._client.send(self._people[user], where.chat_id, text)
        await self._settle(self._quiet, everything=False)
        await self.show_changes(focus=where)

    async def _newest_with_buttons(self, chat_id: int) -> SandboxMessage | None:
        messages = await self._client.messages(chat_id)
        return next((m for m in reversed(messages) if m.buttons and not m.deleted), None)

    async def show_changes(self, focus: ChatRef | None = None) -> None:
        """Print new, edited and deleted messages in every chat, the focused one first."""
        refs = [ChatRef(f"{u} (private)", i) for u, i in self._people.items()]
        refs += [ChatRef(n, i) for n, i in self._groups.items()]
        if focus is not None:
            refs = [focus, *[r for r in refs if r.chat_id != focus.chat_id]]
        names = {v: k for k, v in self._people.items()}
        for ref in refs:
            for message in await self._client.messages(ref.chat_id):
                key = (ref.chat_id, message.message_id)
                state = (message.edits, message.deleted)
                previous = self._seen.get(key)
                self._seen[key] = state
                if previous == state:
                    continue
                label = "new" if previous is None else "edited"
                if message.deleted:
                    label = "deleted"
                self._print(ref.name, message, label, names)

    def _print(
        self, where: str, message: SandboxMessage, label: str, names: dict[int, str]
    ) -> None:
        who = "bot" if message.from_bot else names.get(message.from_id, str(message.from_id))
        marker = "" if label == "new" else f" ({label})"
        body = message.text or message.caption or ""
        if message.document is not None:
            body += f"\n📎 {message.document.name} ({message.document.size} bytes)"
        if message.photo is not None:
            body += f"\n🖼 {message.photo.name} ({message.photo.size} bytes)"
        lines = body.splitlines() or [""]
        print(f"[{where}] {who}{marker}: {lines[0]}", file=self._out)
        for line in lines[1:]:
            print(f"    {line}", file=self._out)
        buttons = [b.text for row in message.buttons for b in row]
        if buttons:
            keys = "  ".join(f"[{n}] {text}" for n, text in enumerate(buttons, start=1))
            print(f"    {keys}", file=self._out)
        self._out.flush()

    async def play(self, lines: Iterable[str]) -> None:
        """Play a script; stops at the first line that cannot be understood."""
        for number, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line == ":wait":  # long work (a restart) edits its message for a while
                await self.wait()
                continue
            if line.startswith(":alert "):
                await self.alert(line.split()[1:], number)
                continue
            match = _LINE_RE.match(line)
            if match is None:
                raise ScriptError(f"line {number}: expected `user[@chat]> text`, got {line!r}")
            await self.act(match["user"], match["chat"] or PRIVATE, match["text"])
        # Replies the rate limiter held back (20 a minute in a group) still count.
        await self.wait()

    async def wait(self) -> None:
        """Until the chats have been quiet a while and opsgate has nothing under way (a deploy
        watching its service changes no message for seconds; the rate limiter may hold one)."""
        await self._settle(UNSURE_QUIET if self._busy is None else SETTLED_QUIET, everything=True)
        await self.show_changes()

    async def _settle(self, quiet: float, *, everything: bool) -> None:
        """Chats unchanged for `quiet` s and opsgate not busy: with `everything`, no deploy or
        alert under way either; else only no reply still queued (an answer, not the work)."""
        deadline = time.monotonic() + 120
        while True:
            await self._client.wait_idle(quiet=quiet, timeout=120)
            if self._busy is None or not await self._busy(everything):
                return
            if time.monotonic() > deadline:
                raise TimeoutError("opsgate still busy after 120 s")
            await asyncio.sleep(0.1)

    async def alert(self, words: list[str], number: int = 0) -> None:
        if self._alerts is None or len(words) < 3:
            raise ScriptError(f"line {number}: `:alert SEVERITY NAME SERVICE [summary]`")
        print(f"[alertmanager] fired {await self._alerts(words)}", file=self._out)
        await self.wait()

    async def interactive(self) -> None:
        loop = asyncio.get_running_loop()
        print(__doc__, file=self._out)
        while True:
            prompt = f"{self.user}@{self.chat}> "
            try:
                line = (await loop.run_in_executor(None, input, prompt)).strip()
            except EOFError:
                return
            if line in (":quit", ":q"):
                return
            try:
                if line.startswith(":as "):
                    self._switch_user(line[4:].strip())
                elif line.startswith(":in "):
                    self.chat_of(self.user, line[4:].strip())
                    self.chat = line[4:].strip()
                elif line.startswith(":alert "):
                    await self.alert(line.split()[1:])
                elif line:
                    await self.act(self.user, self.chat, line)
            except (ScriptError, LookupError) as exc:
                print(f"! {exc}", file=self._out)

    def _switch_user(self, name: str) -> None:
        if name not in self._people:
            raise ScriptError(f"unknown user {name!r} (known: {', '.join(self._people)})")
        self.user = name
