"""Staged rollout plans: 5 -> 25 -> 50 -> 100, one step per interval, only while gates hold.

A plan is a row; `tick()` (run every few seconds by the bot) advances due plans and halts any
whose gates fail, dropping the flag back to the last step that was seen safe. Times are
absolute, so a plan survives restarts and resumes where it was. The clock is injectable so
tests can drive a plan through hours in milliseconds.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from config.flag_plans import MIN_PHASE as MIN_INTERVAL
from config.flag_plans import PlanDecl
from config.flag_plans import parse_duration as parse_duration_text
from services.flags.types import FlagError
from services.records.audit import AuditLog, utc_now
from services.records.storage import Row, Storage

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
class Phase:
    """One step of a plan: its percentage, how long it lasts, and what it must show to go on:
    an error ratio under `max_error_ratio`, a Prometheus query's value under `query_max`,
    and at least `min_evaluations` evaluations served while it lasts."""

    percent: float
    duration: timedelta
    max_error_ratio: float | None = None
    query: str | None = None
    query_max: float | None = None
    min_evaluations: int = 0

    @property
    def judged(self) -> bool:
        return self.max_error_ratio is not None or self.query is not None

    def to_json(self) -> dict[str, object]:
        return {
            "percent": self.percent,
            "duration_s": self.duration.total_seconds(),
            "max_error_ratio": self.max_error_ratio,
            "query": self.query,
            "query_max": self.query_max,
            "min_evaluations": self.min_evaluations,
        }

    @classmethod
    def from_json(cls, data: object, every: timedelta) -> Phase:
        if not isinstance(data, dict):  # a plan from before phases: a bare percentage
            return cls(float(data), every)  # type: ignore[arg-type]
        return cls(
            float(data["percent"]),
            timedelta(seconds=float(data["duration_s"])),
            data.get("max_error_ratio"),
            data.get("query"),
            data.get("query_max"),
            int(data.get("min_evaluations") or 0),
        )


@dataclass(frozen=True)
class Plan:
    id: int
    flag_key: str
    phases: tuple[Phase, ...]
    index: int  # the step now applied
    state: PlanState
    next_at: datetime | None
    reason: str

    @property
    def steps(self) -> tuple[float, ...]:
        return tuple(phase.percent for phase in self.phases)

    @property
    def every(self) -> timedelta:
        """The current phase's duration (every phase's, for a plan of equal steps)."""
        return self.phases[self.index].duration

    @property
    def equal_steps(self) -> bool:
        return len({p.duration for p in self.phases[:-1]}) <= 1 and not any(
            p.judged or p.min_evaluations for p in self.phases
        )

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


class PhaseCriteria(Protocol):
    """What a phase's own criteria read: the error ratio and a Prometheus query (a breach's
    reason, or None), and the evaluations served for a flag since start."""

    async def breach(self, flag_key: str, phase: Phase) -> str | None: ...

    def evaluations(self, flag_key: str) -> int: ...


class NoCriteria:
    async def breach(self, flag_key: str, phase: Phase) -> str | None:
        return None

    def evaluations(self, flag_key: str) -> int:
        return 0


class RolloutSetter(Protocol):
    async def set_rollout(self, key: str, percent: float, actor: str, note: str = "") -> object: ...


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `1h`, `2h30m`, `1d`: at least 10 s."""
    try:
        return parse_duration_text(text)
    except ValueError as exc:
        raise PlanError(str(exc)) from None


def check_steps(steps: Sequence[float]) -> tuple[float, ...]:
    if not 1 <= len(steps) <= MAX_STEPS:
        raise PlanError(f"a plan has 1 to {MAX_STEPS} steps")
    if any(b <= a for a, b in itertools.pairwise(steps)) or steps[0] <= 0:
        raise PlanError("plan steps must rise, e.g. 5,25,50,100")
    return tuple(steps)


def phases_from(declared: PlanDecl) -> tuple[Phase, ...]:
    """An ops file's plan as phases (the last one's duration is never waited for)."""
    return tuple(
        Phase(
            p.percent,
            parse_duration(p.duration) if p.duration else MIN_INTERVAL,
            p.max_error_ratio,
            p.query,
            p.query_max,
            p.min_evaluations,
        )
        for p in declared.phases
    )


def check_phases(phases: Sequence[Phase]) -> tuple[Phase, ...]:
    check_steps([phase.percent for phase in phases])
    if any(phase.duration < MIN_INTERVAL for phase in phases[:-1]):
        raise PlanError("a plan step lasts at least 10s")
    return tuple(phases)


