"""Staged rollout plans: 5 -> 25 -> 50 -> 100, one step per interval, only while gates hold.

A plan is a row; `tick()` (run every few seconds by the bot) advances due plans and halts any
whose gates fail, dropping the flag back to the last step that was seen safe. Times are
absolute, so a plan survives restarts and resumes where it was. The clock is injectable so
tests can drive a plan through hours in milliseconds.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

import aiosqlite

from services.flags.types import FlagError
from services.records.audit import AuditLog, utc_now
from services.records.storage import Storage

_DURATION_RE = re.compile(r"(?:(\d{1,3})d)?(?:(\d{1,3})h)?(?:(\d{1,4})m)?(?:(\d{1,5})s)?")
MIN_INTERVAL = timedelta(seconds=10)
MAX_STEPS = 20


class PlanState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    DONE = "done"
    HALTED = "halted"
    ABORTED = "aborted"


class PlanError(FlagError, ValueError):
    """A plan command that cannot be carried out; the text is fit for chat."""

    kind = "invalid"


@dataclass(frozen=True)
class Plan:
    id: int
    flag_key: str
    steps: tuple[float, ...]
    every: timedelta
    index: int  # the step now applied
    state: PlanState
    next_at: datetime | None
    reason: str

    @property
    def percent(self) -> float:
        return self.steps[self.index]

    @property
    def safe_percent(self) -> float:
        """The last step that held its gates for a whole interval (0 before the first)."""
        return self.steps[self.index - 1] if self.index > 0 else 0.0


@dataclass(frozen=True)
class PlanEvent:
    plan: Plan
    kind: str  # advanced | done | halted
    percent: float
    reason: str = ""


@dataclass(frozen=True)
class GateVerdict:
    ok: bool
    reason: str = ""


Gate = Callable[[str], Awaitable[GateVerdict]]


class RolloutSetter(Protocol):
    async def set_rollout(self, key: str, percent: float, actor: str, note: str = "") -> object: ...


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `1h`, `2h30m`, `1d`: at least 10 s."""
    match = _DURATION_RE.fullmatch(text.strip().lower())
    if not text.strip() or match is None or not any(match.groups()):
        raise PlanError(f"not a duration: {text[:20]!r} (e.g. 30m, 1h, 2h30m)")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    value = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if value < MIN_INTERVAL:
        raise PlanError("a plan step lasts at least 10s")
    return value


def check_steps(steps: Sequence[float]) -> tuple[float, ...]:
    if not 1 <= len(steps) <= MAX_STEPS:
        raise PlanError(f"a plan has 1 to {MAX_STEPS} steps")
    if any(b <= a for a, b in itertools.pairwise(steps)) or steps[0] <= 0:
        raise PlanError("plan steps must rise, e.g. 5,25,50,100")
    return tuple(steps)


