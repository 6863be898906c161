import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.dev.harness.databases import committed_rows
from services.flags.store import FlagStore, parse_percentage
from services.flags.types import (
    BucketingChangeRefused,
    Flag,
    FlagError,
    FlagExists,
    InvalidFlagInput,
    InvalidFlagKey,
    InvalidPercentage,
    InvalidTargeting,
    NotLoaded,
    StaleFlag,
    UnknownFlag,
)
from services.records.audit import AuditLog
from services.records.storage import INTEGRITY_ERRORS, Storage

MakeStore = Callable[..., Awaitable[FlagStore]]
BAD_PERCENTS = [-1, 101, 25.55, float("nan"), float("inf"), True, "25"]


@pytest.fixture
async def storage(tmp_path: Path, database: str) -> AsyncIterator[Storage]:
    async with Storage(database) as storage:
        yield storage


@pytest.fixture
def make_store(storage: Storage) -> MakeStore:
    """A factory: a loaded store over the shared database (a restart is a second call)."""

    async def make(audit: Any = None) -> FlagStore:
        store = FlagStore(storage, audit or AuditLog(storage))
        await store.load()
        return store

    return make


@pytest.fixture
async def store(make_store: MakeStore) -> FlagStore:
    return await make_store()


async def test_create_get_all(store: FlagStore, storage: Storage) -> None:
    created = await store.create("checkout_v2", "New checkout", "alice")
    assert (created.version, created.enabled, created.rollout_percent) == (1, True, 0.0)
    await store.create("a.beta", "", "bob")
    assert await store.get("checkout_v2") == created
    assert await store.get("missing") is None
    assert [f.key for f in await store.all()] == ["a.beta", "checkout_v2"]
    with pytest.raises(FlagExists):
        await store.create("checkout_v2", "again", "alice")
    events = await AuditLog(storage).events(kind="flag.created")
    assert [(e.actor, e.subject) for e in events] == [("alice", "checkout_v2"), ("bob", "a.beta")]


@pytest.mark.parametrize("key", ["Checkout", "a/b", "../x", "", "a b", "1a", "a" * 200, "a..b"])
async def test_bad_keys_are_refused(store: FlagStore, key: str) -> None:
    with pytest.raises(InvalidFlagKey):
        await store.create(key, "", "alice")
    with pytest.raises(InvalidFlagKey):
        await store.set_rollout(key, 5, "alice")
    assert await store.all() == []


async def test_each_write_is_committed_recorded_and_bumps_the_version(
    store: FlagStore, storage: Storage
) -> None:
    await store.create("checkout_v2", "", "alice")
    flag = await store.set_rollout("checkout_v2", 25, "bob", note="step 1")
    assert (flag.rollout_percent, flag.version) == (25.0, 2)
    # Visible to another connection as soon as the call returns: committed, not pending.
    assert committed_rows(storage, "SELECT version FROM flags") == [(2,)]
    changes = committed_rows(
        storage,
        "SELECT actor, field, from_value, to_value, note, version FROM flag_changes ORDER BY id",
    )
    assert changes[-1] == ("bob", "rollout_percent", "0", "25", "step 1", 2)
    [event] = await AuditLog(storage).events(kind="flag.changed")
    assert event.data == {
        "version": 2,
        "note": "step 1",
        "changes": [{"field": "rollout_percent", "from": "0", "to": "25"}],
    }


async def test_a_write_that_changes_nothing_records_nothing(store: FlagStore) -> None:
    await store.create("f", "", "alice")
    first = await store.set_rollout("f", 5, "alice")
    again = await store.set_rollout("f", 5.0, "bob")
    assert again == first
    assert len(await store.changes("f")) == 2  # created, rollout


async def test_everything_survives_a_restart(store: FlagStore, make_store: MakeStore) -> None:
    await store.create("f", "Shiny", "alice")
    await store.set_rollout("f", 2.5, "alice")
    await store.set_enabled("f", False, "alice")
    await store.exclude("f", "chat", "-1001", "alice")
    await store.exclude("f", "user", 77, "alice")
    await store.include_user("f", "mail@example.com", "alice")
    await store.set_chat_types("f", ["group", "supergroup"], "alice")
    await store.set_segments("f", ["beta", "staff", "beta"], "alice")
    await store.kill("f", "alice", "errors up")
    before = await store.get("f")
    restarted = await make_store()
    assert await restarted.get("f") == before
    assert restarted.snapshot().etag == store.snapshot().etag
    assert before is not None and before.version == 9  # created + 8 writes
    assert before.targeting.segments == ("beta", "staff")


