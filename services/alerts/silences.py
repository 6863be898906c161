"""Silences, wherever they live: in Alertmanager when the ops file names one, else in opsgate.

    create   with [alertmanager] url: POST /api/v2/silences (createdBy = the person's name
             from [people], the comment names opsgate and the reason); Alertmanager not
             reachable -> a local silence marked "local: Alertmanager unreachable"
    expire   an Alertmanager id (or its first 8+ characters): DELETE there; a number: local
    active   Alertmanager's active silences, made by anyone, and opsgate's local ones
    sync     Alertmanager's active silences copied into the silences table as mirror rows
             (comment "alertmanager:ID"), so opsgate's own grouping, repeats, escalations
             and monitor alerts honour them too; refreshed on every change, on /silences
             and on each monitor cycle

Every change made through opsgate is audited before it is acknowledged.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx

from config.opsfile import OpsConfig
from services.alerts.alertmanager import (
    AlertmanagerSilences,
    AlertmanagerUnavailable,
    AmMatcher,
    AmSilence,
)
from services.alerts.engine import AlertEngine
from services.alerts.model import AlertError, Matcher, Silence
from services.alerts.rows import read_silences
from services.records.audit import AuditLog, utc_now
from services.records.storage import Connection, Storage

log = logging.getLogger(__name__)
MIRROR = "alertmanager:"  # comment of a local row that mirrors an Alertmanager silence
FALLBACK = "local: Alertmanager unreachable"
AM_ID = re.compile(r"[0-9a-f][0-9a-f-]{7,35}")
SILENCE_DURATION = re.compile(r"([0-9]{1,4})([smhd])")  # 90s, 30m, 2h, 1d
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_SILENCE = timedelta(days=30)


def silence_duration(text: str) -> timedelta | None:
    """How long `text` (like 30m, 2h, 1d) silences for; None unless it is 1 s to 30 days.
    The chat and the API read a silence's length the same way."""
    match = SILENCE_DURATION.fullmatch(text)
    if match is None:
        return None
    duration = timedelta(seconds=int(match[1]) * _UNIT_S[match[2]])
    return duration if timedelta(0) < duration <= MAX_SILENCE else None


class SilenceNotFound(AlertError):
    kind = "not_found"


@dataclass(frozen=True)
class SilenceEntry:
    """One silence in force, for a listing: `where` is alertmanager, local or fallback."""

    id: str
    matchers: tuple[str, ...]
    ends_at: datetime
    created_by: str  # a person's name (Alertmanager) or a Telegram user id (local)
    comment: str
    where: str

    @property
    def short_id(self) -> str:
        return self.id[:8] if self.where == "alertmanager" else f"#{self.id}"


@dataclass(frozen=True)
class SilenceMade:
    entry: SilenceEntry
    unreachable: str | None = None  # why it fell back to a local silence


def _local(silence: Silence) -> SilenceEntry:
    where = "fallback" if silence.comment.startswith(FALLBACK) else "local"
    return SilenceEntry(
        str(silence.id),
        tuple(str(m) for m in silence.matchers),
        silence.ends_at,
        silence.created_by,
        silence.comment,
        where,
    )


def _remote(silence: AmSilence) -> SilenceEntry:
    return SilenceEntry(
        silence.id,
        tuple(str(m) for m in silence.matchers),
        silence.ends_at,
        silence.created_by,
        silence.comment,
        "alertmanager",
    )


