"""The long watch: hours to days of watching after a deploy, as rows checked in the background.

A deploy whose `watch_s` is over its service's `background_watch_after_s` (10 min unless set)
ends `succeeded` once verified; its watch goes on as a row of `long_watches`, read every
`watch_interval_s` by a task of the services' own (start() / stop()) with the checks of the
in-pipeline watch (services/deploy/watch.py). The row keeps the bad readings in a row, so a
restarted opsgate resumes each watch where it stood (the error-rate baseline is read again).
A watch ends:
    clean       its window passed without a breach
    breached    a check tripped: the release is marked bad and rolled back through the front
                door, to the release it replaced (the rollback's card in the deploys chat)
    superseded  another deploy or rollback of the service in that environment switched
    stopped     the service or its deploy section left the ops file
and the listener (bot/) tells the deploys chat, under the deploy's card, how it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from config.inventory import DeployConfig
from services.deploy.deployments import Deployments
from services.deploy.errors import StepFailed
from services.deploy.model import BEFORE_SWITCH, Deployment, DeploymentState
from services.deploy.watch import Watch
from services.records.audit import AuditLog, utc_now
from services.records.storage import Row, Storage

log = logging.getLogger(__name__)

LONG_WATCH_AFTER_S = 600.0  # a watch longer than this runs in the background
NOT_A_SWITCH = BEFORE_SWITCH | {DeploymentState.CANCELLED, DeploymentState.FAILED}


@dataclass(frozen=True)
class LongWatch:
    deployment_id: int
    service: str
    environment: str
    host: str
    version: str
    previous_version: str | None
    restarts_before: int | None
    started_at: datetime
    ends_at: datetime
    state: str = "watching"  # watching | clean | breached | superseded | stopped
    readings: int = 0
    streaks: str = "{}"  # JSON: condition -> bad readings in a row
    last_seen: str = ""
    note: str = ""
    rollback_id: int | None = None


# (service, host, restarts before) -> the watch's checks; None: the service cannot be watched.
Watcher = Callable[[str, str, int | None], Awaitable[Watch | None]]
# (the watch, why) -> the rollback deployment's id; raises when the front door refuses.
RollBack = Callable[[LongWatch, str], Awaitable[int]]


class LongWatchListener(Protocol):
    async def long_watch_ended(self, watch: LongWatch, deployment: Deployment) -> None:
        """Tell the deploys chat how the watch of `deployment` ended."""


class LongWatches:
    def __init__(
        self,
        storage: Storage,
        deployments: Deployments,
        audit: AuditLog,
        config: Callable[[str], DeployConfig | None],  # a service's deploy section, if any
        poll_s: float = 1.0,
    ) -> None:
        self._storage, self._deployments, self._audit = storage, deployments, audit
        self._config = config
        self._poll_s = poll_s
        self.watcher: Watcher | None = None  # set by the composition root
        self.roll_back: RollBack | None = None
        self.listener: LongWatchListener | None = None
        self._watches: dict[int, Watch] = {}  # live checks per deployment (not persisted)
        self._due: dict[int, float] = {}  # deployment -> loop time of its next reading
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def is_long(deploy: DeployConfig) -> bool:
        return deploy.watch_s > deploy.background_watch_after_s

    async def begin(
        self,
        deployment: Deployment,
        host: str,
        watch_s: float,
        restarts: int | None,
        previous: str | None,
    ) -> datetime:
        """Start watching `deployment` in the background; returns when the watch ends."""
        now = utc_now()
        ends = now + timedelta(seconds=watch_s)
        await self._storage.write(
            "INSERT INTO long_watches (deployment_id, service, environment, host, version,"
            " previous_version, restarts_before, started_at, ends_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                deployment.id,
                deployment.service,
                deployment.environment,
                host,
                deployment.version,
                previous,
                restarts,
                now.isoformat(),
                ends.isoformat(),
                now.isoformat(),
            ),
        )
        return ends

    async def get(self, deployment_id: int) -> LongWatch | None:
        rows = await self._storage.db.execute_fetchall(
            "SELECT * FROM long_watches WHERE deployment_id = ?", (deployment_id,)
        )
        return next((_from_row(row) for row in rows), None)

    async def watching(self) -> list[LongWatch]:
        rows = await self._storage.db.execute_fetchall(
            "SELECT * FROM long_watches WHERE state = 'watching' ORDER BY deployment_id"
        )
        return [_from_row(row) for row in rows]

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="long-watches")

    async def stop(self) -> None:
        """Stop reading; the rows stay `watching` for the next run to resume."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._watches.clear()
        self._due.clear()

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # one bad round must not end every watch
                log.exception("long watches: a round failed")
            await asyncio.sleep(self._poll_s)

    async def tick(self) -> None:
        """Read every watch that is due; end those whose window passed."""
        now = asyncio.get_running_loop().time()
        for row in await self.watching():
            if self._due.get(row.deployment_id, 0.0) <= now:
                await self._read(row)

    async def _read(self, row: LongWatch) -> None:
        deploy = self._config(row.service)
        if deploy is None:
            await self._end(row, "stopped", f"{row.service} has no deploy section any more")
            return
        if (newer := await self._superseded_by(row)) is not None:
            await self._end(row, "superseded", f"#{newer.id} ({newer.kind}) switched since")
            return
        if utc_now() >= row.ends_at:
            await self._end(row, "clean", f"no breach in {row.readings} reading(s)")
            return
        interval = deploy.watch_interval_s
        self._due[row.deployment_id] = asyncio.get_running_loop().time() + interval
        watch = await self._watch(row)
        if watch is None:
            await self._end(row, "stopped", f"{row.service} can no longer be watched")
            return
        try:
            seen = await watch.reading()
        except StepFailed as exc:
            await self._breach(row, str(exc))
            return
        streaks = json.dumps({k: s.count for k, s in watch.streaks.items()})
        await self._storage.write(
            "UPDATE long_watches SET readings = readings + 1, streaks = ?, last_seen = ?,"
            " updated_at = ? WHERE deployment_id = ? AND state = 'watching'",
            (streaks, seen[:500], utc_now().isoformat(), row.deployment_id),
        )

    async def _watch(self, row: LongWatch) -> Watch | None:
        watch = self._watches.get(row.deployment_id)
        if watch is None and self.watcher is not None:
            watch = await self.watcher(row.service, row.host, row.restarts_before)
            if watch is None:
                return None
            for name, count in json.loads(row.streaks).items():  # where the last run stood
                if name in watch.streaks:
                    watch.streaks[name].count = int(count)
            await watch.baseline()
            self._watches[row.deployment_id] = watch
        return watch

    async def _superseded_by(self, row: LongWatch) -> Deployment | None:
        for other in await self._deployments.history(row.service, limit=10):
            if (
                other.id > row.deployment_id
                and other.environment == row.environment
                and other.state not in NOT_A_SWITCH
            ):
                return other
        return None

    async def _breach(self, row: LongWatch, why: str) -> None:
        rollback_id = None
        note = why
        if self.roll_back is not None:
            try:
                rollback_id = await self.roll_back(row, why)
            except Exception as exc:  # told in the chat: a person must act
                log.warning("long watch of #%s: no rollback: %s", row.deployment_id, exc)
                note = f"{why} The rollback could not start: {exc}"
        await self._end(row, "breached", note, rollback_id)

    async def _end(
        self, row: LongWatch, state: str, note: str, rollback_id: int | None = None
    ) -> None:
        result = await self._storage.write(
            "UPDATE long_watches SET state = ?, note = ?, rollback_id = ?, updated_at = ?"
            " WHERE deployment_id = ? AND state = 'watching'",
            (state, note[:1000], rollback_id, utc_now().isoformat(), row.deployment_id),
        )
        self._watches.pop(row.deployment_id, None)
        self._due.pop(row.deployment_id, None)
        if result.rowcount == 0:
            return  # ended already, elsewhere
        await self._audit.record(
            f"deployment.long_watch_{state}",
            actor="opsgate",
            subject=f"deployment:{row.deployment_id}",
            data={"service": row.service, "version": row.version, "note": note},
        )
        log.info("long watch of #%s ended %s: %s", row.deployment_id, state, note)
        ended = await self.get(row.deployment_id)
        if self.listener is not None and ended is not None:
            deployment = await self._deployments.get(row.deployment_id)
            try:
                await self.listener.long_watch_ended(ended, deployment)
            except Exception:  # the row and the audit tell it; the chat may be down
                log.exception("long watch of #%s: the chat was not told", row.deployment_id)


def _from_row(row: Row) -> LongWatch:
    return LongWatch(
        deployment_id=row["deployment_id"],
        service=row["service"],
        environment=row["environment"],
        host=row["host"],
        version=row["version"],
        previous_version=row["previous_version"],
        restarts_before=row["restarts_before"],
        started_at=datetime.fromisoformat(row["started_at"]),
        ends_at=datetime.fromisoformat(row["ends_at"]),
        state=row["state"],
        readings=row["readings"],
        streaks=row["streaks"],
        last_seen=row["last_seen"],
        note=row["note"],
        rollback_id=row["rollback_id"],
    )
