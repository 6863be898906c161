import asyncio
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.deploy.deployments import (
    Busy,
    Deployment,
    Deployments,
    DeploymentState,
    EnvironmentLocked,
    IllegalTransition,
    InvalidRequest,
    UnknownDeployment,
    state_durations,
)
from services.deploy.locks import EnvironmentLocks
from services.records.audit import AuditLog
from services.records.storage import Storage

S = DeploymentState
REPO = Path(__file__).resolve().parents[3]
HAPPY = [S.AWAITING_APPROVAL, S.APPROVED, S.PRE_CHECKS, S.BUILDING, S.SWITCHING, S.VERIFYING,
         S.WATCHING, S.SUCCEEDED]  # fmt: skip


@pytest.fixture
async def storage(tmp_path: Path, database: str) -> AsyncIterator[Storage]:
    async with Storage(database) as storage:
        yield storage


@pytest.fixture
def deployments(storage: Storage) -> Deployments:
    return Deployments(storage, AuditLog(storage))


async def walk(deployments: Deployments, deployment: Deployment, steps: list[S]) -> Deployment:
    for step in steps:
        deployment = await deployments.advance(deployment.id, step, "opsgate", f"to {step}")
    return deployment


async def test_happy_path_through_every_state(deployments: Deployments) -> None:
    first = await deployments.request("web", "production", "v2.3.1", "1001")
    assert (first.state, first.finished, first.requested_by) == (S.REQUESTED, False, "1001")
    # A dry run of the same service takes no lock; its events stay out of this trail.
    dry = await deployments.request("web", "production", "v9", "1002", dry_run=True)
    await deployments.advance(first.id, S.AWAITING_APPROVAL, "opsgate")
    await deployments.advance(first.id, S.APPROVED, "1003", "approved by the on-call")
    await deployments.advance(dry.id, S.APPROVED, "1002")
    done = await walk(deployments, first, HAPPY[2:])
    assert done.state is S.SUCCEEDED and done.finished and done.error == ""
    events = await deployments.events(first.id)
    assert [e.kind for e in events] == [f"deploy.{s}" for s in [S.REQUESTED, *HAPPY]]
    assert [e.actor for e in events][:4] == ["1001", "opsgate", "1003", "opsgate"]
    assert [(e.data["from"], e.data["to"]) for e in events[1:]] == list(
        zip([S.REQUESTED, *HAPPY[:-1]], HAPPY, strict=True)
    )
    assert events[2].data["note"] == "approved by the on-call"
    assert {e.subject for e in events} == {"web"}  # found with every other event about web
    assert events[0].data["version"] == "v2.3.1"
    durations = state_durations(events, until=events[-1].at)
    assert [state for state, _ in durations] == [S.REQUESTED, *HAPPY]
    # Finished for good: no way out of succeeded (a rollback is a new deployment).
    with pytest.raises(IllegalTransition, match="finished already"):
        await deployments.advance(first.id, S.ROLLING_BACK, "1001")


async def test_illegal_transitions_change_nothing(deployments: Deployments) -> None:
    deployment = await deployments.request("web", "staging", "v1", "1001")
    before = await deployments.events(deployment.id)
    for wrong in (S.BUILDING, S.SWITCHING, S.SUCCEEDED, S.ROLLING_BACK, S.REQUESTED):
        with pytest.raises(IllegalTransition, match="cannot go from requested"):
            await deployments.advance(deployment.id, wrong, "1001")
    assert (await deployments.get(deployment.id)).state is S.REQUESTED
    assert await deployments.events(deployment.id) == before
    dry = await deployments.request("api", "staging", "v1", "1001", dry_run=True)
    dry = await walk(deployments, dry, [S.APPROVED, S.PRE_CHECKS])
    with pytest.raises(IllegalTransition):
        await deployments.advance(dry.id, S.BUILDING, "opsgate")
    assert (await walk(deployments, dry, [S.SUCCEEDED])).finished
    with pytest.raises(UnknownDeployment):
        await deployments.advance(999, S.APPROVED, "1001")


