"""The sender: its own asyncio task POSTs queued events, head-first per subject, and retries.

Never awaited by the chat or the pipeline: the audit log only writes rows and wakes it.
A 2xx answer is delivered; anything else (4xx, 5xx, a timeout, a refused connection, a
secret that cannot be used) is a failed attempt, retried with capped exponential backoff
until the subscription's max_attempts or max_age_h, then given up and recorded.
At-least-once: a crash between the answer and the commit sends the same webhook-id again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Callable
from datetime import datetime

import httpx

from config.integrations import Webhook
from services.records.audit import AuditLog, utc_now
from services.tls import client_context
from services.webhooks.queue import Delivery, Subscriptions, WebhookQueue
from services.webhooks.signing import WebhookError, secret_key, signed_headers

log = logging.getLogger(__name__)

Secrets = Callable[[str], str | None]  # env var name -> its value


class WebhookSender:
    """Started and stopped with opsgate; at most `concurrency` POSTs at once."""

    def __init__(
        self,
        queue: WebhookQueue,
        subscriptions: Subscriptions,
        audit: AuditLog,
        secrets: Secrets = os.environ.get,
        clock: Callable[[], datetime] = utc_now,
        poll_s: float = 1.0,
        concurrency: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,  # tests: httpx.MockTransport
    ) -> None:
        self._queue = queue
        self._subscriptions = subscriptions
        self._audit = audit
        self._secrets = secrets
        self._clock = clock
        self._poll_s = poll_s
        self._concurrency = concurrency
        self._transport = transport
        self._wake = asyncio.Event()
        self._busy: dict[tuple[str, str], asyncio.Task[None]] = {}  # (subscription, subject)
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        queue.on_enqueue = self.wake

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._client = httpx.AsyncClient(
                follow_redirects=False, verify=client_context(), transport=self._transport
            )
            self._task = asyncio.create_task(self._run(), name="webhook-sender")

    async def stop(self) -> None:
        """Cancel the loop and any POST in flight (their rows stay pending for the next run)."""
        tasks = [t for t in (self._task, *self._busy.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        self._busy.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            wait = self._poll_s
            try:
                wait = await self._launch_due()
            except Exception:
                log.exception("webhook sender: could not read the queue")
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that lands as
            # the wake is set (stop() does both), and this loop then never ends.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.01)):
                    await self._wake.wait()

    async def _launch_due(self) -> float:
        """Start a POST for each due head not already in flight; seconds to the next due."""
        now = self._clock()
        wait = self._poll_s
        for delivery in await self._queue.heads():
            key = (delivery.subscription, delivery.subject)
            if key in self._busy:
                continue
            if delivery.next_at > now:
                wait = min(wait, (delivery.next_at - now).total_seconds())
                continue
            if len(self._busy) >= self._concurrency:
                break
            task = asyncio.create_task(self._deliver(delivery), name=f"webhook-{delivery.id}")
            self._busy[key] = task
            task.add_done_callback(functools.partial(self._done, key))
        return wait

    def _done(self, key: tuple[str, str], _: asyncio.Task[None]) -> None:
        self._busy.pop(key, None)
        self._wake.set()

    async def _deliver(self, delivery: Delivery) -> None:
        hook = self._subscriptions().get(delivery.subscription)
        if hook is None:
            return  # removed from the ops file meanwhile: its rows wait, untouched
        try:
            error = await self._post(delivery, hook)
            if error is None:
                await self._queue.delivered(delivery)
                return
            log.warning(
                "webhook %s: %s (message %s) failed, attempt %d: %s",
                delivery.subscription,
                delivery.kind,
                delivery.message_id,
                delivery.attempts + 1,
                error,
            )
            if await self._queue.failed(delivery, hook, error):
                await self._gave_up(delivery, error)
        except Exception:
            log.exception("webhook %s: delivery %d broke", delivery.subscription, delivery.id)

    async def _post(self, delivery: Delivery, hook: Webhook) -> str | None:
        """None when delivered (2xx), else the error, fit for /health (no secret, no URL)."""
        secret = self._secrets(hook.secret_env)
        if not secret:
            return f"the environment variable {hook.secret_env} is not set"
        try:
            key = secret_key(secret)
        except WebhookError as exc:
            return f"{hook.secret_env}: {exc}"
        body = delivery.body.encode()
        timestamp = int(self._clock().timestamp())
        headers = signed_headers(key, delivery.message_id, timestamp, body)
        assert self._client is not None
        url = str(hook.url)
        try:
            response = await self._client.post(
                url, content=body, headers=headers, timeout=hook.timeout_s
            )
        except httpx.TimeoutException:
            return f"no answer within {hook.timeout_s:g} s"
        except httpx.HTTPError as exc:
            text = str(exc).replace(url, "<url>") or "no detail"
            return f"{type(exc).__name__}: {text}"[:300]
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    async def _gave_up(self, delivery: Delivery, error: str) -> None:
        log.error(
            "webhook %s: gave up on %s (message %s): %s",
            delivery.subscription,
            delivery.kind,
            delivery.message_id,
            error,
        )
        await self._audit.record(
            "webhook.gave_up",
            actor="opsgate",
            subject=delivery.subscription,
            data={
                "message_id": delivery.message_id,
                "kind": delivery.kind,
                "event_id": delivery.event_id,
                "attempts": delivery.attempts + 1,
                "error": error,
            },
        )
