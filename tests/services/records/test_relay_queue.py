"""RelayQueue on both databases: a follower's request stored whole, taken by the leader or
withdrawn by its follower (never both), answered, listed oldest first, pruned once long
answered (services/records/relay.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from bot.dev.harness.databases import committed_rows
from services.records.relay import RelayedAnswer, RelayedRequest, RelayQueue
from services.records.storage import Storage

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BODY = bytes(range(256)) + b"\xff\xfe\x00 not UTF-8 \x80"  # every byte value, NULs too
TARGET = "/api/deploy/caf%C3%A9?env=prod&tag=a%20b&tag=%FF"
HEADERS = [
    ("host", "opsgate.example:8080"),
    ("content-type", "application/octet-stream"),
    ("x-note", "café, naïve, ÿ"),  # latin-1 text, as HTTP carries it
    ("x-tag", "one"),
    ("x-tag", "two"),  # repeated: both kept, in order
]
CLIENT = "10.0.0.7:51234"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def storage(database: str) -> AsyncIterator[Storage]:
    async with Storage(database) as storage:
        yield storage


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(storage: Storage, clock: Clock) -> RelayQueue:
    return RelayQueue(storage, "follower:1", clock)


def leader_queue(storage: Storage, clock: Clock) -> RelayQueue:
    """The leader's queue: another process's name (on the same connection, for the test)."""
    return RelayQueue(storage, "leader:2", clock)


async def test_a_request_is_stored_whole_and_another_connection_reads_it(
    storage: Storage, queue: RelayQueue, database: str
) -> None:
    request_id = await queue.put("POST", TARGET, HEADERS, BODY, CLIENT)
    empty_id = await queue.put("GET", "/health?", [], b"", "")
    assert empty_id > request_id
    expected = [
        RelayedRequest(request_id, "POST", TARGET, HEADERS, BODY, CLIENT),
        RelayedRequest(empty_id, "GET", "/health?", [], b"", ""),
    ]
    assert await queue.open_requests() == expected
    # Committed on return: another opsgate (its own connection) reads the same, byte for byte.
    async with Storage(database) as other:
        assert await RelayQueue(other, "leader:2").open_requests() == expected
    rows = committed_rows(
        storage,
        "SELECT received_at, received_by, taken_by, status, done_at FROM relayed_requests"
        " ORDER BY id",
    )
    assert rows == [(T0.isoformat(), "follower:1", None, None, None)] * 2


async def test_a_taken_request_can_no_longer_be_withdrawn(
    storage: Storage, queue: RelayQueue, clock: Clock
) -> None:
    request_id = await queue.put("POST", "/api/deploy", HEADERS, BODY, CLIENT)
    leader = leader_queue(storage, clock)
    assert await leader.take(request_id)
    assert not await queue.withdraw(request_id)
    # Still there, still open (the leader has not answered), and taken by the leader.
    assert [r.id for r in await queue.open_requests()] == [request_id]
    assert committed_rows(storage, "SELECT taken_by FROM relayed_requests") == [("leader:2",)]
    # Once answered it cannot be taken again (nor withdrawn).
    await leader.answer(request_id, RelayedAnswer(200, [], b"done"))
    assert not await leader.take(request_id)
    assert not await queue.withdraw(request_id)
    assert await queue.answer_of(request_id) == RelayedAnswer(200, [], b"done")


async def test_an_unanswered_request_is_taken_again_by_the_next_leader(
    storage: Storage, queue: RelayQueue, clock: Clock
) -> None:
    """At least once: a leader that died before answering leaves it open for the next one."""
    request_id = await queue.put("POST", "/api/deploy", [], b"{}", CLIENT)
    assert await leader_queue(storage, clock).take(request_id)
    next_leader = RelayQueue(storage, "leader:3", clock)
    assert [r.id for r in await next_leader.open_requests()] == [request_id]
    assert await next_leader.take(request_id)
    assert committed_rows(storage, "SELECT taken_by FROM relayed_requests") == [("leader:3",)]


async def test_an_untaken_request_is_withdrawn_once_and_then_cannot_be_taken(
    storage: Storage, queue: RelayQueue, clock: Clock
) -> None:
    kept = await queue.put("GET", "/api/services", HEADERS, b"", CLIENT)
    request_id = await queue.put("GET", "/api/deployments", HEADERS, b"", CLIENT)
    assert await queue.withdraw(request_id)
    assert not await queue.withdraw(request_id)
    assert not await leader_queue(storage, clock).take(request_id)
    assert await queue.answer_of(request_id) is None
    assert [r.id for r in await queue.open_requests()] == [kept]
    assert committed_rows(storage, "SELECT id FROM relayed_requests") == [(kept,)]


async def test_the_answer_is_given_back_whole_once_stored(
    storage: Storage, queue: RelayQueue, clock: Clock
) -> None:
    request_id = await queue.put("POST", TARGET, HEADERS, BODY, CLIENT)
    other_id = await queue.put("POST", "/api/other", [], b"", CLIENT)
    leader = leader_queue(storage, clock)
    assert await queue.answer_of(request_id) is None
    assert await leader.take(request_id)
    assert await queue.answer_of(request_id) is None  # taken is not answered
    answer = RelayedAnswer(
        201,
        [
            ("content-type", "application/octet-stream"),
            ("set-cookie", "a=1; Path=/"),
            ("set-cookie", "b=ÿé; Path=/"),
            ("x-empty", ""),
        ],
        BODY[::-1],
    )
    clock.now = T0 + timedelta(seconds=3)
    await leader.answer(request_id, answer)
    await leader.answer(other_id, RelayedAnswer(204, [], b""))
    assert await queue.answer_of(request_id) == answer
    assert await queue.answer_of(other_id) == RelayedAnswer(204, [], b"")
    assert committed_rows(
        storage, f"SELECT status, done_at FROM relayed_requests WHERE id = {request_id}"
    ) == [(201, clock.now.isoformat())]


async def test_open_requests_are_the_unanswered_ones_oldest_first(
    storage: Storage, queue: RelayQueue, clock: Clock
) -> None:
    ids = [await queue.put("POST", f"/r/{n}", [], str(n).encode(), CLIENT) for n in range(5)]
    leader = leader_queue(storage, clock)
    assert await leader.take(ids[1])
    await leader.answer(ids[1], RelayedAnswer(200, [], b""))
    assert await leader.take(ids[3])  # taken, not answered: still open
    assert await queue.withdraw(ids[4])
    open_now = await queue.open_requests()
    assert [r.id for r in open_now] == [ids[0], ids[2], ids[3]]
    assert [r.target for r in open_now] == ["/r/0", "/r/2", "/r/3"]
    assert [r.body for r in open_now] == [b"0", b"2", b"3"]
    assert [r.id for r in await queue.open_requests(after=ids[0])] == [ids[2], ids[3]]
    assert [r.id for r in await queue.open_requests(limit=2)] == [ids[0], ids[2]]


async def test_prune_forgets_only_answers_older_than_kept(
    storage: Storage, queue: RelayQueue, clock: Clock
) -> None:
    leader = leader_queue(storage, clock)
    old = await queue.put("POST", "/old", [], b"", CLIENT)
    never_answered = await queue.put("POST", "/never", [], b"", CLIENT)
    assert await leader.take(old)
    await leader.answer(old, RelayedAnswer(200, [], b""))  # answered at T0
    clock.now = T0 + timedelta(minutes=30)
    recent = await queue.put("POST", "/recent", [], b"", CLIENT)
    assert await leader.take(recent)
    await leader.answer(recent, RelayedAnswer(200, [], b""))  # answered at T0 + 30 min

    def remaining() -> list[int]:
        rows = committed_rows(storage, "SELECT id FROM relayed_requests ORDER BY id")
        return [int(row[0]) for row in rows]

    keep = timedelta(hours=1)
    clock.now = T0 + keep  # the oldest answer is exactly as old as kept: it stays
    assert await queue.prune(keep) == 0
    assert remaining() == [old, never_answered, recent]
    clock.now = T0 + keep + timedelta(seconds=1)
    assert await queue.prune(keep) == 1
    assert remaining() == [never_answered, recent]
    clock.now = T0 + timedelta(days=30)  # an open request is never pruned, however old
    assert await queue.prune(keep) == 1
    assert remaining() == [never_answered]
    assert [r.id for r in await queue.open_requests()] == [never_answered]
