"""Staged plans driven by a controllable clock and a gate the test opens and closes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.flags.plans import (
    GateVerdict,
    Phase,
    PlanError,
    PlanService,
    PlanState,
    parse_duration,
)
from services.records.audit import AuditLog
from services.records.storage import Storage


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class Rollouts:
    """Records what the plan set, as the flag store would apply it."""

    def __init__(self) -> None:
        self.percent: dict[str, float] = {}
        self.notes: list[str] = []

    async def set_rollout(self, key: str, percent: float, actor: str, note: str = "") -> object:
        self.percent[key] = percent
        self.notes.append(note)
        return None


class Gate:
    def __init__(self) -> None:
        self.verdict = GateVerdict(True)
        self.asked: list[str] = []

    async def __call__(self, key: str) -> GateVerdict:
        self.asked.append(key)
        return self.verdict


@pytest.fixture
async def storage(tmp_path: Path, database: str) -> AsyncIterator[Storage]:
    async with Storage(database) as opened:
        yield opened


def service(storage: Storage, rollouts: Rollouts, gate: Gate, clock: Clock) -> PlanService:
    return PlanService(storage, AuditLog(storage), rollouts, gate, clock)


async def test_plan_advances_on_schedule_while_gates_hold(storage: Storage) -> None:
    clock, rollouts, gate = Clock(), Rollouts(), Gate()
    plans = service(storage, rollouts, gate, clock)
    plan = await plans.start("checkout_v2", [5, 25, 50, 100], timedelta(hours=1), "1001")
    assert (plan.state, rollouts.percent["checkout_v2"]) == (PlanState.ACTIVE, 5)

    clock.advance(timedelta(minutes=59))
    assert await plans.tick() == []  # not due yet, gates checked all the same
    assert gate.asked == ["checkout_v2"]

    seen = []
    for _ in range(3):
        clock.advance(timedelta(hours=1))
        seen += [(e.kind, e.percent) for e in await plans.tick()]
    assert seen == [("advanced", 25), ("advanced", 50), ("done", 100)]
    assert rollouts.percent["checkout_v2"] == 100
    assert await plans.current("checkout_v2") is None
    latest = await plans.latest("checkout_v2")
    assert latest is not None and latest.state is PlanState.DONE


async def test_breach_halts_and_drops_back_to_last_safe_step(storage: Storage) -> None:
    clock, rollouts, gate = Clock(), Rollouts(), Gate()
    plans = service(storage, rollouts, gate, clock)
    await plans.start("checkout_v2", [5, 25, 50, 100], timedelta(hours=1), "1001")
    clock.advance(timedelta(hours=1))
    await plans.tick()  # now at 25
    gate.verdict = GateVerdict(False, "web health: HTTP 503, expected 200")
    clock.advance(timedelta(minutes=10))  # breaches are acted on at once, not at the next step
    [event] = await plans.tick()
    assert (event.kind, event.percent) == ("halted", 5)
    assert event.reason == "web health: HTTP 503, expected 200"
    assert rollouts.percent["checkout_v2"] == 5
    clock.advance(timedelta(hours=5))
    gate.verdict = GateVerdict(True)
    assert await plans.tick() == []  # a halted plan stays halted
    assert rollouts.percent["checkout_v2"] == 5


async def test_breach_on_first_step_drops_to_zero(storage: Storage) -> None:
    clock, rollouts, gate = Clock(), Rollouts(), Gate()
    plans = service(storage, rollouts, gate, clock)
    await plans.start("f", [10, 100], timedelta(minutes=30), "1001")
    gate.verdict = GateVerdict(False, "critical alert firing")
    [event] = await plans.tick()
    assert event.percent == 0 and rollouts.percent["f"] == 0


async def test_pause_resume_abort_and_restart_survival(storage: Storage, tmp_path: Path) -> None:
    clock, rollouts, gate = Clock(), Rollouts(), Gate()
    plans = service(storage, rollouts, gate, clock)
    await plans.start("f", [5, 50], timedelta(hours=1), "1001")
    with pytest.raises(PlanError, match="already has a plan"):
        await plans.start("f", [1, 2], timedelta(hours=1), "1001")
    paused = await plans.pause("f", "1003")
    assert paused.state is PlanState.PAUSED
    clock.advance(timedelta(hours=3))
    assert await plans.tick() == []
    resumed = await plans.resume("f", "1003")
    assert resumed.next_at == clock.now + timedelta(hours=1)

    # A new service over the same database (a restarted bot) carries on with the plan.
    again = service(storage, rollouts, gate, clock)
    clock.advance(timedelta(hours=1))
    assert [(e.kind, e.percent) for e in await again.tick()] == [("done", 50)]

    await again.start("g", [5, 50], timedelta(hours=1), "1001")
    aborted = await again.abort("g", "1001")
    assert aborted.state is PlanState.ABORTED and rollouts.percent["g"] == 0
    with pytest.raises(PlanError, match="no plan to abort"):
        await again.abort("g", "1001")


@pytest.mark.parametrize("steps", [[], [5, 5], [50, 25], [0, 10], list(range(1, 30))])
async def test_bad_steps_are_refused(storage: Storage, steps: list[float]) -> None:
    plans = service(storage, Rollouts(), Gate(), Clock())
    with pytest.raises(PlanError):
        await plans.start("f", steps, timedelta(hours=1), "1001")
    assert await plans.current("f") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h", timedelta(hours=1)),
        ("2h30m", timedelta(hours=2, minutes=30)),
        ("90s", timedelta(seconds=90)),
        ("1d", timedelta(days=1)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "h", "5s", "1x", "-1h", "1h 2m", "99999999h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(PlanError):
        parse_duration(text)


class Criteria:
    """A phase's criteria as the test sets them: a breach's reason, evaluations served."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.served = 0
        self.asked: list[float] = []

    async def breach(self, flag_key: str, phase: Phase) -> str | None:
        self.asked.append(phase.percent)
        return self.reason

    def evaluations(self, flag_key: str) -> int:
        return self.served