async def test_exclude_and_include(store: FlagStore) -> None:
    await store.create("f", "", "alice")
    flag = await store.include_user("f", 42, "alice")
    assert flag.targeting.user_ids == {"42"}
    flag = await store.exclude("f", "user", "42", "alice")
    assert (flag.targeting.user_ids, flag.targeting.excluded_users) == (set(), {"42"})
    flag = await store.include("f", "user", 42, "alice")
    assert (flag.targeting.user_ids, flag.targeting.excluded_users) == ({"42"}, set())
    flag = await store.exclude("f", "chat", "-01001", "alice")
    assert flag.targeting.excluded_chats == {"-1001"}  # one spelling per chat
    flag = await store.include("f", "chat", -1001, "alice")
    assert flag.targeting.excluded_chats == set()


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s: s.exclude("f", "chat", "abc", "a"), InvalidTargeting),
        (lambda s: s.exclude("f", "chat", True, "a"), InvalidTargeting),
        (lambda s: s.exclude("f", "chat", "1" * 20, "a"), InvalidTargeting),
        (lambda s: s.exclude("f", "group", "1", "a"), InvalidTargeting),
        (lambda s: s.exclude("f", "user", " 42", "a"), InvalidTargeting),
        (lambda s: s.exclude("f", "user", "x" * 257, "a"), InvalidTargeting),
        (lambda s: s.set_chat_types("f", ["group", "forum"], "a"), InvalidTargeting),
        (lambda s: s.set_segments("f", ["Beta"], "a"), InvalidTargeting),
        (lambda s: s.kill("f", "a", "  "), InvalidFlagInput),
        (lambda s: s.set_rollout("f", 5, "a", note="two\nlines"), InvalidFlagInput),
        (lambda s: s.set_rollout("nope", 5, "a"), UnknownFlag),
        (lambda s: s.set_rollout("f", 5, "a", if_version=0), StaleFlag),
        *((lambda s, p=p: s.set_rollout("f", p, "a"), InvalidPercentage) for p in BAD_PERCENTS),
    ],
)
async def test_refused_writes_change_nothing(
    store: FlagStore, call: Callable[[FlagStore], Awaitable[Flag]], error: type[FlagError]
) -> None:
    before = await store.create("f", "", "alice")
    etag = store.snapshot().etag
    with pytest.raises(error):
        await call(store)
    assert (await store.get("f"), store.snapshot().etag) == (before, etag)
    assert len(await store.changes("f")) == 1


async def test_kill_unkill_and_if_version(store: FlagStore, storage: Storage) -> None:
    seen = await store.create("f", "", "alice")
    await store.set_rollout("f", 5, "bob")
    with pytest.raises(StaleFlag):  # alice saw version 1; bob has changed it since
        await store.kill("f", "alice", "looks bad", if_version=seen.version)
    current = await store.get("f")
    assert current is not None and not current.killed
    killed = await store.kill("f", "alice", "error rate 12%", if_version=current.version)
    assert killed.killed and killed.version == current.version + 1
    assert (await store.unkill("f", "bob")).killed is False
    audit = AuditLog(storage)
    [event] = await audit.events(kind="flag.killed")
    assert (event.actor, event.data["note"]) == ("alice", "error rate 12%")
    assert [e.actor for e in await audit.events(kind="flag.unkilled")] == ["bob"]


async def test_changes_newest_first(store: FlagStore) -> None:
    await store.create("f", "first", "alice")
    for percent in (5, 25, 50):
        await store.set_rollout("f", percent, "bob")
    changes = await store.changes("f", limit=2)
    assert [(c.to_value, c.version) for c in changes] == [("50", 4), ("25", 3)]
    oldest = (await store.changes("f"))[-1]
    assert (oldest.field, oldest.note, oldest.actor) == ("created", "first", "alice")


async def test_snapshot_needs_a_load_and_is_replaced_not_changed(storage: Storage) -> None:
    store = FlagStore(storage, AuditLog(storage))
    with pytest.raises(NotLoaded):
        store.snapshot()
    empty = await store.load()
    await store.create("f", "", "alice")
    first = store.snapshot()
    await store.set_rollout("f", 5, "alice")
    second = store.snapshot()
    assert len({empty.etag, first.etag, second.etag}) == 3
    assert first.flags["f"].rollout_percent == 0.0  # an old snapshot stays as it was
    assert second.get("f") == await store.get("f")
    with pytest.raises(TypeError):
        second.flags["g"] = first.flags["f"]  # type: ignore[index]