class PlanService:
    def __init__(
        self,
        storage: Storage,
        audit: AuditLog,
        flags: RolloutSetter,
        gate: Gate,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._storage = storage
        self._audit = audit
        self._flags = flags
        self._gate = gate
        self._clock = clock

    async def start(self, key: str, steps: Sequence[float], every: timedelta, actor: str) -> Plan:
        """Apply the first step now; later ones follow every `every` while gates hold."""
        steps = check_steps(steps)
        if await self.current(key) is not None:
            raise PlanError(f"{key} already has a plan: pause, resume or abort it first")
        now = self._clock()
        await self._flags.set_rollout(key, steps[0], actor, note="plan step 1")
        await self._storage.write(
            "INSERT INTO flag_plans (flag_key, steps, every_s, step_index, state, next_at,"
            " reason, created_by, created_at) VALUES (?, ?, ?, 0, 'active', ?, '', ?, ?)",
            (
                key,
                json.dumps(steps),
                every.total_seconds(),
                (now + every).isoformat(),
                actor,
                now.isoformat(),
            ),
        )
        await self._audit.record("flag.plan.started", actor, key, {"steps": list(steps)})
        plan = await self.current(key)
        assert plan is not None
        return plan

    async def current(self, key: str) -> Plan | None:
        """The flag's plan that is still active or paused."""
        rows = await self._storage.db.execute_fetchall(
            "SELECT * FROM flag_plans WHERE flag_key = ? AND state IN ('active', 'paused')"
            " ORDER BY id DESC LIMIT 1",
            (key,),
        )
        return _plan(next(iter(rows))) if rows else None

    async def active(self) -> list[Plan]:
        rows = await self._storage.db.execute_fetchall(
            "SELECT * FROM flag_plans WHERE state = 'active' ORDER BY id"
        )
        return [_plan(row) for row in rows]

    async def latest(self, key: str) -> Plan | None:
        rows = await self._storage.db.execute_fetchall(
            "SELECT * FROM flag_plans WHERE flag_key = ? ORDER BY id DESC LIMIT 1", (key,)
        )
        return _plan(next(iter(rows))) if rows else None

    async def pause(self, key: str, actor: str) -> Plan:
        plan = await self._require(key, PlanState.ACTIVE)
        return await self._update(plan, PlanState.PAUSED, None, plan.index, "paused", actor)

    async def resume(self, key: str, actor: str) -> Plan:
        plan = await self._require(key, PlanState.PAUSED)
        next_at = self._clock() + plan.every
        return await self._update(plan, PlanState.ACTIVE, next_at, plan.index, "", actor)

    async def abort(self, key: str, actor: str) -> Plan:
        """Stop the plan and take the flag back to 0%."""
        plan = await self.current(key)
        if plan is None:
            raise PlanError(f"{key} has no plan to abort")
        await self._flags.set_rollout(key, 0.0, actor, note="plan aborted")
        return await self._update(plan, PlanState.ABORTED, None, plan.index, "aborted", actor)

    async def tick(self) -> list[PlanEvent]:
        """Check every active plan's gates; advance those that are due."""
        events: list[PlanEvent] = []
        for plan in await self.active():
            verdict = await self._gate(plan.flag_key)
            if not verdict.ok:
                events.append(await self._halt(plan, verdict.reason))
            elif plan.next_at is not None and self._clock() >= plan.next_at:
                events.append(await self._advance(plan))
        return events

    async def _advance(self, plan: Plan) -> PlanEvent:
        index = plan.index + 1
        if index >= len(plan.steps):
            done = await self._update(plan, PlanState.DONE, None, plan.index, "", "opsgate")
            return PlanEvent(done, "done", plan.percent)
        note = f"plan step {index + 1}"
        await self._flags.set_rollout(plan.flag_key, plan.steps[index], "opsgate", note=note)
        last = index == len(plan.steps) - 1
        state = PlanState.DONE if last else PlanState.ACTIVE
        next_at = None if last else self._clock() + plan.every
        moved = await self._update(plan, state, next_at, index, "", "opsgate")
        return PlanEvent(moved, "done" if last else "advanced", plan.steps[index])

    async def _halt(self, plan: Plan, reason: str) -> PlanEvent:
        safe = plan.safe_percent
        await self._flags.set_rollout(plan.flag_key, safe, "opsgate", note=f"halted: {reason}")
        halted = await self._update(plan, PlanState.HALTED, None, plan.index, reason, "opsgate")
        return PlanEvent(halted, "halted", safe, reason)

    async def _require(self, key: str, state: PlanState) -> Plan:
        plan = await self.current(key)
        if plan is None or plan.state is not state:
            raise PlanError(f"{key} has no {state.value} plan")
        return plan

    async def _update(
        self,
        plan: Plan,
        state: PlanState,
        next_at: datetime | None,
        index: int,
        reason: str,
        actor: str,
    ) -> Plan:
        await self._storage.write(
            "UPDATE flag_plans SET state = ?, next_at = ?, step_index = ?, reason = ? WHERE id = ?",
            (state.value, next_at.isoformat() if next_at else None, index, reason, plan.id),
        )
        data = {"state": state.value, "percent": plan.steps[index], "reason": reason}
        await self._audit.record(f"flag.plan.{state.value}", actor, plan.flag_key, data)
        return Plan(plan.id, plan.flag_key, plan.steps, plan.every, index, state, next_at, reason)


def _plan(row: aiosqlite.Row) -> Plan:
    next_at = row["next_at"]
    return Plan(
        id=row["id"],
        flag_key=row["flag_key"],
        steps=tuple(json.loads(row["steps"])),
        every=timedelta(seconds=row["every_s"]),
        index=row["step_index"],
        state=PlanState(row["state"]),
        next_at=datetime.fromisoformat(next_at) if next_at else None,
        reason=row["reason"],
    )
