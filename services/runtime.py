"""What the running process knows about itself that the database does not: whether the chat
network answered lately, and how many of its calls failed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass
class RuntimeStatus:
    chat_reachable: bool | None = None  # None: not checked yet
    chat_checked_at: datetime | None = None
    chat_api_errors: int = 0  # calls the chat network refused or failed, since start
    chat_calls_pending: int = 0  # chat API calls queued by the rate limiter or in flight now

    def checked(self, reachable: bool, at: datetime) -> None:
        self.chat_reachable, self.chat_checked_at = reachable, at
