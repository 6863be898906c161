"""DORA figures from opsgate's own history, per service and overall, over a window.

    deployment frequency  successful deploys per day
    lead time             request -> success of a deploy (median seconds)
    change failure rate   deploys that failed after their switch (rolled back by opsgate, or
                          a rollback that failed too), plus successful ones a later /rollback
                          undid, over all deploys that switched
    time to restore       a failed change's failure -> its service healthy again (median
                          seconds): the automatic rollback's end, or the /rollback's success

Dry runs, drills and cancelled requests are not changes and do not count.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.deploy.model import Deployment, DeploymentKind, DeploymentState, from_row
from services.records.audit import utc_now
from services.records.storage import Storage

S = DeploymentState
SWITCHED_ENDS = frozenset({S.SUCCEEDED, S.ROLLED_BACK, S.ROLLBACK_FAILED})


@dataclass(frozen=True)
class Dora:
    service: str  # "all" for every service together
    window_days: float
    deploys: int
    failed_changes: int
    deployments_per_day: float
    lead_time_s: float | None
    change_failure_rate: float | None
    time_to_restore_s: float | None


@dataclass(frozen=True)
class DayCount:
    day: str  # YYYY-MM-DD, UTC
    succeeded: int
    failed: int
    rolled_back: int  # /rollback deployments that day


@dataclass(frozen=True)
class Target:
    """A DORA figure's goal: the figure is good while it stays below `limit`."""

    name: str
    field: str  # the Dora attribute it judges
    limit: float
    text: str  # the limit as people say it


# The seed's targets (elite performers in DORA's terms).
TARGETS = (
    Target("change failure rate", "change_failure_rate", 0.05, "< 5%"),
    Target("time to restore", "time_to_restore_s", 300.0, "< 5 min"),
    Target("lead time", "lead_time_s", 7200.0, "< 2 h"),
)


def meets(target: Target, figure: Dora) -> bool | None:
    """Whether the figure is within the target; None when there is nothing to judge yet."""
    value = getattr(figure, target.field)
    return None if value is None else float(value) < target.limit


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


class DoraReport:
    def __init__(self, storage: Storage, clock: Callable[[], datetime] = utc_now) -> None:
        self._storage = storage
        self._clock = clock

    async def _rows(self, since: datetime) -> list[Deployment]:

        rows = await self._storage.db.execute_fetchall(
            "SELECT * FROM deployments WHERE created_at >= ? AND dry_run = 0 ORDER BY id",
            (since.isoformat(),),
        )
        return [from_row(row) for row in rows]

    async def _failed_at(self, deployment_id: int) -> datetime | None:
        rows = list(
            # Compared as text: SQLite reads the JSON number as an integer, PostgreSQL as text.
            await self._storage.db.execute_fetchall(
                "SELECT at FROM events WHERE kind = 'deploy.failed'"
                " AND CAST(json_extract(data, '$.deployment') AS TEXT)"
                " = CAST(? AS TEXT) ORDER BY id LIMIT 1",
                (deployment_id,),
            )
        )
        return datetime.fromisoformat(rows[0][0]) if rows else None

    async def figures(self, window_days: float = 30) -> list[Dora]:
        """One Dora per service that deployed in the window, then "all"."""
        since = self._clock() - timedelta(days=window_days)
        rows = await self._rows(since)
        services = sorted({d.service for d in rows if d.kind is DeploymentKind.DEPLOY})
        result = [
            await self._dora(s, [d for d in rows if d.service == s], window_days) for s in services
        ]
        result.append(await self._dora("all", rows, window_days))
        return result

    async def _dora(self, service: str, rows: list[Deployment], window_days: float) -> Dora:
        deploys = [d for d in rows if d.kind is DeploymentKind.DEPLOY and d.state in SWITCHED_ENDS]
        succeeded = [d for d in deploys if d.state is S.SUCCEEDED]
        lead = [(d.finished_at - d.created_at).total_seconds() for d in succeeded if d.finished_at]
        failed = [d for d in deploys if d.state in (S.ROLLED_BACK, S.ROLLBACK_FAILED)]
        restore: list[float] = []
        for d in failed:
            at = await self._failed_at(d.id)
            if d.state is S.ROLLED_BACK and at and d.finished_at:
                restore.append((d.finished_at - at).total_seconds())
        # A success undone later by hand: each successful /rollback undoes the one deploy it
        # left, the newest success of that version before it, and counts once.
        rollbacks = [
            d for d in rows if d.kind is DeploymentKind.ROLLBACK and d.state is S.SUCCEEDED
        ]
        undone: list[Deployment] = []
        for rollback in rollbacks:
            left = [
                d
                for d in succeeded
                if d.service == rollback.service
                and d.id < rollback.id
                and d.version == rollback.previous_version
            ]
            if left and left[-1] not in undone and rollback.finished_at:
                undone.append(left[-1])
                restore.append((rollback.finished_at - rollback.created_at).total_seconds())
        failures = len(failed) + len(undone)
        return Dora(
            service=service,
            window_days=window_days,
            deploys=len(deploys),
            failed_changes=failures,
            deployments_per_day=len(succeeded) / window_days,
            lead_time_s=_median(lead),
            change_failure_rate=failures / len(deploys) if deploys else None,
            time_to_restore_s=_median(restore),
        )

    async def per_day(self, days: int = 14) -> list[DayCount]:
        """Deploys per UTC day for the chart: succeeded, failed (rolled back), rollbacks."""
        today = self._clock().date()
        since = datetime.combine(today - timedelta(days=days - 1), datetime.min.time())
        since = since.replace(tzinfo=self._clock().tzinfo)
        rows = await self._rows(since)
        counts = {
            (today - timedelta(days=n)).isoformat(): [0, 0, 0] for n in range(days - 1, -1, -1)
        }
        for d in rows:
            day = d.created_at.date().isoformat()
            if day not in counts:
                continue
            if d.kind is DeploymentKind.DEPLOY and d.state is S.SUCCEEDED:
                counts[day][0] += 1
            elif d.kind is DeploymentKind.DEPLOY and d.state in (S.ROLLED_BACK, S.ROLLBACK_FAILED):
                counts[day][1] += 1
            elif d.kind is DeploymentKind.ROLLBACK and d.state is S.SUCCEEDED:
                counts[day][2] += 1
        return [DayCount(day, *values) for day, values in counts.items()]
