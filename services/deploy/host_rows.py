"""Where each host of a fleet deployment is, as rows: written before the host changes, so
after a crash opsgate knows which hosts switched, which were verified and what ran before.

    pending -> switching -> healthy
                         -> failed
    switching | healthy | failed -> rolling_back -> rolled_back | rollback_failed

Every move is audited (`deploy.host`) beside the deployment's own events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from services.records.audit import AuditLog, utc_now
from services.records.storage import Storage

log = logging.getLogger(__name__)


class HostState(StrEnum):
    PENDING = "pending"
    SWITCHING = "switching"
    HEALTHY = "healthy"
    FAILED = "failed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"


H = HostState
# The host runs (or may run) the deployment's release: a way back must touch it.
SWITCHED = frozenset({H.SWITCHING, H.HEALTHY, H.FAILED, H.ROLLING_BACK})


@dataclass(frozen=True)
class HostRow:
    host: str
    position: int  # in rollout order
    batch: int  # 0-based
    state: HostState
    previous_version: str | None
    error: str


@dataclass(frozen=True)
class HoldAt:
    """Crash drills: the `count`-th host move into `state` waits there until the kill."""

    state: HostState
    count: int

    @classmethod
    def parse(cls, text: str) -> HoldAt | None:
        """ "host.switching.2" -> the second host that starts switching; else None."""
        parts = text.split(".")
        if len(parts) != 3 or parts[0] != "host" or not parts[2].isdigit():
            return None
        return cls(HostState(parts[1]), int(parts[2]))


class HostRows:
    def __init__(self, storage: Storage, audit: AuditLog) -> None:
        self._storage = storage
        self._audit = audit
        self.hold_at: HoldAt | None = None
        self._seen = 0

    async def plan(self, deployment_id: int, batches: Sequence[Sequence[str]]) -> list[HostRow]:
        """The rollout's order, once; a deployment resumed after a crash keeps its rows."""
        existing = await self.rows(deployment_id)
        if existing:
            return existing
        now = utc_now().isoformat()
        params = [
            (deployment_id, host, position, batch, now)
            for position, (batch, host) in enumerate(
                (b, h) for b, hosts in enumerate(batches) for h in hosts
            )
        ]
        async with self._storage.transaction() as db:
            await db.executemany(
                "INSERT INTO deployment_hosts (deployment_id, host, position, batch, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                params,
            )
        return await self.rows(deployment_id)

    async def rows(self, deployment_id: int) -> list[HostRow]:
        rows = await self._storage.db.execute_fetchall(
            "SELECT host, position, batch, state, previous_version, error"
            " FROM deployment_hosts WHERE deployment_id = ? ORDER BY position",
            (deployment_id,),
        )
        return [
            HostRow(
                r["host"],
                r["position"],
                r["batch"],
                H(r["state"]),
                r["previous_version"],
                r["error"],
            )
            for r in rows
        ]

    async def set_previous(self, deployment_id: int, host: str, version: str | None) -> None:
        await self._storage.write(
            "UPDATE deployment_hosts SET previous_version = ? WHERE deployment_id = ? AND host = ?",
            (version, deployment_id, host),
        )

    async def move(
        self, deployment_id: int, service: str, host: str, state: HostState, error: str = ""
    ) -> None:
        now = utc_now().isoformat()
        async with self._storage.transaction() as db:
            await db.execute(
                "UPDATE deployment_hosts SET state = ?, error = ?, updated_at = ?,"
                " started_at = coalesce(started_at, ?) WHERE deployment_id = ? AND host = ?",
                (state.value, error[:2000], now, now, deployment_id, host),
            )
            data = {"deployment": deployment_id, "host": host, "to": state.value, "note": error}
            await self._audit.record("deploy.host", "opsgate", service, data)
        hold = self.hold_at
        if hold is not None and hold.state is state:
            self._seen += 1
            if self._seen == hold.count:
                log.warning(
                    "deployment #%s holds at %s %s (OPSGATE_HOLD_AT)", deployment_id, host, state
                )
                await asyncio.Event().wait()


def grid(rows: Sequence[HostRow]) -> str:
    """One line a person reads at a glance: ✅ web1 web2 · 🔄 web3 · ⏳ 3 more."""
    groups: dict[str, list[str]] = {}
    icons = {
        H.HEALTHY: "✅",
        H.SWITCHING: "🔄",
        H.FAILED: "❌",
        H.ROLLING_BACK: "↩️",
        H.ROLLED_BACK: "⏪",
        H.ROLLBACK_FAILED: "🆘",
    }
    pending = 0
    for row in rows:
        if row.state is H.PENDING:
            pending += 1
            continue
        groups.setdefault(icons[row.state], []).append(row.host)
    parts = [f"{icon} {' '.join(hosts)}" for icon, hosts in groups.items()]
    if pending:
        parts.append(f"⏳ {pending} more")
    return " · ".join(parts)
