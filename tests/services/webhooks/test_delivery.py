import asyncio
import base64
import json
from pathlib import Path

import httpx

from config.integrations import Webhook
from services.records.audit import AuditLog
from services.records.storage import Storage
from services.webhooks.delivery import WebhookSender
from services.webhooks.queue import WebhookQueue

SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()


def hook(**extra: object) -> Webhook:
    values: dict[str, object] = {
        "url": "http://receiver.test/hooks?token=url-secret",
        "events": ["*"],
        "secret_env": "HOOK_SECRET",
        "backoff_s": 0.01,
        "backoff_max_s": 0.05,
        **extra,
    }
    return Webhook.model_validate(values)


async def run_until(queue: WebhookQueue, done: int, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while sum(s.delivered + s.gave_up_total for s in await queue.status()) < done:
            await asyncio.sleep(0.01)


async def test_posts_in_order_per_subject_retrying_failures(database: str) -> None:
    seen: list[tuple[str, int]] = []
    answers = iter([503, 200, 500, 200, 200, 200, 200])

    def receiver(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        status = next(answers)
        if status == 200:
            seen.append((body["data"]["subject"], body["data"]["audit_id"]))
        return httpx.Response(status)

    subs = {"ci": hook()}
    async with Storage(database) as storage:
        queue = WebhookQueue(storage, lambda: subs)
        audit = AuditLog(storage, tap=queue)
        events = [await audit.record("deploy.host", "a", "web") for _ in range(4)]
        sender = WebhookSender(
            queue,
            lambda: subs,
            audit,
            secrets={"HOOK_SECRET": SECRET}.get,
            poll_s=0.02,
            transport=httpx.MockTransport(receiver),
        )
        sender.start()
        try:
            await run_until(queue, 4)
        finally:
            await sender.stop()
        assert seen == [("web", e.id) for e in events]
        (status,) = await queue.status()
        assert status.failed == 2 and not status.failing and status.pending == 0


async def test_a_missing_secret_is_a_visible_failure_never_a_post(
    tmp_path: Path, database: str
) -> None:
    posted: list[httpx.Request] = []
    subs = {"ci": hook(max_attempts=2)}
    async with Storage(database) as storage:
        queue = WebhookQueue(storage, lambda: subs)
        audit = AuditLog(storage, tap=queue)
        await audit.record("flag.changed", "a", "dark")
        sender = WebhookSender(
            queue,
            lambda: subs,
            audit,
            secrets={}.get,
            poll_s=0.02,
            transport=httpx.MockTransport(lambda r: posted.append(r) or httpx.Response(200)),
        )
        sender.start()
        try:
            await run_until(queue, 1)
            async with asyncio.timeout(5):  # the give-up is audited just after it is counted
                while not await audit.events(kind="webhook.gave_up"):
                    await asyncio.sleep(0.01)
        finally:
            await sender.stop()
        (status,) = await queue.status()
        assert status.last_error == "the environment variable HOOK_SECRET is not set"
        assert posted == [] and status.gave_up == 1
        gave_up = await audit.events(kind="webhook.gave_up")
        assert gave_up[0].subject == "ci" and gave_up[0].data["attempts"] == 2


async def test_errors_never_carry_the_url(database: str) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}", request=request)

    subs = {"ci": hook(max_attempts=1)}
    async with Storage(database) as storage:
        queue = WebhookQueue(storage, lambda: subs)
        audit = AuditLog(storage, tap=queue)
        await audit.record("flag.changed", "a", "dark")
        sender = WebhookSender(
            queue,
            lambda: subs,
            audit,
            secrets={"HOOK_SECRET": SECRET}.get,
            poll_s=0.02,
            transport=httpx.MockTransport(refuse),
        )
        sender.start()
        try:
            await run_until(queue, 1)
        finally:
            await sender.stop()
        (status,) = await queue.status()
        assert status.last_error == "ConnectError: cannot reach <url>"


async def test_stop_ends_the_sender_even_when_it_is_woken_at_that_moment(database: str) -> None:
    """stop() cancels the loop just as a finished POST (or a new event) wakes it; on Python
    3.11 asyncio.wait_for swallowed that cancel and the loop ran on, so stop() never returned."""
    subs = {"ci": hook()}
    async with Storage(database) as storage:
        queue = WebhookQueue(storage, lambda: subs)
        audit = AuditLog(storage, tap=queue)
        sender = WebhookSender(queue, lambda: subs, audit, poll_s=5)
        for _ in range(20):
            sender.start()
            await asyncio.sleep(0.01)  # the loop waits for its wake
            sender.wake()
            stopping = asyncio.create_task(sender.stop())
            done, _ = await asyncio.wait({stopping}, timeout=5)
            assert stopping in done, "stop() did not return: the loop swallowed its cancel"