class SilenceBook:
    def __init__(
        self,
        engine: AlertEngine,
        storage: Storage,
        audit: AuditLog,
        ops: Callable[[], OpsConfig],
        http: httpx.AsyncClient,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._engine = engine
        self._storage = storage
        self._audit = audit
        self._ops = ops
        self._http = http
        self._clock = clock

    def _client(self) -> AlertmanagerSilences | None:
        config = self._ops().alertmanager
        return None if config is None else AlertmanagerSilences(self._http, str(config.url))

    async def create(
        self, matchers: Sequence[Matcher], duration: timedelta, actor: str, reason: str = ""
    ) -> SilenceMade:
        """In Alertmanager when configured and reachable, else local (said in `unreachable`).
        A matcher Alertmanager refuses raises SilenceRefused and changes nothing."""
        client = self._client()
        if client is None:
            return SilenceMade(
                _local(await self._engine.silence(matchers, duration, actor, reason))
            )
        now = self._clock()
        name = self._ops().name_of(int(actor)) if actor.isdigit() else None
        comment = f"opsgate: {reason}" if reason else "opsgate"
        am_matchers = [AmMatcher(m.name, m.value, m.regex) for m in matchers]
        try:
            silence_id = await client.create(
                am_matchers, now, now + duration, name or actor, comment[:200]
            )
        except AlertmanagerUnavailable as exc:
            text = f"{FALLBACK}; {reason}" if reason else FALLBACK
            local = await self._engine.silence(matchers, duration, actor, text)
            return SilenceMade(_local(local), str(exc))
        made = AmSilence(
            silence_id, tuple(am_matchers), now, now + duration, name or actor, comment, "active"
        )
        async with self._storage.transaction() as db:
            await self._mirror(db, made)
            data = {
                "where": "alertmanager",
                "silence": silence_id,
                "matchers": [str(m) for m in matchers],
                "until": (now + duration).isoformat(),
            }
            await self._audit.record("alert.silenced", actor, "", data)
        return SilenceMade(_remote(made))

    async def expire(self, silence_id: str, actor: str) -> SilenceEntry:
        """Ends it now: `#12` (or `12`) a local one, an Alertmanager id or its first 8+
        characters."""
        raw = silence_id.strip().lower()
        text = raw.lstrip("#")
        # `#12` or a short number is local; 8+ digits may begin an Alertmanager id too.
        if text.isdigit() and (raw.startswith("#") or len(text) < 8):
            found = [s for s in await read_silences(self._storage.db) if s.id == int(text)]
            if found and found[0].comment.startswith(MIRROR):
                text = found[0].comment.removeprefix(MIRROR)  # the mirror's own silence
            else:
                ended = await self._engine.unsilence(int(text), actor)
                if ended is None:
                    raise SilenceNotFound(f"no silence #{text} in force")
                return _local(ended)
        client = self._client()
        if client is None or not AM_ID.fullmatch(text):
            raise SilenceNotFound(f"no silence {text[:40]} in force")
        active = [s for s in await client.silences() if s.state == "active"]
        matches = [s for s in active if s.id.startswith(text)]
        if len(matches) != 1:
            what = "no" if not matches else "more than one"
            raise SilenceNotFound(f"{what} silence {text[:40]} in force in Alertmanager")
        silence = matches[0]
        if not await client.expire(silence.id):
            raise SilenceNotFound(f"no silence {silence.id} in Alertmanager")
        async with self._storage.transaction() as db:
            await db.execute(
                "UPDATE silences SET ended_by = ?, ends_at = ? WHERE comment = ?"
                " AND ended_by IS NULL",
                (actor, self._clock().isoformat(), MIRROR + silence.id),
            )
            data = {"where": "alertmanager", "silence": silence.id}
            await self._audit.record("alert.unsilenced", actor, "", data)
        return _remote(silence)

    async def active(self) -> tuple[list[SilenceEntry], str | None]:
        """Every silence in force, and why Alertmanager's could not be read (None if they
        could, or when there is no Alertmanager)."""
        local = [s for s in await self._engine.silences() if not s.comment.startswith(MIRROR)]
        entries = [_local(s) for s in local]
        client = self._client()
        if client is None:
            return entries, None
        try:
            remote = await self._sync(client)
        except AlertmanagerUnavailable as exc:
            return entries, str(exc)
        return [_remote(s) for s in remote] + entries, None

    async def sync(self) -> None:
        """Refresh the mirror rows from Alertmanager (nothing to do without one)."""
        client = self._client()
        if client is None:
            return
        try:
            await self._sync(client)
        except AlertmanagerUnavailable as exc:
            log.warning("silences not refreshed: %s", exc)

    async def _sync(self, client: AlertmanagerSilences) -> list[AmSilence]:
        active = [s for s in await client.silences() if s.state == "active"]
        now = self._clock()
        async with self._storage.transaction() as db:
            rows = await db.execute_fetchall(
                "SELECT id, comment FROM silences WHERE comment LIKE 'alertmanager:%'"
                " AND ended_by IS NULL AND ends_at > ?",
                (now.isoformat(),),
            )
            held = {str(r[1]).removeprefix(MIRROR): int(r[0]) for r in rows}
            for silence in active:
                await self._mirror(db, silence)
            gone = [row for am_id, row in held.items() if am_id not in {s.id for s in active}]
            for row in gone:  # expired or deleted in Alertmanager (amtool, the UI, a timer)
                await db.execute(
                    "UPDATE silences SET ended_by = 'alertmanager', ends_at = ? WHERE id = ?",
                    (now.isoformat(), row),
                )
        return sorted(active, key=lambda s: s.ends_at)

    async def _mirror(self, db: Connection, silence: AmSilence) -> None:
        """Insert or refresh the local row that makes opsgate honour this silence. Negative
        matchers (!=, !~) have no local form: Alertmanager alone applies those."""
        if any(not m.equal for m in silence.matchers):
            return
        matchers = json.dumps([[m.name, m.value, m.regex] for m in silence.matchers])
        comment = MIRROR + silence.id
        cursor = await db.execute(
            "UPDATE silences SET ends_at = ?, matchers = ? WHERE comment = ? AND ended_by IS NULL",
            (silence.ends_at.isoformat(), matchers, comment),
        )
        if cursor.rowcount == 0:
            await db.execute(
                "INSERT INTO silences (matchers, starts_at, ends_at, created_by, comment)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    matchers,
                    silence.starts_at.isoformat(),
                    silence.ends_at.isoformat(),
                    silence.created_by[:100],
                    comment,
                ),
            )
