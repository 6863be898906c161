"""Four eyes for rollouts that reach many users (as Unleash's change requests): with
`[flags.KEY] four_eyes_above = 25`, a change that takes the flag above 25% — a rollout, or a
plan whose steps go above it — is a request until someone else with the flags role approves
it. The request remembers the flag's version: if the flag moved meanwhile, approving it is
refused as stale (the approver would be approving something they did not see).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from config.opsfile import OpsConfig
from services.flags.plans import Phase, PlanService
from services.flags.store import FlagStore
from services.flags.types import FlagError, StaleFlag, UnknownFlag
from services.records.audit import AuditLog, utc_now
from services.records.storage import Storage


class FourEyesRefused(FlagError):
    """An approval that cannot be given; the text is fit for chat."""


@dataclass(frozen=True)
class ChangeRequest:
    id: int
    flag_key: str
    change: dict[str, Any]  # {"percent": 50} or {"phases": [...]}
    from_version: int
    requested_by: str
    state: str  # pending, approved, rejected, stale
    decided_by: str | None
    chat_id: int | None
    message_id: int | None

    @property
    def summary(self) -> str:
        if "percent" in self.change:
            return f"rollout to {self.change['percent']:g}%"
        steps = " → ".join(f"{p['percent']:g}" for p in self.change["phases"])
        return f"plan {steps}"


class FourEyes:
    def __init__(
        self,
        storage: Storage,
        audit: AuditLog,
        flags: FlagStore,
        plans: PlanService,
        ops: Callable[[], OpsConfig],
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._storage = storage
        self._audit = audit
        self._flags = flags
        self._plans = plans
        self._ops = ops
        self._clock = clock

    def threshold(self, key: str) -> float | None:
        declared = self._ops().flags.get(key)
        return declared.four_eyes_above if declared is not None else None

    def needs_approval(self, key: str, highest_percent: float) -> bool:
        limit = self.threshold(key)
        return limit is not None and highest_percent > limit

    async def request(self, key: str, change: dict[str, Any], actor: str) -> ChangeRequest:
        """Record the change as waiting for a second person; nothing is applied yet."""
        flag = await self._flags.get(key)
        if flag is None:
            raise UnknownFlag(f"no flag {key!r}")
        result = await self._storage.write(
            "INSERT INTO flag_change_requests (flag_key, change, from_version, requested_by,"
            " requested_at) VALUES (?, ?, ?, ?, ?)",
            (key, json.dumps(change), flag.version, actor, self._clock().isoformat()),
        )
        assert result.lastrowid is not None
        data = {**change, "id": result.lastrowid}
        await self._audit.record("flag.change_requested", actor, key, data)
        return await self.get(result.lastrowid)

    async def set_message(self, request_id: int, chat_id: int, message_id: int) -> None:
        await self._storage.write(
            "UPDATE flag_change_requests SET chat_id = ?, message_id = ? WHERE id = ?",
            (chat_id, message_id, request_id),
        )

    async def get(self, request_id: int) -> ChangeRequest:
        rows = await self._storage.db.execute_fetchall(
            "SELECT id, flag_key, change, from_version, requested_by, state, decided_by,"
            " chat_id, message_id FROM flag_change_requests WHERE id = ?",
            (request_id,),
        )
        if not rows:
            raise FourEyesRefused("This request is no longer valid.")
        row = next(iter(rows))
        return ChangeRequest(
            row[0], row[1], json.loads(row[2]), row[3], row[4], row[5], row[6], row[7], row[8]
        )

    async def approve(self, request_id: int, actor: str) -> ChangeRequest:
        """Apply the change as the approver; refused for the requester, a decided request,
        or a flag that moved since the request."""
        request = await self._open(request_id, actor)
        try:
            if "percent" in request.change:
                await self._flags.set_rollout(
                    request.flag_key,
                    float(request.change["percent"]),
                    actor,
                    note=f"four eyes: asked by {request.requested_by}",
                    if_version=request.from_version,
                )
            else:
                flag = await self._flags.get(request.flag_key)
                if flag is None or flag.version != request.from_version:
                    raise StaleFlag(f"{request.flag_key} has changed since it was asked")
                phases = [Phase.from_json(p, timedelta(0)) for p in request.change["phases"]]
                await self._plans.start_phases(request.flag_key, phases, actor)
        except StaleFlag:
            await self._decide(request, "stale", actor)
            raise FourEyesRefused(
                f"{request.flag_key} changed since this was asked: ask again."
            ) from None
        return await self._decide(request, "approved", actor)

    async def reject(self, request_id: int, actor: str) -> ChangeRequest:
        request = await self.get(request_id)
        if request.state != "pending":
            raise FourEyesRefused("This request is no longer valid.")
        return await self._decide(request, "rejected", actor)

    async def _open(self, request_id: int, actor: str) -> ChangeRequest:
        request = await self.get(request_id)
        if request.state != "pending":
            raise FourEyesRefused("This request is no longer valid.")
        if request.requested_by == actor:
            raise FourEyesRefused("You asked for this change: someone else approves it.")
        return request

    async def _decide(self, request: ChangeRequest, state: str, actor: str) -> ChangeRequest:
        await self._storage.write(
            "UPDATE flag_change_requests SET state = ?, decided_by = ?, decided_at = ?"
            " WHERE id = ? AND state = 'pending'",
            (state, actor, self._clock().isoformat(), request.id),
        )
        data = {**request.change, "id": request.id, "requested_by": request.requested_by}
        await self._audit.record(f"flag.change_{state}", actor, request.flag_key, data)
        return await self.get(request.id)
