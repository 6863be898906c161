from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from config.integrations import Webhook
from services.records.audit import AuditLog
from services.records.storage import Storage
from services.webhooks.queue import WebhookQueue, backoff


def hook(**extra: object) -> Webhook:
    values: dict[str, object] = {
        "url": "http://127.0.0.1:9/x",
        "events": ["deploy.*"],
        "secret_env": "S",
        **extra,
    }
    return Webhook.model_validate(values)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_wanted_events_are_queued_with_their_audit_row(tmp_path: Path, database: str) -> None:
    subs = {"ci": hook(), "all": hook(events=["*"])}
    async with Storage(database) as storage:
        queue = WebhookQueue(storage, lambda: subs)
        audit = AuditLog(storage, tap=queue)
        await audit.record("deploy.requested", "alice", "web", {"version": "v1"})
        await audit.record("flag.changed", "bob", "dark")
        await audit.record("webhook.gave_up", "opsgate", "ci")  # never sent out
        heads = await queue.heads()
        assert sorted((d.subscription, d.kind) for d in heads) == [
            ("all", "deploy.requested"),
            ("all", "flag.changed"),
            ("ci", "deploy.requested"),
        ]
        assert len({d.message_id for d in heads}) == 3


async def test_a_rolled_back_transaction_leaves_neither_event_nor_delivery(
    tmp_path: Path,
    database: str,
) -> None:
    async with Storage(database) as storage:
        queue = WebhookQueue(storage, lambda: {"ci": hook()})
        audit = AuditLog(storage, tap=queue)
        with pytest.raises(RuntimeError):
            async with storage.transaction():
                await audit.record("deploy.requested", "alice", "web")
                raise RuntimeError("the caller's work failed")
        assert await queue.heads() == [] and await audit.events() == []


async def test_heads_are_the_oldest_per_subject(tmp_path: Path, database: str) -> None:
    async with Storage(database) as storage:
        queue = WebhookQueue(storage, lambda: {"ci": hook()})
        audit = AuditLog(storage, tap=queue)
        first = await audit.record("deploy.requested", "a", "web")
        await audit.record("deploy.host", "a", "web")
        other = await audit.record("deploy.requested", "a", "api")
        assert sorted(d.event_id for d in await queue.heads()) == [first.id, other.id]


async def test_failures_back_off_capped_then_give_up_visibly(tmp_path: Path, database: str) -> None:
    clock = Clock()
    sub = hook(backoff_s=1, backoff_max_s=4, max_attempts=4)
    assert [backoff(sub, n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 4, 4]
    async with Storage(database) as storage:
        queue = WebhookQueue(storage, lambda: {"ci": sub}, clock)
        await AuditLog(storage, tap=queue).record("deploy.requested", "a", "web")
        for attempt in (1, 2, 3):
            (head,) = await queue.heads()
            assert not await queue.failed(head, sub, "HTTP 503")
            assert (await queue.heads())[0].next_at == clock.now + timedelta(
                seconds=backoff(sub, attempt)
            )
        (status,) = await queue.status()
        assert status.failing and status.pending == 1 and status.failed == 3
        assert status.last_error == "HTTP 503"
        (head,) = await queue.heads()
        assert await queue.failed(head, sub, "HTTP 503")  # the 4th: given up
        (status,) = await queue.status()
        assert status.pending == 0 and status.gave_up == 1 and status.gave_up_total == 1
        assert await queue.heads() == []


async def test_too_old_is_given_up_and_delivered_is_counted(tmp_path: Path, database: str) -> None:
    clock = Clock()
    sub = hook(max_age_h=1)
    async with Storage(database) as storage:
        queue = WebhookQueue(storage, lambda: {"ci": sub}, clock)
        audit = AuditLog(storage, tap=queue)
        await audit.record("deploy.requested", "a", "web")
        await audit.record("deploy.requested", "a", "api")
        old, young = await queue.heads()
        await queue.delivered(young)
        clock.now += timedelta(hours=2)
        assert await queue.failed(old, sub, "HTTP 500")
        (status,) = await queue.status()
        assert status.delivered == 1 and status.gave_up == 1 and status.failing
