"""DORA figures from histories made through the real state machine, with a clock the test moves:
every duration below is exact, and every figure is checked against a value worked out by hand.

The audit log gets the same clock: time to restore starts at the `deploy.failed` event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.deploy.deployments import Deployment, DeploymentKind, Deployments, DeploymentState
from services.records.audit import AuditLog
from services.records.storage import Storage
from services.reports.dora import DayCount, Dora, DoraReport

S = DeploymentState
K = DeploymentKind
NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
DAY = 86400
ENV = "production"


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class History:
    """Deployments walked through their states; time passes only where `clock.tick` says."""

    def __init__(self, deployments: Deployments, clock: Clock) -> None:
        self.deployments = deployments
        self.clock = clock

    async def walk(self, deployment: Deployment, *steps: S) -> Deployment:
        for step in steps:
            deployment = await self.deployments.advance(deployment.id, step, "opsgate")
        return deployment

    async def deploy(self, service: str, version: str, lead: int, env: str = ENV) -> Deployment:
        """Succeeded `lead` seconds after its request (half before building, half after)."""
        d = await self.deployments.request(service, env, version, "1001")
        d = await self.walk(d, S.AWAITING_APPROVAL, S.APPROVED, S.PRE_CHECKS)
        self.clock.tick(lead // 2)
        d = await self.walk(d, S.BUILDING, S.SWITCHING, S.VERIFYING, S.WATCHING)
        self.clock.tick(lead - lead // 2)
        return await self.walk(d, S.SUCCEEDED)

    async def failed(
        self,
        service: str,
        version: str,
        fail_after: int,
        restore: int,
        end: S = S.ROLLED_BACK,
        env: str = ENV,
    ) -> Deployment:
        """Switched, failed `fail_after` s after its request, then rolled back by opsgate:
        `restore` s from the failure to the rollback's end (10 s of it before rolling_back)."""
        assert restore > 10
        d = await self.deployments.request(service, env, version, "1001")
        d = await self.walk(d, S.APPROVED, S.PRE_CHECKS, S.BUILDING, S.SWITCHING, S.VERIFYING)
        self.clock.tick(fail_after)
        d = await self.deployments.fail(d.id, "opsgate", "health check failed")
        self.clock.tick(10)
        d = await self.walk(d, S.ROLLING_BACK)
        self.clock.tick(restore - 10)
        return await self.walk(d, end)

    async def rollback(
        self, service: str, to: str, leaving: str, duration: int, ok: bool = True, env: str = ENV
    ) -> Deployment:
        """A /rollback from `leaving` to `to`, `duration` s from request to its end."""
        d = await self.deployments.request(
            service, env, to, "1003", kind=K.ROLLBACK, previous_version=leaving
        )
        d = await self.walk(d, S.APPROVED, S.SWITCHING, S.VERIFYING)
        self.clock.tick(duration)
        if ok:
            return await self.walk(d, S.SUCCEEDED)
        d = await self.deployments.fail(d.id, "opsgate", "still unhealthy")
        return await self.walk(d, S.ROLLING_BACK, S.ROLLED_BACK)

    async def not_changes(self, service: str, env: str = ENV) -> None:
        """Everything that is not a change: dry runs, drills, cancelled requests, failures
        before switching. Each takes time, so a wrong count would move the figures."""
        dry = await self.deployments.request(service, env, "v-dry", "1001", dry_run=True)
        await self.walk(dry, S.APPROVED, S.PRE_CHECKS)
        self.clock.tick(30)
        await self.walk(dry, S.SUCCEEDED)
        dry = await self.deployments.request(service, env, "v-dry2", "1001", dry_run=True)
        await self.walk(dry, S.APPROVED, S.PRE_CHECKS)
        self.clock.tick(30)
        await self.deployments.fail(dry.id, "opsgate", "pre-check failed")
        drill = await self.deployments.request(
            service, env, "v-drill", "1003", kind=K.DRILL, previous_version="v-old"
        )
        await self.walk(drill, S.APPROVED, S.PRE_CHECKS, S.SWITCHING, S.VERIFYING, S.SWITCHING)
        self.clock.tick(45)
        await self.walk(drill, S.VERIFYING, S.SUCCEEDED)
        drill = await self.deployments.request(
            service, env, "v-drill", "1003", kind=K.DRILL, previous_version="v-old"
        )
        await self.walk(drill, S.APPROVED, S.PRE_CHECKS, S.SWITCHING, S.VERIFYING)
        self.clock.tick(20)
        await self.deployments.fail(drill.id, "opsgate", "drill: old release unhealthy")
        self.clock.tick(20)
        await self.walk(drill, S.ROLLING_BACK, S.ROLLED_BACK)
        cancelled = await self.deployments.request(service, env, "v-cancel", "1001")
        await self.walk(cancelled, S.AWAITING_APPROVAL)
        self.clock.tick(300)
        await self.deployments.cancel(cancelled.id, "1001")
        early = await self.deployments.request(service, env, "v-broken", "1001")
        await self.walk(early, S.APPROVED, S.PRE_CHECKS, S.BUILDING)
        self.clock.tick(60)
        await self.deployments.fail(early.id, "opsgate", "build failed")

    async def in_flight(self, service: str, version: str, env: str = ENV) -> Deployment:
        d = await self.deployments.request(service, env, version, "1001")
        return await self.walk(d, S.APPROVED, S.PRE_CHECKS, S.BUILDING)


