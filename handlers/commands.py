"""The command registry: what each command is called, what it does and which role it needs.

/help, setMyCommands and the access gate all read this one list, so a command's role is
declared once, next to its handler.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from telegram import Update

from config.permissions import Action, Permissions
from handlers.context import OpsContext

CommandCallback = Callable[[Update, OpsContext], Coroutine[Any, Any, None]]

DEFAULT_PERMISSIONS = Permissions()
_COMMAND_RE = re.compile(r"^/([A-Za-z0-9_]{1,32})(?:@([A-Za-z0-9_]{1,64}))?(?:\s+(.*))?$", re.S)


@dataclass(frozen=True)
class Command:
    name: str
    description: str
    callback: CommandCallback
    action: Action | None = None  # None: anyone who may talk to the bot in this chat
    anywhere: bool = False  # also answers in chats the ops file does not list
    # For commands whose arguments decide (`/flag KEY` reads, `/flag KEY 25` changes).
    action_for: Callable[[str], Action | None] | None = None

    def action_needed(self, args: str) -> Action | None:
        """What these arguments do, for the access gate (None: anyone in the chat may)."""
        if self.action is None and self.action_for is not None:
            return self.action_for(args)
        return self.action


@dataclass(frozen=True)
class ParsedCommand:
    name: str
    args: str


def parse_command(text: str, bot_username: str) -> ParsedCommand | None:
    """`/name@bot args` -> ParsedCommand, or None when it is no command or for another bot."""
    match = _COMMAND_RE.match(text.strip())
    if match is None:
        return None
    name, addressee, args = match.group(1), match.group(2), match.group(3) or ""
    if addressee is not None and addressee.lower() != bot_username.lower():
        return None
    return ParsedCommand(name.lower(), args.strip())


class CommandRegistry:
    def __init__(self, commands: Iterable[Command]) -> None:
        self._commands: dict[str, Command] = {}
        for command in commands:
            if command.name in self._commands:
                raise ValueError(f"command /{command.name} registered twice")
            self._commands[command.name] = command

    def all(self) -> list[Command]:
        return list(self._commands.values())

    def get(self, name: str) -> Command | None:
        return self._commands.get(name)

    def visible_to(
        self, roles: frozenset[str], permissions: Permissions = DEFAULT_PERMISSIONS
    ) -> list[Command]:
        """Commands a person with these roles may use, in registration order."""
        shown = []
        for command in self._commands.values():
            action = command.action_needed("")  # what the plain form needs
            if action is None or permissions.allows(action, roles):
                shown.append(command)
        return shown