async def test_concurrent_writes_all_land_in_order(store: FlagStore) -> None:
    await store.create("f", "", "alice")
    percents = [float(p) for p in range(1, 21)]
    await asyncio.gather(*(store.set_rollout("f", p, "bot") for p in percents))
    changes = await store.changes("f", limit=100)
    assert sorted(c.version for c in changes) == list(range(1, 22))
    flag = await store.get("f")
    assert flag is not None and flag.version == 21


@pytest.mark.parametrize("steps", range(6))
async def test_a_cancelled_write_leaves_memory_and_database_agreeing(
    store: FlagStore, make_store: MakeStore, steps: int
) -> None:
    await store.create("f", "", "alice")
    task = asyncio.create_task(store.set_rollout("f", 50, "alice"))
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    in_memory = await store.get("f")  # waits for a shielded write still under way
    assert in_memory == await (await make_store()).get("f")
    assert store.snapshot().get("f") == in_memory


class FailingAudit:
    async def record(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk on fire")


async def test_a_failed_write_rolls_back_everything(
    store: FlagStore, make_store: MakeStore, storage: Storage
) -> None:
    await store.create("f", "", "alice")
    broken = await make_store(FailingAudit())
    with pytest.raises(RuntimeError):
        await broken.set_rollout("f", 50, "alice")
    assert committed_rows(storage, "SELECT version FROM flags") == [(1,)]
    assert committed_rows(storage, "SELECT count(*) FROM flag_changes") == [(1,)]
    flag = await broken.get("f")
    assert flag is not None and flag.rollout_percent == 0.0
    assert await storage.is_writable()  # no transaction left open


async def test_flag_changes_are_append_only(store: FlagStore, storage: Storage) -> None:
    await store.create("f", "", "alice")
    with pytest.raises(INTEGRITY_ERRORS, match="append-only"):
        await storage.db.execute("UPDATE flag_changes SET actor = 'mallory'")
    with pytest.raises(INTEGRITY_ERRORS, match="append-only"):
        await storage.db.execute("DELETE FROM flag_changes")


VALID_PERCENTAGES = {"0": 0.0, "25": 25.0, "2.5": 2.5, "25%": 25.0, " 50 ": 50.0, "0.1": 0.1}
VALID_PERCENTAGES |= {"100": 100.0, "100.0": 100.0, "25.50": 25.5, "-0": 0.0}


@pytest.mark.parametrize(("text", "value"), VALID_PERCENTAGES.items())
def test_parse_percentage(text: str, value: float) -> None:
    assert parse_percentage(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-1", "between 0 and 100"),
        ("101", "between 0 and 100"),
        ("100.1", "between 0 and 100"),
        ("-0.5", "between 0 and 100"),
        ("25.55", "one decimal"),
        ("abc", "not a percentage"),
        ("nan", "not a percentage"),
        ("inf", "not a percentage"),
        ("", "not a percentage"),
        ("+5", "not a percentage"),
        ("1e2", "not a percentage"),
        ("25,5", "not a percentage"),
        ("٢٥", "not a percentage"),
        ("9" * 400, "between 0 and 100"),
    ],
)
def test_parse_percentage_refuses(text: str, message: str) -> None:
    with pytest.raises(InvalidPercentage, match=message):
        parse_percentage(text)


async def test_a_new_bucketing_scheme_is_refused_while_a_rollout_is_partial(
    store: FlagStore, make_store: MakeStore, storage: Storage
) -> None:
    assert await store.adopt_bucketing("flagd-v2", False, "opsfile") is False  # the old default
    await store.create("checkout", "", "alice")
    await store.set_rollout("checkout", 25, "alice")
    with pytest.raises(BucketingChangeRefused, match=r"flagd-v2 → flagd-v3 .* checkout"):
        await store.adopt_bucketing("flagd-v3", False, "opsfile")
    kinds = [r[0] for r in await storage.db.execute_fetchall("SELECT kind FROM events")]
    assert "flags.bucketing_changed" not in kinds  # refused: nothing recorded
    assert await store.adopt_bucketing("flagd-v3", True, "opsfile") is True  # forced
    assert await store.adopt_bucketing("flagd-v3", False, "opsfile") is False
    reopened = await make_store()  # what was adopted survives a restart
    assert await reopened.adopt_bucketing("flagd-v3", False, "opsfile") is False
    await store.set_rollout("checkout", 100, "alice")  # nobody moves at 0 or 100
    assert await store.adopt_bucketing("flagd-v2", False, "opsfile") is True
    rows = await storage.db.execute_fetchall(
        "SELECT data FROM events WHERE kind = 'flags.bucketing_changed' ORDER BY id"
    )
    assert [json.loads(r[0])["to"] for r in rows] == ["flagd-v3", "flagd-v2"]