@pytest.fixture
async def storage(tmp_path: Path, database: str) -> AsyncIterator[Storage]:
    async with Storage(database) as storage:
        yield storage


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def history(storage: Storage, clock: Clock) -> History:
    return History(Deployments(storage, AuditLog(storage, clock), clock), clock)


@pytest.fixture
def report(storage: Storage, clock: Clock) -> DoraReport:
    return DoraReport(storage, clock)


def empty(service: str, window: float = 30) -> Dora:
    return Dora(service, window, 0, 0, 0.0, None, None, None)


async def test_no_history_gives_only_an_empty_overall(report: DoraReport) -> None:
    assert await report.figures() == [empty("all")]
    assert await report.figures(7) == [empty("all", 7)]


async def test_each_figure_per_service_and_overall(
    history: History, clock: Clock, report: DoraReport
) -> None:
    h = history
    # Before the 30-day window: a success and a failure that must not count.
    clock.now = NOW - timedelta(days=40)
    await h.deploy("web", "v1", lead=9999)
    await h.failed("web", "v1b", fail_after=50, restore=7777)
    await h.deploy("worker", "v0", lead=9999)

    clock.now = NOW - timedelta(days=10)
    await h.deploy("web", "v2", lead=600)
    await h.deploy("worker", "v1", lead=60)
    clock.tick(DAY)
    await h.deploy("web", "v3", lead=300)
    # Failed after its switch and rolled back by opsgate: failure -> rolled back = 120 s.
    await h.failed("web", "v4", fail_after=100, restore=120)
    # Its rollback failed too: a failed change, but the service was never restored.
    await h.failed("worker", "v2", fail_after=30, restore=50, end=S.ROLLBACK_FAILED)
    clock.tick(DAY)
    await h.deploy("worker", "v3", lead=120)
    await h.failed("worker", "v4", fail_after=10, restore=90)
    await h.not_changes("web")
    await h.not_changes("worker")
    clock.tick(2 * DAY)
    await h.deploy("web", "v5", lead=900)
    await h.deploy("worker", "v5", lead=180)
    # A /rollback that left web's v5: v5 was a failed change, restored in 240 s.
    await h.rollback("web", to="v3", leaving="v5", duration=240)
    # A /rollback that failed undoes nothing; nor does one that left a version only another
    # service deployed in the window (worker's v1; web's v1 is before it).
    await h.rollback("worker", to="v3", leaving="v5", duration=500, ok=False)
    await h.rollback("web", to="v0", leaving="v1", duration=700)
    clock.tick(DAY)
    await h.deploy("worker", "v6", lead=250)
    await h.in_flight("web", "v6")  # not finished: not a change yet
    clock.now = NOW

    assert await report.figures(30) == [
        Dora(
            "web",
            30,
            deploys=4,  # v2, v3, v4, v5
            failed_changes=2,  # v4 rolled back, v5 undone by hand
            deployments_per_day=3 / 30,
            lead_time_s=600.0,  # median of 600, 300, 900
            change_failure_rate=2 / 4,
            time_to_restore_s=180.0,  # median of 120, 240
        ),
        Dora(
            "worker",
            30,
            deploys=6,  # v1, v2, v3, v4, v5, v6
            failed_changes=2,  # v2 rollback_failed, v4 rolled back
            deployments_per_day=4 / 30,
            lead_time_s=150.0,  # median of 60, 120, 180, 250
            change_failure_rate=2 / 6,
            time_to_restore_s=90.0,  # v4 only: v2 was never restored
        ),
        Dora(
            "all",
            30,
            deploys=10,
            failed_changes=4,
            deployments_per_day=7 / 30,
            lead_time_s=250.0,  # median of 60, 120, 180, 250, 300, 600, 900
            change_failure_rate=4 / 10,
            time_to_restore_s=120.0,  # median of 90, 120, 240
        ),
    ]
    # A shorter window: the last six days (v5 on both, the /rollbacks and worker's v6).
    assert await report.figures(6) == [
        Dora("web", 6, 1, 1, 1 / 6, 900.0, 1.0, 240.0),
        Dora("worker", 6, 2, 0, 2 / 6, 215.0, 0.0, None),
        Dora("all", 6, 3, 1, 3 / 6, 250.0, 1 / 3, 240.0),
    ]


