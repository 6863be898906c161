"""The HTTP side of a following opsgate, and the leader's side of what followers relay.

Several opsgates share one PostgreSQL; one leads and acts. Every one of them serves HTTP, so
Alertmanager, CI and the dashboard can be pointed at any of them behind a load balancer:

- a follower answers /health, /metrics and OFREP itself (OFREP from its own copy of the flags,
  read again from the database when they change);
- anything else it stores whole (services/records/relay.py) before answering, and waits up to
  OPSGATE_RELAY_WAIT_S for the leader to replay it through the leader's own HTTP app. The
  leader's answer is given as it is (the same status, headers and body as the leader's own
  port gives). No answer in time: a change gets 202 (it is stored; the leader acts on it when
  one leads), a read gets 503 and is taken back;
- Telegram's updates (webhook mode) are checked against the webhook secret, stored and
  answered 200 at once: the leader handles them in the order they came.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.http.alert_webhooks import MAX_ALERTMANAGER_BYTES
from bot.http.app import MAX_UPDATE_BYTES, SECRET_HEADER, webhook_path
from bot.http.metrics import metrics_endpoint, metrics_response
from bot.http.ofrep import PREFIX as OFREP_PREFIX
from bot.http.ofrep import ofrep_routes
from services.container import Services
from services.records.leadership import Leadership
from services.records.postgres import PgListener
from services.records.relay import (
    ANSWERED_CHANNEL,
    CHANNEL,
    RelayedAnswer,
    RelayedRequest,
    RelayQueue,
)

log = logging.getLogger(__name__)

MAX_RELAYED_BYTES = MAX_ALERTMANAGER_BYTES  # the largest body any route of the leader takes
REPLAY_TIMEOUT_S = 30.0  # a route of the leader's that takes longer is answered 504
SWEEP_S = 1.0  # the leader looks for relayed requests at least this often
FLAGS_CHECK_S = 1.0  # how stale a follower's flags can be
KEEP_ANSWERED = timedelta(hours=1)
READS = frozenset({"GET", "HEAD", "OPTIONS"})


class FollowerApp:
    """The ASGI app a follower serves while another opsgate leads."""

    def __init__(
        self,
        services: Services,
        leadership: Leadership,
        queue: RelayQueue,
        wait_s: float,
        api_token: str = "",
        webhook_secret: str | None = None,
        webhook_url: str = "",
    ) -> None:
        self._services = services
        self._leadership = leadership
        self._queue = queue
        self._wait_s = wait_s
        self._webhook_secret = webhook_secret
        self._webhook_path = webhook_path(webhook_url) if webhook_secret is not None else None
        self.closing = asyncio.Event()  # set when this follower is about to lead
        self._answered = asyncio.Event()  # replaced each time answers were stored
        self.waiting = 0  # relayed requests waiting for the leader's answer
        routes = [
            Route("/health", self._health, methods=["GET"]),
            Route("/metrics", self._metrics, methods=["GET"]),
            *ofrep_routes(services.flag_source, api_token),
        ]
        self._local = Starlette(routes=routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        served_here = path in ("/health", "/metrics") or path.startswith(OFREP_PREFIX)
        if scope["type"] != "http" or served_here:
            await self._local(scope, receive, send)
        else:
            response = await self._relay(scope, receive)
            await response(scope, receive, send)

    async def _health(self, request: Request) -> Response:
        services, leadership = self._services, self._leadership
        writable = await services.storage.is_writable()
        leader = await leadership.current()
        uptime = round(services.uptime_seconds(), 1)
        body = {
            "status": "following" if writable else "degraded",
            "role": "follower",
            "this": leadership.name,
            "version": services.version,
            "uptime": uptime,
            "uptime_seconds": uptime,
            "database_writable": writable,
            "leader": leader.as_json() if leader else None,
            "relay": {"waiting": self.waiting},
        }
        return JSONResponse(body, 200 if writable else 503)

    async def _metrics(self, request: Request) -> Response:
        return metrics_response(await metrics_endpoint(self._services))

    async def _relay(self, scope: Scope, receive: Receive) -> ASGIApp:
        method = str(scope["method"])
        telegram = method == "POST" and scope["path"] == self._webhook_path
        limit = MAX_UPDATE_BYTES if telegram else MAX_RELAYED_BYTES
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        if telegram and not self._telegram_secret_ok(headers):
            log.warning("refused a webhook request without the right secret header")
            return JSONResponse({"error": "forbidden"}, 403)
        try:
            body = await _read_body(receive, limit)
        except _ClientGone:
            return Response(status_code=400)  # never sent: the connection is closed
        if body is None:
            return JSONResponse({"error": f"body over {limit} bytes"}, 413)
        target = scope.get("raw_path") or scope["path"].encode()
        target = target.decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        client = scope.get("client")
        peer = f"{client[0]}:{client[1]}" if client else ""
        request_id = await self._queue.put(method, target, headers, body, peer)
        if telegram:
            return Response(status_code=200)  # stored: the leader handles it in order
        self.waiting += 1
        try:
            answer = await self._answer(request_id)
        finally:
            self.waiting -= 1
        if answer is not None:
            if any(name.lower() == "set-cookie" for name, _ in answer.headers):
                await self._queue.forget_answer(request_id)  # a credential: not kept
            return _Relayed(answer)
        if method in READS and await self._queue.withdraw(request_id):
            return JSONResponse(
                {"error": "no leading opsgate answered in time: try again"},
                503,
                {"Retry-After": "1"},
            )
        return JSONResponse(
            {
                "status": "queued",
                "request": request_id,
                "detail": "stored; the leading opsgate acts on it as soon as one leads",
            },
            202,
        )

    def _telegram_secret_ok(self, headers: list[tuple[str, str]]) -> bool:
        assert self._webhook_secret is not None
        given = next((v for k, v in headers if k.lower() == SECRET_HEADER.lower()), "")
        return hmac.compare_digest(given.encode(), self._webhook_secret.encode())

    def close(self) -> None:
        """This follower is about to lead: requests waiting are answered 202 at once (they
        stay stored, and it acts on them itself)."""
        self.closing.set()
        self._answered.set()

    async def listen_for_answers(self, wake: Callable[[float], Awaitable[None]]) -> None:
        """Wake the waiting requests whenever the leader stored answers (`wake` returns on
        PostgreSQL's notification, or after a timeout)."""
        while True:
            await wake(1.0)
            answered, self._answered = self._answered, asyncio.Event()
            answered.set()

    async def _answer(self, request_id: int) -> RelayedAnswer | None:
        """The leader's answer, looked for whenever answers were stored and every so often;
        None when none came in time, or this follower is about to lead (the request stays
        stored: it acts on it)."""
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + self._wait_s, 0.02
        while not self.closing.is_set():
            answered = self._answered  # before looking: an answer stored meanwhile wakes it
            answer = await self._queue.answer_of(request_id)
            if answer is not None:
                return answer
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(pause, remaining)):
                    await answered.wait()
            pause = min(pause * 2, 0.25)
        return None