ENDINGS = {
    "succeeded": [S.APPROVED, S.PRE_CHECKS, S.BUILDING, S.SWITCHING, S.VERIFYING, S.SUCCEEDED],
    "rolled_back": [S.APPROVED, S.PRE_CHECKS, S.BUILDING, S.SWITCHING, S.VERIFYING, S.FAILED,
                    S.ROLLING_BACK, S.ROLLED_BACK],
    "rollback_failed": [S.APPROVED, S.PRE_CHECKS, S.BUILDING, S.SWITCHING, S.FAILED,
                        S.ROLLING_BACK, S.ROLLBACK_FAILED],
    "failed_before_switch": [S.APPROVED, S.PRE_CHECKS, S.FAILED],
    "cancelled": [S.AWAITING_APPROVAL, S.CANCELLED],
}  # fmt: skip


@pytest.mark.parametrize("steps", ENDINGS.values(), ids=ENDINGS.keys())
async def test_lock_held_until_and_released_on_every_ending(
    deployments: Deployments, steps: list[S]
) -> None:
    deployment = await deployments.request("web", "production", "v2", "1001")
    for step in steps:
        # Held at every step before the end: a second request is refused, naming the holder.
        with pytest.raises(Busy) as busy:
            await deployments.request("web", "production", "v3", "1002")
        assert busy.value.holder.id == deployment.id
        if step is S.FAILED:
            deployment = await deployments.fail(deployment.id, "opsgate", "health check: 503")
            assert deployment.error == "health check: 503"
        elif step is S.CANCELLED:
            deployment = await deployments.cancel(deployment.id, "1001")
        else:
            deployment = await deployments.advance(deployment.id, step, "opsgate")
    assert deployment.finished and deployment.finished_at is not None
    assert deployment.state is steps[-1]
    assert await deployments.in_flight() == []
    after = await deployments.request("web", "production", "v3", "1002")
    assert after.state is S.REQUESTED


async def test_concurrent_requests_exactly_one_wins(
    deployments: Deployments, storage: Storage
) -> None:
    versions = [f"v1.{n}" for n in range(6)]
    results = await asyncio.gather(
        *(deployments.request("web", "production", v, f"10{n}") for n, v in enumerate(versions)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, Deployment)]
    losers = [r for r in results if isinstance(r, Busy)]
    assert len(winners) == 1 and len(losers) == len(versions) - 1
    winner = winners[0]
    for lost in losers:
        assert lost.holder == winner
        text = str(lost)
        assert f"#{winner.id}" in text and winner.version in text
        assert winner.requested_by in text and "requested" in text
    # The losers' rows went with their transactions; only the refusals are in the trail.
    assert [d.id for d in await deployments.history()] == [winner.id]
    refused = await AuditLog(storage).events(kind="deploy.refused")
    assert len(refused) == len(versions) - 1
    # Another environment, or another service, is not blocked.
    await deployments.request("web", "staging", "v1", "1001")
    await deployments.request("api", "production", "v1", "1001")