class PlanService:
    def __init__(
        self,
        storage: Storage,
        audit: AuditLog,
        flags: RolloutSetter,
        gate: Gate,
        clock: Callable[[], datetime] = utc_now,
        criteria: PhaseCriteria | None = None,
    ) -> None:
        self._storage = storage
        self._audit = audit
        self._flags = flags
        self._gate = gate
        self._clock = clock
        self.criteria: PhaseCriteria = criteria or NoCriteria()
        # plan id -> (phase index, evaluations served when it began): min_evaluations counts
        # from there. In memory: after a restart a phase counts again from the restart.
        self._served_at_start: dict[int, tuple[int, int]] = {}

    async def start(self, key: str, steps: Sequence[float], every: timedelta, actor: str) -> Plan:
        """Apply the first step now; later ones follow every `every` while gates hold."""
        steps = check_steps(steps)
        return await self.start_phases(key, [Phase(step, every) for step in steps], actor)

    async def start_phases(self, key: str, phases: Sequence[Phase], actor: str) -> Plan:
        """Apply the first phase now; each next one once the current has lasted its duration
        with its criteria met, while the gates hold."""
        phases = check_phases(phases)
        if await self.current(key) is not None:
            raise PlanError(f"{key} already has a plan: pause, resume or abort it first")
        now = self._clock()
        await self._flags.set_rollout(key, phases[0].percent, actor, note="plan step 1")
        await self._storage.write(
            "INSERT INTO flag_plans (flag_key, steps, every_s, step_index, state, next_at,"
            " reason, created_by, created_at) VALUES (?, ?, ?, 0, 'active', ?, '', ?, ?)",
            (
                key,
                json.dumps([phase.to_json() for phase in phases]),
                phases[0].duration.total_seconds(),
                (now + phases[0].duration).isoformat(),
                actor,
                now.isoformat(),
            ),
        )
        data = {"steps": [p.percent for p in phases], "phases": [p.to_json() for p in phases]}
        await self._audit.record("flag.plan.started", actor, key, data)
        plan = await self.current(key)
        assert plan is not None
        self._served_at_start[plan.id] = (0, self.criteria.evaluations(key))
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
            phase = plan.phases[plan.index]
            if verdict.ok and (breach := await self.criteria.breach(plan.flag_key, phase)):
                verdict = GateVerdict(False, breach)
            due = plan.next_at is not None and self._clock() >= plan.next_at
            served = self.served_in_phase(plan)  # every check: the phase's count starts early
            if not verdict.ok:
                events.append(await self._halt(plan, verdict.reason))
            elif due and served >= phase.min_evaluations:
                events.append(await self._advance(plan))
        return events

    def served_in_phase(self, plan: Plan) -> int:
        """Evaluations served since the current phase began (or since a restart)."""
        served = self.criteria.evaluations(plan.flag_key)
        index, at_start = self._served_at_start.get(plan.id, (-1, 0))
        if index != plan.index or served < at_start:  # a new phase, or counts since restart
            self._served_at_start[plan.id] = (plan.index, served)
            at_start = served
        return served - at_start

    async def _advance(self, plan: Plan) -> PlanEvent:
        index = plan.index + 1
        if index >= len(plan.steps):
            done = await self._update(plan, PlanState.DONE, None, plan.index, "", "opsgate")
            return PlanEvent(done, "done", plan.percent)
        note = f"plan step {index + 1}"
        await self._flags.set_rollout(plan.flag_key, plan.steps[index], "opsgate", note=note)
        self._served_at_start[plan.id] = (index, self.criteria.evaluations(plan.flag_key))
        last = index == len(plan.steps) - 1
        state = PlanState.DONE if last else PlanState.ACTIVE
        next_at = None if last else self._clock() + plan.phases[index].duration
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
        return Plan(plan.id, plan.flag_key, plan.phases, index, state, next_at, reason)


def _plan(row: Row) -> Plan:
    next_at = row["next_at"]
    every = timedelta(seconds=row["every_s"])
    return Plan(
        id=row["id"],
        flag_key=row["flag_key"],
        phases=tuple(Phase.from_json(item, every) for item in json.loads(row["steps"])),
        index=row["step_index"],
        state=PlanState(row["state"]),
        next_at=datetime.fromisoformat(next_at) if next_at else None,
        reason=row["reason"],
    )
