"""What the running process knows about itself that the database does not: whether the chat
network answered lately, and how many of its calls failed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from services.progress import Progress

KEPT_PROGRESS = 50  # the step lists of the latest runs, for the dashboard


@dataclass
class RuntimeStatus:
    chat_reachable: bool | None = None  # None: not checked yet
    chat_checked_at: datetime | None = None
    chat_api_errors: int = 0  # calls the chat network refused or failed, since start
    chat_calls_pending: int = 0  # chat API calls queued by the rate limiter or in flight now
    # deployment id -> the steps its run shows on its card, live (the dashboard reads them)
    progress_of: dict[int, Progress] = field(default_factory=dict)

    def track(self, deployment_id: int, progress: Progress) -> Progress:
        """Keep a run's steps where the dashboard can read them; the oldest are dropped."""
        self.progress_of.pop(deployment_id, None)
        self.progress_of[deployment_id] = progress
        while len(self.progress_of) > KEPT_PROGRESS:
            del self.progress_of[next(iter(self.progress_of))]
        return progress

    def checked(self, reachable: bool, at: datetime) -> None:
        self.chat_reachable, self.chat_checked_at = reachable, at