async def test_two_connections_on_one_file_cannot_both_win(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with Storage(path) as one, Storage(path) as two:
        results = await asyncio.gather(
            Deployments(one, AuditLog(one)).request("web", "production", "v1", "1001"),
            Deployments(two, AuditLog(two)).request("web", "production", "v2", "1002"),
            return_exceptions=True,
        )
    assert sorted(type(r).__name__ for r in results) == ["Busy", "Deployment"]


async def test_locked_environment_refuses_with_who_why_since(storage: Storage) -> None:
    audit = AuditLog(storage)
    since = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    locks = EnvironmentLocks(storage, audit, clock=lambda: since)
    deployments = Deployments(storage, audit)
    await locks.lock("production", "alice", "database maintenance")
    for dry_run in (False, True):
        with pytest.raises(EnvironmentLocked) as refused:
            await deployments.request("web", "production", "v2", "1001", dry_run=dry_run)
        assert str(refused.value) == (
            "production is locked by alice since 2026-03-01 09:30 UTC: database maintenance"
        )
    assert await deployments.history() == []
    await deployments.request("web", "staging", "v2", "1001")  # only that environment
    await locks.unlock("production", "alice")
    assert (await deployments.request("web", "production", "v2", "1001")).state is S.REQUESTED


async def test_in_flight_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    async with Storage(path) as storage:
        deployments = Deployments(storage, AuditLog(storage))

        async def make(service: str, steps: list[S], fail_at_end: bool = False) -> Deployment:
            deployment = await deployments.request(service, "production", "v2", "1001")
            deployment = await walk(deployments, deployment, steps)
            if fail_at_end:
                deployment = await deployments.fail(deployment.id, "opsgate", "smoke failed")
            return deployment

        await make("done", ENDINGS["succeeded"])
        await make("gone", [S.CANCELLED])
        building = await make("build", [S.APPROVED, S.PRE_CHECKS, S.BUILDING])
        await make("early", [S.APPROVED, S.PRE_CHECKS], fail_at_end=True)
        to_roll_back = await make("late", [S.APPROVED, S.PRE_CHECKS, S.BUILDING, S.SWITCHING],
                                  fail_at_end=True)  # fmt: skip
        waiting = await make("wait", [S.AWAITING_APPROVAL])
        await deployments.set_progress_message(building.id, -100123, 42)
    async with Storage(path) as storage:  # what the bot sees when it starts again
        deployments = Deployments(storage, AuditLog(storage))
        in_flight = await deployments.in_flight()
        assert [(d.id, d.state) for d in in_flight] == [
            (building.id, S.BUILDING),
            (to_roll_back.id, S.FAILED),
            (waiting.id, S.AWAITING_APPROVAL),
        ]
        assert (in_flight[0].progress_chat_id, in_flight[0].progress_message_id) == (-100123, 42)
        assert in_flight[1].error == "smoke failed"
        with pytest.raises(Busy):  # locks survive the restart with their deployments
            await deployments.request("late", "production", "v3", "1001")
        await walk(deployments, in_flight[1], [S.ROLLING_BACK, S.ROLLED_BACK])
        assert (await deployments.request("late", "production", "v3", "1001")).id > waiting.id


CRASH_MID_MOVE = """
import asyncio, os, signal, sys
from services.records.audit import AuditLog
from services.deploy.deployments import Deployments, DeploymentState as S
from services.records.storage import Storage

async def main() -> None:
    storage = await Storage(sys.argv[1]).open()
    audit = AuditLog(storage)
    deployments = Deployments(storage, audit)
    d = await deployments.request("web", "production", "v2", "1001")
    for step in (S.APPROVED, S.PRE_CHECKS, S.BUILDING):
        await deployments.advance(d.id, step, "opsgate")
    async def die(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGKILL)  # after the row's UPDATE, before the commit
    audit.record = die
    await deployments.advance(d.id, S.SWITCHING, "opsgate")

asyncio.run(main())
"""


async def test_killed_mid_move_leaves_row_lock_and_trail_agreeing(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASH_MID_MOVE, str(path), cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert await child.wait() == -9
    async with Storage(path) as storage:
        deployments = Deployments(storage, AuditLog(storage))
        [deployment] = await deployments.in_flight()
        assert deployment.state is S.BUILDING
        events = await deployments.events(deployment.id)
        assert events[-1].kind == "deploy.building"
        with pytest.raises(Busy):
            await deployments.request("web", "production", "v3", "1001")


async def test_cancel_only_before_switching(deployments: Deployments) -> None:
    deployment = await deployments.request("web", "production", "v2", "1001")
    await walk(deployments, deployment, [S.APPROVED, S.PRE_CHECKS, S.BUILDING, S.SWITCHING])
    with pytest.raises(IllegalTransition, match=f"too late to cancel #{deployment.id}"):
        await deployments.cancel(deployment.id, "1001")
    assert (await deployments.get(deployment.id)).state is S.SWITCHING
    assert [d.id for d in await deployments.in_flight()] == [deployment.id]


async def test_history_progress_and_validation(deployments: Deployments) -> None:
    targets = [("a", "staging"), ("b", "staging"), ("a", "production")]
    ids = [(await deployments.request(s, env, "v1", "1001")).id for s, env in targets]
    assert [d.id for d in await deployments.history()] == ids[::-1]
    assert [d.id for d in await deployments.history("a")] == [ids[2], ids[0]]
    assert [d.id for d in await deployments.history(limit=1)] == [ids[2]]
    await deployments.set_previous_version(ids[0], "v0")
    assert (await deployments.get(ids[0])).previous_version == "v0"
    with pytest.raises(UnknownDeployment):
        await deployments.set_progress_message(999, 1, 2)
    bad = [("Web", "staging", "v1"), ("web", "../prod", "v1"), ("web", "staging", "v1 x"),
           ("web", "staging", ""), ("web", "staging", "v" * 129)]  # fmt: skip
    for service, environment, version in bad:
        with pytest.raises(InvalidRequest):
            await deployments.request(service, environment, version, "1001")
    assert len(await deployments.history()) == 3
