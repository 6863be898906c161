"""RelayQueue on both databases: a follower's request stored whole, claimed by the leader or
withdrawn by its follower (never both), claimed oldest first until answered, answered, pruned
once long answered (services/records/relay.py)."""

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


def leader_queue(storage: Storage, clock: Clock, name: str = "leader:2") -> RelayQueue:
    """The leader's queue: another process's name (on the same connection, for the test)."""
    return RelayQueue(storage, name, clock)


def ids(requests: list[RelayedRequest]) -> list[int]:
    return [request.id for request in requests]


async def test_a_request_is_stored_whole_and_another_connection_claims_it(
    storage: Storage, queue: RelayQueue, database: str
) -> None:
    request_id = await queue.put("POST", TARGET, HEADERS, BODY, CLIENT)
    empty_id = await queue.put("GET", "/health?", [], b"", "")
    assert empty_id > request_id
    rows = committed_rows(
        storage,
        "SELECT received_at, received_by, taken_by, status, done_at FROM relayed_requests"
        " ORDER BY id",
    )
    assert rows == [(T0.isoformat(), "follower:1", None, None, None)] * 2
    # Committed on return: another opsgate (its own connection) reads the same, byte for byte.
    async with Storage(database) as other:
        claimed = await RelayQueue(other, "leader:2").claim()
    assert claimed == [
        RelayedRequest(request_id, "POST", TARGET, HEADERS, BODY, CLIENT),
        RelayedRequest(empty_id, "GET", "/health?", [], b"", ""),
    ]
    # The claim is committed too (SQLite: UPDATE ... RETURNING in autocommit).
    assert committed_rows(storage, "SELECT taken_by FROM relayed_requests") == [
        ("leader:2",),
        ("leader:2",),
    ]


async def test_a_claimed_request_can_no_longer_be_withdrawn(
    storage: Storage, queue: RelayQueue, clock: Clock
) -> None:
    request_id = await queue.put("POST", "/api/deploy", HEADERS, BODY, CLIENT)
    leader = leader_queue(storage, clock)
    assert ids(await leader.claim()) == [request_id]
    assert not await queue.withdraw(request_id)
    assert committed_rows(storage, "SELECT id, taken_by FROM relayed_requests") == [
        (request_id, "leader:2")
    ]
    # Once answered it is claimed no more (nor withdrawn).
    await leader.answer(request_id, RelayedAnswer(200, [], b"done"))
    assert await leader.claim() == []
    assert not await queue.withdraw(request_id)
    assert await queue.answer_of(request_id) == RelayedAnswer(200, [], b"done")


async def test_an_unanswered_request_is_claimed_again_by_the_next_leader(
    storage: Storage, queue: RelayQueue, clock: Clock
) -> None:
    """At least once: a leader that died before answering leaves it open for the next one."""
    request_id = await queue.put("POST", "/api/deploy", [], b"{}", CLIENT)
    assert ids(await leader_queue(storage, clock).claim()) == [request_id]
    assert ids(await leader_queue(storage, clock, "leader:3").claim()) == [request_id]
    assert committed_rows(storage, "SELECT taken_by FROM relayed_requests") == [("leader:3",)]


async def test_an_unclaimed_request_is_withdrawn_once_and_then_never_claimed(
    storage: Storage, queue: RelayQueue, clock: Clock
) -> None:
    kept = await queue.put("GET", "/api/services", HEADERS, b"", CLIENT)
    request_id = await queue.put("GET", "/api/deployments", HEADERS, b"", CLIENT)
    assert await queue.withdraw(request_id)
    assert not await queue.withdraw(request_id)
    assert await queue.answer_of(request_id) is None
    assert committed_rows(storage, "SELECT id FROM relayed_requests") == [(kept,)]
    assert ids(await leader_queue(storage, clock).claim()) == [kept]


async def test_the_answer_is_given_back_whole_once_stored(
    storage: Storage, queue: RelayQueue, clock: Clock
) -> None:
    request_id = await queue.put("POST", TARGET, HEADERS, BODY, CLIENT)
    other_id = await queue.put("POST", "/api/other", [], b"", CLIENT)
    leader = leader_queue(storage, clock)
    assert await queue.answer_of(request_id) is None
    assert ids(await leader.claim()) == [request_id, other_id]
    assert await queue.answer_of(request_id) is None  # claimed is not answered
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


async def test_claims_are_the_unanswered_requests_oldest_first(
    storage: Storage, queue: RelayQueue, clock: Clock
) -> None:
    made = [await queue.put("POST", f"/r/{n}", [], str(n).encode(), CLIENT) for n in range(6)]
    leader = leader_queue(storage, clock)
    assert await queue.withdraw(made[4])
    assert ids(await leader.claim(limit=2)) == made[:2]
    await leader.answer(made[1], RelayedAnswer(200, [], b""))
    # Claimed and not answered (made[0]) is claimed again; answered and withdrawn ones not.
    claimed = await leader.claim()
    assert ids(claimed) == [made[0], made[2], made[3], made[5]]
    assert [r.target for r in claimed] == ["/r/0", "/r/2", "/r/3", "/r/5"]
    assert [r.body for r in claimed] == [b"0", b"2", b"3", b"5"]
    assert ids(await leader.claim(limit=3)) == [made[0], made[2], made[3]]
    assert (
        committed_rows(
            storage, "SELECT id FROM relayed_requests WHERE taken_by IS NULL ORDER BY id"
        )
        == []
    )


async def test_prune_forgets_only_answers_older_than_kept(
    storage: Storage, queue: RelayQueue, clock: Clock
) -> None:
    leader = leader_queue(storage, clock)
    old = await queue.put("POST", "/old", [], b"", CLIENT)
    never_answered = await queue.put("POST", "/never", [], b"", CLIENT)
    assert ids(await leader.claim()) == [old, never_answered]
    await leader.answer(old, RelayedAnswer(200, [], b""))  # answered at T0
    clock.now = T0 + timedelta(minutes=30)
    recent = await queue.put("POST", "/recent", [], b"", CLIENT)
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
    assert ids(await leader.claim()) == [never_answered]


async def test_secrets_go_once_acted_on_and_once_answered(
    storage: Storage, queue: RelayQueue, clock: Clock
) -> None:
    """Headers can carry bearer tokens and secrets, answers a session cookie: once acted on,
    the request's headers and body go; once given, the answer's (forget_answer)."""
    secret = [("authorization", "Bearer s3cret"), ("x-telegram-bot-api-secret-token", "t0p")]
    request_id = await queue.put("POST", "/api/x", secret, b'{"token": "s3cret"}', CLIENT)
    [claimed] = await leader_queue(storage, clock).claim()
    assert claimed.headers == secret  # the leader replays it whole
    cookie = [("set-cookie", "session=abc"), ("content-length", "2")]
    await leader_queue(storage, clock).answer(request_id, RelayedAnswer(200, cookie, b"ok"))
    answer = await queue.answer_of(request_id)
    assert answer == RelayedAnswer(200, cookie, b"ok")  # what the follower gives
    await queue.forget_answer(request_id)
    rows = committed_rows(
        storage,
        "SELECT method, target, headers, body, status, answer_headers, answer_body, taken_by"
        " FROM relayed_requests",
    )
    assert [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows] == [
        ("POST", "/api/x", "[]", b"", 200, "[]", b"", "leader:2")
    ]