class _Relayed:
    """A leader's answer, headers and all, as its app gave them."""

    def __init__(self, answer: RelayedAnswer) -> None:
        self._answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = self._answer
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})


class _ClientGone(Exception):
    """The client hung up before its whole body was in: nothing to store, no one to answer."""


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body; None when it is over `limit` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def keep_flags_current(services: Services, every_s: float = FLAGS_CHECK_S) -> None:
    """A follower's OFREP answers from its own copy of the flags: read them again when the
    leader changed them."""
    while True:
        try:
            await services.flags.reload_if_changed()
        except Exception:  # the database is away for a moment: try again on the next round
            log.warning("could not read the flags again", exc_info=True)
        await asyncio.sleep(every_s)


async def replay(app: ASGIApp, request: RelayedRequest) -> RelayedAnswer:
    """Run a relayed request through the leader's own HTTP app, in process."""
    path, _, query = request.target.partition("?")
    host, _, port = request.client.rpartition(":")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": unquote(path),
        "raw_path": path.encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers],
        "client": (host, int(port)) if port.isdigit() else None,
        "server": None,
        "state": {},
    }
    sent = False
    done = asyncio.Event()

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    status, headers, chunks = 500, [], []

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = int(message["status"])
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message["headers"]]
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                done.set()

    try:
        async with asyncio.timeout(REPLAY_TIMEOUT_S):
            await app(scope, receive, send)
    except TimeoutError:
        log.error("a relayed %s %s took over %.0f s", request.method, path, REPLAY_TIMEOUT_S)
        return _error(504, f"the leading opsgate did not finish in {REPLAY_TIMEOUT_S:.0f} s")
    except Exception:
        log.exception("a relayed %s %s failed", request.method, path)
        if not done.is_set():  # no whole answer: the app's own error page was not sent
            return _error(500, "the leading opsgate failed on this request")
    finally:
        done.set()
    # A whole answer: what the leader's port gives, also when the app raised after it
    # (Starlette's error page for a route that raised, a background task that failed).
    return RelayedAnswer(status, headers, b"".join(chunks))


def _error(status: int, text: str) -> RelayedAnswer:
    body = json.dumps({"error": text}).encode()
    headers = [("content-length", str(len(body))), ("content-type", "application/json")]
    return RelayedAnswer(status, headers, body)


class RelayWorker:
    """The leader's side: acts on what followers stored, oldest first, one at a time (so
    Telegram's updates keep their order), and stores each answer."""

    def __init__(
        self,
        app: ASGIApp,
        queue: RelayQueue,
        wake: Callable[[float], Awaitable[None]],
        sweep_s: float = SWEEP_S,
    ) -> None:
        self._app = app
        self._queue = queue
        self._wake = wake  # returns on a notification of a new request, or after a timeout
        self._sweep_s = sweep_s
        self.replayed = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        pruned_at = loop.time()
        while True:
            try:
                await self.work_off()
                if loop.time() - pruned_at > 600:
                    await self._queue.prune(KEEP_ANSWERED)
                    pruned_at = loop.time()
            except Exception:  # the database is away: leadership's watch decides what next
                log.warning("could not read the relayed requests", exc_info=True)
            await self._wake(self._sweep_s)

    async def work_off(self) -> int:
        """Act on every open request; how many. Each is claimed just before it is replayed:
        a read still waiting behind a slow one can be taken back by its follower."""
        done = 0
        while requests := await self._queue.claim(limit=1):
            answer = await replay(self._app, requests[0])
            await self._queue.answer(requests[0].id, answer)
            done += 1
        self.replayed += done
        return done


def relay_worker(app: ASGIApp, queue: RelayQueue, url: str) -> tuple[RelayWorker, PgListener]:
    """The leader's worker, woken by PostgreSQL's NOTIFY on a connection of its own."""
    listener = PgListener(url, CHANNEL)
    return RelayWorker(app, queue, listener.wait), listener


def answers_listener(url: str) -> PgListener:
    """What wakes a follower's waiting requests: a connection of its own, listening."""
    return PgListener(url, ANSWERED_CHANNEL)