async def test_phases_last_their_own_time_wait_for_evaluations_and_halt_on_criteria(
    storage: Storage,
) -> None:
    clock, rollouts, gate, criteria = Clock(), Rollouts(), Gate(), Criteria()
    plans = PlanService(storage, AuditLog(storage), rollouts, gate, clock, criteria)
    phases = [
        Phase(5, timedelta(minutes=10), min_evaluations=100),
        Phase(25, timedelta(hours=2), max_error_ratio=0.01),
        Phase(50, timedelta(hours=4)),
        Phase(100, timedelta(seconds=10)),
    ]
    plan = await plans.start_phases("f", phases, "1001")
    assert plan.next_at == clock.now + timedelta(minutes=10)
    await plans.tick()  # the phase's count starts here
    clock.advance(timedelta(minutes=11))
    criteria.served = 60
    assert await plans.tick() == []  # its time is up, but only 60 of 100 evaluations
    criteria.served = 100
    [moved] = await plans.tick()
    assert (moved.kind, moved.percent) == ("advanced", 25)
    assert moved.plan.next_at == clock.now + timedelta(hours=2)  # the second phase's own time
    clock.advance(timedelta(hours=1))
    criteria.reason = "error rate 3.0% over 1% (3/100)"
    [halted] = await plans.tick()
    assert (halted.kind, halted.percent, halted.reason) == ("halted", 5, criteria.reason)
    assert rollouts.percent["f"] == 5 and criteria.asked[-1] == 25
    reread = await plans.latest("f")  # the phases survive in the row
    assert reread is not None and reread.phases == tuple(phases)


async def test_a_plan_from_before_phases_reads_as_equal_steps(storage: Storage) -> None:
    await storage.write(
        "INSERT INTO flag_plans (flag_key, steps, every_s, step_index, state, next_at, reason,"
        " created_by, created_at) VALUES ('f', '[5, 25, 100]', 3600, 1, 'active', NULL, '',"
        " '1001', '2026-11-23T12:00:00+00:00')"
    )
    plans = service(storage, Rollouts(), Gate(), Clock())
    plan = await plans.current("f")
    assert plan is not None and plan.steps == (5, 25, 100) and plan.every == timedelta(hours=1)
    assert plan.equal_steps
