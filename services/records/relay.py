"""Requests a following opsgate took on its HTTP side, kept for the leader to act on.

Several opsgates share one PostgreSQL and only the leader acts. A follower still serves the
HTTP side: what would change something (an alert, a CI call, a button in the dashboard, an
update from Telegram) is stored here whole (method, target, headers, body) before it is
answered, and the leader replays it through its own HTTP app, then stores the answer for the
follower to give. A request is acted on at least once: a leader that dies between acting and
storing the answer leaves it open, and the next leader replays it (as a client's retry would).

With PostgreSQL, a stored request wakes the leader at once, and a stored answer the followers
(NOTIFY); a look every so often catches what a lost notification would miss.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.records.audit import utc_now
from services.records.storage import Storage

log = logging.getLogger(__name__)

# PostgreSQL's triggers on relayed_requests notify these (migration 17).
CHANNEL = "opsgate_relay"  # a request was stored: the leader wakes
ANSWERED_CHANNEL = "opsgate_relay_answered"  # an answer was stored: followers look again
Headers = list[tuple[str, str]]  # as they came, in order; latin-1 text, as HTTP carries it


@dataclass(frozen=True)
class RelayedRequest:
    id: int
    method: str
    target: str  # the path and the query, as sent (still percent-encoded)
    headers: Headers
    body: bytes
    client: str  # "host:port" of whoever sent it to the follower


@dataclass(frozen=True)
class RelayedAnswer:
    status: int
    headers: Headers
    body: bytes


def _headers(text: str) -> Headers:
    return [(str(name), str(value)) for name, value in json.loads(text)]


def _headers_text(headers: Sequence[tuple[str, str]]) -> str:
    return json.dumps([list(pair) for pair in headers])


class RelayQueue:
    def __init__(
        self, storage: Storage, name: str, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._storage = storage
        self._name = name  # this process, host:pid
        self._clock = clock

    async def put(
        self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes, client: str
    ) -> int:
        """Store a request (committed on return) and wake the leader; its id."""
        result = await self._storage.write(
            "INSERT INTO relayed_requests (received_at, received_by, method, target, headers,"
            " body, client) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                self._clock().isoformat(),
                self._name,
                method,
                target,
                _headers_text(headers),
                body,
                client,
            ),
        )
        assert result.lastrowid is not None
        return result.lastrowid

    async def answer_of(self, request_id: int) -> RelayedAnswer | None:
        """The leader's answer, once it has acted on the request."""
        rows = list(
            await self._storage.db.execute_fetchall(
                "SELECT status, answer_headers, answer_body FROM relayed_requests"
                " WHERE id = ? AND done_at IS NOT NULL",
                (request_id,),
            )
        )
        if not rows:
            return None
        status, headers, body = rows[0]
        return RelayedAnswer(int(status), _headers(headers), bytes(body))

    async def withdraw(self, request_id: int) -> bool:
        """Take back a request no leader has started on (a read nobody answered in time)."""
        result = await self._storage.write(
            "DELETE FROM relayed_requests WHERE id = ? AND taken_by IS NULL", (request_id,)
        )
        return result.rowcount == 1

    async def claim(self, limit: int = 50) -> list[RelayedRequest]:
        """Requests not answered yet, oldest first (a previous leader's unfinished ones too),
        marked as this leader's: their followers can no longer take them back."""
        rows = await self._storage.write_returning(
            "UPDATE relayed_requests SET taken_by = ? WHERE id IN (SELECT id FROM"
            " relayed_requests WHERE done_at IS NULL ORDER BY id LIMIT ?)"
            " RETURNING id, method, target, headers, body, client",
            (self._name, limit),
        )
        requests = [
            RelayedRequest(int(r[0]), str(r[1]), str(r[2]), _headers(r[3]), bytes(r[4]), str(r[5]))
            for r in rows
        ]
        return sorted(requests, key=lambda request: request.id)  # RETURNING keeps no order

    async def answer(self, request_id: int, answer: RelayedAnswer) -> None:
        """Store the answer. The request's headers and body go: they can carry bearer tokens
        and secrets, which the database (and its backups) should not keep once acted on."""
        await self._storage.write(
            "UPDATE relayed_requests SET status = ?, answer_headers = ?, answer_body = ?,"
            " done_at = ?, headers = '[]', body = ? WHERE id = ?",
            (
                answer.status,
                _headers_text(answer.headers),
                answer.body,
                self._clock().isoformat(),
                b"",
                request_id,
            ),
        )

    async def forget_answer(self, request_id: int) -> None:
        """The follower gave the answer: its headers and body go too (a session cookie the
        dashboard set, say); the row stays as the record of who relayed what, and when."""
        await self._storage.write(
            "UPDATE relayed_requests SET answer_headers = '[]', answer_body = ? WHERE id = ?",
            (b"", request_id),
        )

    async def prune(self, keep: timedelta) -> int:
        """Forget answered requests older than `keep` (their answers were given long ago)."""
        cutoff = (self._clock() - keep).isoformat()
        result = await self._storage.write(
            "DELETE FROM relayed_requests WHERE done_at IS NOT NULL AND done_at < ?", (cutoff,)
        )
        return result.rowcount