async def test_the_window_counts_by_request_time(
    history: History, clock: Clock, report: DoraReport
) -> None:
    h = history
    # The 8-day window starts right at this request: counted there, not in the 7-day one.
    clock.now = NOW - timedelta(days=8)
    await h.deploy("worker", "v1", lead=50)
    # Requested a second before the 7-day window, finished an hour inside it: not counted.
    clock.now = NOW - timedelta(days=7, seconds=1)
    early = await h.deployments.request("web", "staging", "v1", "1001")
    early = await h.walk(early, S.APPROVED, S.PRE_CHECKS, S.BUILDING, S.SWITCHING, S.VERIFYING)
    clock.tick(1)
    await h.deploy("web", "v2", lead=100)  # right at the 7-day window's start: counted
    clock.tick(3600 - 101)
    await h.walk(early, S.SUCCEEDED)
    # A /rollback inside the 7-day window of a deploy before it: that deploy is not in it.
    clock.now = NOW - timedelta(days=1)
    await h.rollback("worker", to="v0", leaving="v1", duration=30)
    clock.now = NOW
    assert await report.figures(7) == [
        Dora("web", 7, 1, 0, 1 / 7, 100.0, 0.0, None),
        Dora("all", 7, 1, 0, 1 / 7, 100.0, 0.0, None),
    ]
    assert await report.figures(8) == [
        Dora("web", 8, 2, 0, 2 / 8, 1850.0, 0.0, None),
        Dora("worker", 8, 1, 1, 1 / 8, 50.0, 1.0, 30.0),
        Dora("all", 8, 3, 1, 3 / 8, 100.0, 1 / 3, 30.0),
    ]


async def test_dry_runs_drills_cancelled_and_early_failures_are_not_changes(
    history: History, clock: Clock, report: DoraReport
) -> None:
    clock.now = NOW - timedelta(days=2)
    await history.not_changes("web")
    await history.in_flight("web", "v9")
    drill = await history.deployments.request("worker", ENV, "v1", "1003", kind=K.DRILL)
    await history.walk(drill, S.APPROVED, S.PRE_CHECKS, S.SWITCHING, S.VERIFYING, S.SWITCHING)
    await history.walk(drill, S.VERIFYING, S.SUCCEEDED)
    clock.now = NOW
    # web asked for deploys (cancelled, failed early, in flight): listed, with nothing to count.
    # worker only had a drill: not a service that deployed.
    assert await report.figures() == [empty("web"), empty("all")]
    days = await report.per_day(3)
    assert [(d.succeeded, d.failed, d.rolled_back) for d in days] == [(0, 0, 0)] * 3


