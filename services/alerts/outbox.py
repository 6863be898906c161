"""Delivering the alert outbox within Telegram's limits, without losing anything.

Rows are written by the scheduler in the same transaction as the change they report, so a
crash never loses one; a row is marked sent only after the chat accepted it, so a crash may
send one twice (at least once), never zero times.

Pacing: per chat a token bucket of `chat_per_minute // 5` (at least 2) messages, refilled so
that no 60 s ever hold more than `chat_per_minute` (counted from the rows themselves, every
part of a long message included, so a restart does not reset it), and at most
`global_per_second` overall.
The budget is spread, not spent up front: while the room the bucket has holds everything
waiting, each goes out on its own at once; only when waiting would break the budget is what
waits folded into digests (each naming every alert it carries), never dropped. A 429 holds
the chat for its retry_after; other failures back off (2, 4, ... 60 s); a request the chat
refuses for good (a 400) is marked failed and logged.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from config.opsfile import OpsConfig
from services.records.audit import utc_now
from services.records.storage import Storage

log = logging.getLogger(__name__)
MAX_PER_DIGEST = 60  # alerts named in one digest message
DIGEST_CHARS = 3900  # estimated (over-estimated) text of one digest: the limit is 4096
LINE_OVERHEAD = 10  # icon, time and markup, less the label syntax the JSON counts
MAX_LABEL_CHARS, MAX_SUMMARY_CHARS = 300, 160  # what a line shows (handlers/alerts_render.py)
WEIGHT_SQL = (
    "SELECT fingerprint, min(length(labels), ?) + min(length(coalesce("
    "json_extract(annotations, '$.summary'), '')), ?) FROM alerts WHERE fingerprint IN (MARKS)"
)
FOLDABLE = frozenset({"notify", "repeat", "digest"})  # what may go out as a digest


@dataclass(frozen=True)
class Delivery:
    id: int
    chat_id: int
    kind: str  # notify | update | repeat | escalate | backup | digest
    group_id: int | None
    fingerprints: tuple[str, ...]
    silent: bool


@dataclass(frozen=True)
class Sent:
    message_id: int | None
    messages: int = 1  # chat messages it took: a long list is a message and a document


class Notifier(Protocol):
    async def deliver(self, delivery: Delivery) -> Sent | int | None:
        """Send (or edit) it; what went out (a bare message id: one message).
        Raises RetryLater or DeliveryFailed."""
        ...


class RetryLater(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"retry after {seconds:g} s")
        self.seconds = seconds


class DeliveryFailed(Exception):
    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class Outbox:
    def __init__(
        self,
        storage: Storage,
        ops: Callable[[], OpsConfig],
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._storage = storage
        self._ops = ops
        self._clock = clock
        self._second: deque[float] = deque()  # monotonic times of the last second's sends

    async def pending(self) -> int:
        rows = list(
            await self._storage.db.execute_fetchall(
                "SELECT count(*) FROM alert_outbox WHERE state = 'pending'"
            )
        )
        return int(rows[0][0])

    async def deliver_due(self, notifier: Notifier) -> int:
        """Deliver what is due, within the limits; returns how many messages went out."""
        now = self._clock()
        rows = await self._storage.db.execute_fetchall(
            "SELECT id, chat_id, group_id, kind, fingerprints, silent FROM alert_outbox"
            " WHERE state = 'pending' AND next_at <= ? ORDER BY id",
            (now.isoformat(),),
        )
        by_chat: dict[int, list[Delivery]] = {}
        for r in rows:
            item = Delivery(
                id=int(r[0]),
                chat_id=int(r[1]),
                group_id=None if r[2] is None else int(r[2]),
                kind=str(r[3]),
                fingerprints=tuple(json.loads(r[4])),
                silent=bool(r[5]),
            )
            by_chat.setdefault(item.chat_id, []).append(item)
        sent = 0
        held = await self._held_chats(now)
        for chat_id, items in by_chat.items():
            if chat_id in held:
                continue
            # Escalations go to people directly: never folded, never held by the chat's
            # budget. Edits (a resolution) are not folded either: the message must tell.
            direct = [i for i in items if i.kind == "escalate"]
            room = await self._room(chat_id, now)
            kept = [i for i in items if i.kind in ("update", "backup")][: max(room, 0)]
            foldable = [i for i in items if i.kind in FOLDABLE]
            chosen: list[Delivery] = []
            free = room - len(kept)
            if free > 0 and foldable:
                # Each on its own while the room holds them all; else what waits is folded,
                # and the first digest goes now: nothing waits longer than the next token.
                if len(foldable) <= free and all(i.kind != "digest" for i in foldable):
                    chosen = foldable
                else:
                    chosen = (await self._fold(foldable))[:1]
            for item in [*direct, *kept, *chosen]:
                # Escalations go to people, not to this chat; a long list takes 2 messages.
                cost = 0 if item.kind == "escalate" else await self._messages_needed(item)
                if cost > room:
                    break  # the bucket refills; this one goes first next time
                if not self._global_slot():
                    return sent
                if await self._deliver(notifier, item):
                    sent += 1
                    room -= cost
                else:
                    break  # held or failing: the rest of this chat waits its turn
        return sent

    async def _messages_needed(self, item: Delivery) -> int:
        """1, or 2 when its alerts cannot all be named in one message (a list goes along)."""
        if item.group_id is None:
            fingerprints = list(item.fingerprints)
        else:  # a group's message names every alert of the group
            rows = await self._storage.db.execute_fetchall(
                "SELECT fingerprint FROM alerts WHERE group_id = ?", (item.group_id,)
            )
            fingerprints = [str(r[0]) for r in rows]
        if len(fingerprints) * LINE_OVERHEAD <= DIGEST_CHARS // 4:
            return 1  # few alerts: one message whatever their text
        weights = await self._weights(fingerprints)
        return 1 if sum(weights.values()) <= DIGEST_CHARS else 2

    async def _room(self, chat_id: int, now: datetime) -> int:
        """How many messages the chat may take now: the bucket's tokens, replayed from what
        went out in the last minute, within what the minute still allows."""
        limit = self._ops().alerts.chat_per_minute
        burst = min(limit, max(2, limit // 5))
        rate = (limit - burst) / 60  # tokens a second: no 60 s can hold more than `limit`
        since = now - timedelta(seconds=60)
        rows = await self._storage.db.execute_fetchall(
            "SELECT sent_at, messages FROM alert_outbox WHERE chat_id = ? AND state = 'sent'"
            " AND sent_at > ? ORDER BY sent_at",
            (chat_id, since.isoformat()),
        )
        tokens, last, used = float(burst), since, 0
        for sent_at, messages in rows:
            at = datetime.fromisoformat(str(sent_at))
            tokens = min(burst, tokens + (at - last).total_seconds() * rate) - int(messages)
            last, used = at, used + int(messages)
        tokens = min(burst, tokens + (now - last).total_seconds() * rate)
        return max(0, min(int(tokens), limit - used))

    async def _held_chats(self, now: datetime) -> set[int]:
        """Chats a 429 holds: from the rows themselves, so a restart keeps the hold."""
        rows = await self._storage.db.execute_fetchall(
            "SELECT DISTINCT chat_id FROM alert_outbox WHERE state = 'pending' AND next_at > ?"
            " AND error LIKE 'retry after%'",
            (now.isoformat(),),
        )
        return {int(r[0]) for r in rows}

    def _global_slot(self) -> bool:
        now = time.monotonic()
        while self._second and self._second[0] <= now - 1:
            self._second.popleft()
        if len(self._second) >= self._ops().alerts.global_per_second:
            return False
        self._second.append(now)
        return True

    async def _fold(self, items: list[Delivery]) -> list[Delivery]:
        """Everything into digests of at most MAX_PER_DIGEST alerts and DIGEST_CHARS of
        estimated text (so the message names every alert it carries), oldest first."""
        weights = await self._weights([fp for item in items for fp in item.fingerprints])
        batches: list[list[Delivery]] = [[]]
        count = chars = 0
        for item in items:
            size = len(item.fingerprints)
            weight = sum(weights.get(fp, LINE_OVERHEAD) for fp in item.fingerprints)
            if batches[-1] and (count + size > MAX_PER_DIGEST or chars + weight > DIGEST_CHARS):
                batches.append([])
                count = chars = 0
            batches[-1].append(item)
            count, chars = count + size, chars + weight
        return [await self._fold_batch(batch) for batch in batches]

    async def _weights(self, fingerprints: list[str]) -> dict[str, int]:
        """Each alert's line in a digest, estimated from its stored labels and summary (the
        JSON is longer than the rendered text: an overestimate, on purpose)."""
        weights: dict[str, int] = {}
        for start in range(0, len(fingerprints), 500):
            chunk = fingerprints[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = WEIGHT_SQL.replace("MARKS", marks)  # only "?" marks: values are bound
            rows = await self._storage.db.execute_fetchall(
                query, (MAX_LABEL_CHARS, MAX_SUMMARY_CHARS, *chunk)
            )
            weights.update({str(r[0]): int(r[1]) + LINE_OVERHEAD for r in rows})
        return weights

    async def _fold_batch(self, batch: list[Delivery]) -> Delivery:
        if len(batch) == 1 and batch[0].kind == "digest":
            return batch[0]
        fingerprints = tuple(dict.fromkeys(fp for item in batch for fp in item.fingerprints))
        now = self._clock().isoformat()
        silent = all(item.silent for item in batch)
        async with self._storage.transaction() as db:
            cursor = await db.execute(
                "INSERT INTO alert_outbox (chat_id, kind, fingerprints, silent, state, next_at,"
                " created_at) VALUES (?, 'digest', ?, ?, 'pending', ?, ?)",
                (batch[0].chat_id, json.dumps(fingerprints), silent, now, now),
            )
            digest_id = cursor.lastrowid
            assert digest_id is not None
            await db.executemany(
                "UPDATE alert_outbox SET state = 'folded', folded_into = ? WHERE id = ?",
                [(digest_id, item.id) for item in batch],
            )
        return Delivery(digest_id, batch[0].chat_id, "digest", None, fingerprints, silent)

    async def _deliver(self, notifier: Notifier, item: Delivery) -> bool:
        try:
            result = await notifier.deliver(item)
        except RetryLater as exc:  # the row's next_at holds the whole chat (_held_chats)
            await self._retry(item, self._clock() + timedelta(seconds=exc.seconds), str(exc))
            return False
        except DeliveryFailed as exc:
            if exc.permanent:
                log.error("alert message %s to %s failed for good: %s", item.id, item.chat_id, exc)
                await self._storage.write(
                    "UPDATE alert_outbox SET state = 'failed', error = ? WHERE id = ?",
                    (str(exc)[:500], item.id),
                )
                return False
            await self._backoff(item, str(exc))
            return False
        await self._sent(item, result if isinstance(result, Sent) else Sent(result))
        return True

    async def _sent(self, item: Delivery, sent: Sent) -> None:
        now, message_id = self._clock().isoformat(), sent.message_id
        async with self._storage.transaction() as db:
            await db.execute(
                "UPDATE alert_outbox SET state = 'sent', sent_at = ?, message_id = ?,"
                " messages = ?, attempts = attempts + 1 WHERE id = ?",
                (now, message_id, sent.messages, item.id),
            )
            if item.kind in ("notify", "repeat") and message_id is not None:
                # Repeats count from when it went out, not from when it was queued.
                await db.execute(
                    "UPDATE alert_groups SET message_id = ?, notified_at = ? WHERE id = ?",
                    (message_id, now, item.group_id),
                )

    async def _retry(self, item: Delivery, at: datetime, error: str) -> None:
        await self._storage.write(
            "UPDATE alert_outbox SET next_at = ?, attempts = attempts + 1, error = ? WHERE id = ?",
            (at.isoformat(), error[:500], item.id),
        )

    async def _backoff(self, item: Delivery, error: str) -> None:
        rows = list(
            await self._storage.db.execute_fetchall(
                "SELECT attempts FROM alert_outbox WHERE id = ?", (item.id,)
            )
        )
        attempts = int(rows[0][0]) if rows else 0
        wait = min(60.0, 2.0 ** (attempts + 1))
        await self._retry(item, self._clock() + timedelta(seconds=wait), error)
