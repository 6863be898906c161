from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.deploy.locks import (
    MAX_REASON,
    EnvironmentLocked,
    EnvironmentLocks,
    EnvLock,
    EnvLockError,
)
from services.records.audit import AuditLog
from services.records.storage import Storage

SINCE = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
async def storage(tmp_path: Path, database: str) -> AsyncIterator[Storage]:
    async with Storage(database) as storage:
        yield storage


@pytest.fixture
def locks(storage: Storage) -> EnvironmentLocks:
    return EnvironmentLocks(storage, AuditLog(storage), clock=lambda: SINCE)


async def test_lock_refuses_a_second_holder_and_unlock_restores(
    locks: EnvironmentLocks, storage: Storage
) -> None:
    taken = await locks.lock("production", "alice", "  release\nfreeze  ")
    assert taken == EnvLock("production", "alice", "release freeze", SINCE)
    assert await locks.get("production") == taken
    with pytest.raises(EnvironmentLocked) as refused:
        await locks.lock("production", "bob", "mine now")
    assert refused.value.lock == taken
    assert str(refused.value) == (
        "production is locked by alice since 2026-03-01 09:30 UTC: release freeze"
    )
    assert await locks.unlock("production", "bob") == taken  # says whose lock ended
    assert await locks.get("production") is None
    with pytest.raises(EnvLockError, match="production is not locked"):
        await locks.unlock("production", "bob")
    events = await AuditLog(storage).events(subject="production")
    assert [(e.kind, e.actor) for e in events] == [("env.locked", "alice"), ("env.unlocked", "bob")]
    assert events[1].data == {"locked_by": "alice", "reason": "release freeze"}


async def test_names_and_reasons_are_checked(locks: EnvironmentLocks) -> None:
    for name in ("Production", "prod env", "../prod", "", "p" * 33, "prod\n"):
        with pytest.raises(EnvLockError, match="not an environment name"):
            await locks.lock(name, "alice", "why")
    with pytest.raises(EnvLockError, match="needs a reason"):
        await locks.lock("production", "alice", " \n ")
    with pytest.raises(EnvLockError, match="too long"):
        await locks.lock("production", "alice", "x" * (MAX_REASON + 1))
    assert (await locks.lock("production", "alice", "x" * MAX_REASON)).reason == "x" * MAX_REASON
    assert [lock.environment for lock in await locks.all()] == ["production"]


async def test_lock_all_keeps_existing_holders(locks: EnvironmentLocks, storage: Storage) -> None:
    held = await locks.lock("staging", "alice", "load test")
    taken = await locks.lock_all(["production", "staging", "dev", "production"], "bob", "halt")
    assert [lock.environment for lock in taken] == ["production", "dev"]
    assert await locks.all() == [
        EnvLock("dev", "bob", "halt", SINCE),
        EnvLock("production", "bob", "halt", SINCE),
        held,
    ]
    assert len(await AuditLog(storage).events(kind="env.locked")) == 3
    # All or nothing: one bad name and no environment is locked.
    with pytest.raises(EnvLockError):
        await locks.lock_all(["qa", "Bad Name"], "bob", "halt")
    assert await locks.get("qa") is None


async def test_locks_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "restart.db"
    async with Storage(path) as storage:
        await EnvironmentLocks(storage, AuditLog(storage), clock=lambda: SINCE).lock(
            "production", "alice", "incident 42"
        )
    async with Storage(path) as storage:
        again = await EnvironmentLocks(storage, AuditLog(storage)).get("production")
    assert again == EnvLock("production", "alice", "incident 42", SINCE)