async def test_time_to_restore_runs_from_the_failure(
    history: History, clock: Clock, report: DoraReport
) -> None:
    clock.now = NOW - timedelta(hours=5)
    # 500 s after its request it failed; 10 s later rolling back began; 200 s after the failure
    # the old release served again. Neither the request nor the rollback's start count.
    await history.failed("web", "v2", fail_after=500, restore=200)
    clock.tick(3600)
    # A manual /rollback of a success: its own request -> success.
    await history.deploy("web", "v3", lead=100)
    clock.tick(3600)
    await history.rollback("web", to="v1", leaving="v3", duration=75)
    clock.now = NOW
    web, overall = await report.figures(1)
    assert web == Dora("web", 1, 2, 2, 1.0, 100.0, 1.0, 137.5)  # median of 200, 75
    assert overall == Dora("all", 1, 2, 2, 1.0, 100.0, 1.0, 137.5)


async def test_one_rollback_undoes_one_deploy(
    history: History, clock: Clock, report: DoraReport
) -> None:
    clock.now = NOW - timedelta(days=1)
    await history.deploy("web", "v2", lead=100)
    await history.deploy("web", "v3", lead=100)
    await history.deploy("web", "v2", lead=100)  # v2 again, from v3
    # This leaves the second v2 (the one running): one failed change, restored in 60 s.
    await history.rollback("web", to="v3", leaving="v2", duration=60)
    clock.now = NOW
    web, _ = await report.figures()
    assert (web.deploys, web.failed_changes, web.change_failure_rate) == (3, 1, 1 / 3)


async def test_per_day_counts_by_utc_request_day(
    history: History, clock: Clock, report: DoraReport
) -> None:
    h = history
    clock.now = datetime(2025, 3, 7, 23, 59, 59, tzinfo=UTC)
    await h.deploy("web", "v1", lead=60)  # the day before the three: not shown
    clock.now = datetime(2025, 3, 8, 0, 0, 0, tzinfo=UTC)
    await h.deploy("web", "v2", lead=60)
    clock.now = datetime(2025, 3, 8, 23, 59, 0, tzinfo=UTC)
    await h.deploy("web", "v3", lead=600)  # finished on the 9th: counted on its request's day
    clock.now = datetime(2025, 3, 9, 10, 0, tzinfo=UTC)
    await h.failed("worker", "v2", fail_after=20, restore=40)
    await h.failed("worker", "v3", fail_after=20, restore=40, end=S.ROLLBACK_FAILED)
    await h.not_changes("worker")
    clock.now = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)
    await h.rollback("web", to="v2", leaving="v3", duration=30)
    await h.rollback("web", to="v1", leaving="v2", duration=30, ok=False)  # not a rollback done
    await h.deploy("web", "v4", lead=60)
    await h.in_flight("worker", "v4")
    clock.now = NOW
    assert await report.per_day(3) == [
        DayCount("2025-03-08", succeeded=2, failed=0, rolled_back=0),
        DayCount("2025-03-09", succeeded=0, failed=2, rolled_back=0),
        DayCount("2025-03-10", succeeded=1, failed=0, rolled_back=1),
    ]
    fortnight = await report.per_day()
    assert [d.day for d in fortnight] == [f"2025-02-{n}" for n in range(25, 29)] + [
        f"2025-03-{n:02}" for n in range(1, 11)
    ]
    assert fortnight[-4:] == [DayCount("2025-03-07", 1, 0, 0), *await report.per_day(3)]
    assert all(d == DayCount(d.day, 0, 0, 0) for d in fortnight[:-4])
