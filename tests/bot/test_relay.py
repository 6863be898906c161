"""A follower's HTTP side and the leader's relay worker, in process (bot/http/relay.py).

The session's real PostgreSQL; the follower served by a real uvicorn on loopback, httpx as
the client; the "leader" is a small Starlette app of our own, replayed by a RelayWorker over
its own database connection (as another opsgate would).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bot.dev.harness.databases import committed_rows
from bot.dev.harness.postgres import PostgresCluster
from bot.http import relay
from bot.http.app import SECRET_HEADER
from bot.http.relay import FollowerApp, RelayWorker, answers_listener, relay_worker
from bot.http.server import BackgroundHTTPServer
from config.opsfile import parse_ops_text
from services.container import Services
from services.records.leadership import Leadership
from services.records.postgres import PgListener
from services.records.relay import CHANNEL, RelayedAnswer, RelayQueue
from services.records.storage import Storage

TIMEOUT_S = 30  # a bound for a hung test, not a measure
OPS = """
[people]
1 = "alice"
"""
SECRET = "relay-webhook-secret_0123456789"
WEBHOOK_URL = "https://bot.example/tg/hook-path"
ADDED_BY_UVICORN = ("date", "server")


def leader_app(updates: list[bytes], gate: asyncio.Event, entered: asyncio.Event) -> Starlette:
    """The leader's HTTP app, as far as these tests need one."""

    async def echo(request: Request) -> Response:
        body = await request.body()
        client = request.client.host if request.client else ""
        response = Response(
            body,
            status_code=201,
            media_type=request.headers.get("content-type"),
            headers={
                "x-echo-name": request.path_params["name"],
                "x-echo-path": request.url.path,
                "x-echo-query": request.url.query,
                "x-echo-tags": ",".join(request.headers.getlist("x-tag")),
                "x-echo-client": client,
                "x-latin": "ÿé",
            },
        )
        response.set_cookie("first", "1", path="/")
        response.set_cookie("second", "2", httponly=True)
        return response

    async def items(request: Request) -> Response:
        return JSONResponse({"q": request.query_params.getlist("q")})

    async def teapot(request: Request) -> Response:
        return Response("short and stout", status_code=418, headers={"x-kind": "teapot"})

    async def slow(request: Request) -> Response:
        await asyncio.sleep(TIMEOUT_S * 10)
        return Response("late")

    async def boom(request: Request) -> Response:
        raise RuntimeError("the leader's route failed")

    async def gated(request: Request) -> Response:
        entered.set()
        await gate.wait()
        return Response("gated")

    async def telegram(request: Request) -> Response:
        updates.append(await request.body())
        return Response()

    return Starlette(
        routes=[
            Route("/echo/{name}", echo, methods=["POST"]),
            Route("/items", items, methods=["GET"]),
            Route("/teapot", teapot, methods=["GET"]),
            Route("/slow", slow, methods=["GET"]),
            Route("/boom", boom, methods=["GET"]),
            Route("/gated", gated, methods=["POST"]),
            Route("/tg/hook-path", telegram, methods=["POST"]),
        ]
    )


@dataclass
class LeaderSide:
    app: Starlette
    updates: list[bytes]  # what its Telegram route was given, in order
    queue: RelayQueue
    worker: RelayWorker
    listener: PgListener
    gate: asyncio.Event  # what /gated waits for
    entered: asyncio.Event  # set once /gated was entered
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, worker: RelayWorker | None = None) -> None:
        self.tasks.append(asyncio.create_task((worker or self.worker).run()))


@pytest.fixture
def url(postgres: PostgresCluster) -> str:
    return postgres.schema_url()


@pytest.fixture
async def services(url: str, tmp_path: Path) -> AsyncIterator[Services]:
    storage = await Storage(url).open()
    services = Services.create(parse_ops_text(OPS), tmp_path / "ops.toml", storage)
    yield services
    await services.aclose()


@pytest.fixture
async def serve(services: Services) -> AsyncIterator[Callable[[ASGIApp], Awaitable[str]]]:
    """Serve an app on a port of its own; its base URL. Stopped before the services close."""
    servers: list[BackgroundHTTPServer] = []

    async def start(app: ASGIApp) -> str:
        server = BackgroundHTTPServer(app, "127.0.0.1", 0, graceful_s=1)
        await server.start()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    yield start
    for server in reversed(servers):
        await server.stop()


@pytest.fixture
async def follower(services: Services, url: str) -> AsyncIterator[Callable[..., FollowerApp]]:
    """A follower's app, woken by the leader's stored answers as the runner wakes it."""
    listeners: list[PgListener] = []
    tasks: list[asyncio.Task[None]] = []

    def make(
        wait_s: float = TIMEOUT_S, webhook_secret: str | None = None, webhook_url: str = ""
    ) -> FollowerApp:
        storage = services.storage
        app = FollowerApp(
            services,
            Leadership(storage, "follower:1"),
            RelayQueue(storage, "follower:1"),
            wait_s,
            webhook_secret=webhook_secret,
            webhook_url=webhook_url,
        )
        listeners.append(listener := answers_listener(url))
        tasks.append(asyncio.create_task(app.listen_for_answers(listener.wait)))
        return app

    yield make
    died = [task for task in tasks if task.done()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for listener in listeners:
        await listener.close()
    for task in died:  # it listens all along: what it died of fails the test
        task.result()
        raise AssertionError("the follower stopped listening for answers")


@pytest.fixture
async def leader(url: str) -> AsyncIterator[LeaderSide]:
    """The leading opsgate's side: its app and its worker, on a connection of its own."""
    storage = await Storage(url).open()
    updates: list[bytes] = []
    gate, entered = asyncio.Event(), asyncio.Event()
    app = leader_app(updates, gate, entered)
    queue = RelayQueue(storage, "leader:2")
    worker, listener = relay_worker(app, queue, url)
    side = LeaderSide(app, updates, queue, worker, listener, gate, entered)
    yield side
    gate.set()
    for task in side.tasks:
        task.cancel()
    await asyncio.gather(*side.tasks, return_exceptions=True)
    await listener.close()
    await storage.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as http:
        yield http


def rows(services: Services, query: str) -> list[tuple[Any, ...]]:
    return committed_rows(services.storage, query)


def stored(services: Services) -> list[tuple[Any, ...]]:
    return rows(
        services, "SELECT method, target, taken_by, done_at FROM relayed_requests ORDER BY id"
    )


def answer_of(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    """What a client gets, but for the headers uvicorn adds on any port."""
    headers = [(k, v) for k, v in response.headers.multi_items() if k not in ADDED_BY_UVICORN]
    return response.status_code, headers, response.content


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_relayed_request_gets_the_leaders_own_answer(
    serve: Callable[[ASGIApp], Awaitable[str]],
    follower: Callable[..., FollowerApp],
    leader: LeaderSide,
    client: httpx.AsyncClient,
    services: Services,
) -> None:
    leader.start()
    direct = await serve(leader.app)
    relayed = await serve(follower())
    binary = b"\x00\xff\xfe not UTF-8 \x80" + bytes(range(256))
    tags = [("x-tag", "one"), ("x-tag", "two"), ("content-type", "application/octet-stream")]
    cases: list[tuple[str, str, list[tuple[str, str]], bytes]] = [
        ("POST", "/echo/caf%C3%A9?q=a%20b&q=%C3%A9&q=%2F&plus=1%2B1", tags, binary),
        ("GET", "/items?q=1&q=%26&q=caf%C3%A9", [], b""),
        ("GET", "/teapot", [], b""),
        ("HEAD", "/teapot", [], b""),  # no body, its length all the same
        ("DELETE", "/nowhere", [], b""),  # the leader's own 404
        ("GET", "/echo/x", [], b""),  # and its own 405
    ]
    statuses = []
    for method, target, headers, body in cases:
        own = await client.request(method, direct + target, headers=headers, content=body)
        via = await client.request(method, relayed + target, headers=headers, content=body)
        assert answer_of(via) == answer_of(own), target
        statuses.append(own.status_code)
    assert statuses == [201, 200, 418, 418, 404, 405]

    echoed = await client.post(relayed + cases[0][1], headers=tags, content=binary)
    assert echoed.content == binary
    assert echoed.headers["x-echo-name"] == "café"
    assert echoed.headers["x-echo-query"] == "q=a%20b&q=%C3%A9&q=%2F&plus=1%2B1"
    assert echoed.headers["x-echo-tags"] == "one,two"
    assert echoed.headers["x-echo-client"] == "127.0.0.1"
    assert echoed.headers.get_list("set-cookie") == [
        "first=1; Path=/; SameSite=lax",
        "second=2; HttpOnly; Path=/; SameSite=lax",
    ]
    # Each went through the table, answered by the leader.
    assert [(m, t) for m, t, *_ in stored(services)] == [(m, t) for m, t, *_ in cases] + [
        ("POST", cases[0][1])
    ]
    assert {(by, done is not None) for *_, by, done in stored(services)} == {("leader:2", True)}
    assert leader.worker.replayed == len(cases) + 1
    # Nothing of a request is kept once acted on; of an answer, no cookie once given.
    kept = rows(services, "SELECT headers, body, answer_headers FROM relayed_requests ORDER BY id")
    assert {(headers, bytes(body)) for headers, body, _ in kept} == {("[]", b"")}
    cookies = [i for i, (*_, answer) in enumerate(kept) if "set-cookie" in answer.lower()]
    assert cookies == [] and "content-length" in kept[1][2]  # no cookie: kept


async def test_health_is_answered_by_the_follower_itself(
    serve: Callable[[ASGIApp], Awaitable[str]],
    follower: Callable[..., FollowerApp],
    client: httpx.AsyncClient,
    services: Services,
) -> None:
    base = await serve(follower(wait_s=0.01))
    health = await client.get(base + "/health")
    assert health.status_code == 200
    body = health.json()
    assert (body["status"], body["role"], body["this"]) == ("following", "follower", "follower:1")
    assert body["relay"] == {"waiting": 0} and body["leader"] is None
    assert stored(services) == []


async def test_a_body_over_the_limit_is_refused_and_not_stored(
    serve: Callable[[ASGIApp], Awaitable[str]],
    follower: Callable[..., FollowerApp],
    client: httpx.AsyncClient,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(relay, "MAX_RELAYED_BYTES", 100)
    base = await serve(follower(wait_s=0.05))

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: sent chunked
        for _ in range(3):
            yield b"y" * 40

    refused = await client.post(base + "/echo/x", content=b"x" * 101)
    assert refused.status_code == 413 and "100" in refused.json()["error"]
    refused = await client.post(base + "/echo/x", content=chunks())
    assert refused.status_code == 413
    assert stored(services) == []
    taken = await client.post(base + "/echo/x", content=b"x" * 100)
    assert taken.status_code == 202  # no leader: stored, the leader acts on it later
    assert rows(services, "SELECT body FROM relayed_requests") == [(b"x" * 100,)]


async def test_without_a_leader_a_change_is_queued_and_a_read_taken_back(
    serve: Callable[[ASGIApp], Awaitable[str]],
    follower: Callable[..., FollowerApp],
    leader: LeaderSide,
    client: httpx.AsyncClient,
    services: Services,
) -> None:
    app = follower(wait_s=0.3)
    base = await serve(app)
    queued = await client.post(base + "/echo/later?x=1", content=b"a change")
    assert queued.status_code == 202
    body = queued.json()
    assert body["status"] == "queued"
    kept = rows(services, "SELECT id, method, target, body, done_at FROM relayed_requests")
    assert kept == [(body["request"], "POST", "/echo/later?x=1", b"a change", None)]

    read = await client.get(base + "/items?q=1")
    assert read.status_code == 503 and read.headers["retry-after"] == "1"
    assert rows(services, "SELECT id FROM relayed_requests") == [(body["request"],)]
    assert app.waiting == 0

    # Once one leads, it acts on the change stored meanwhile.
    assert await asyncio.wait_for(leader.worker.work_off(), TIMEOUT_S) == 1
    answer = await leader.queue.answer_of(body["request"])
    assert answer is not None and (answer.status, answer.body) == (201, b"a change")


async def test_a_follower_about_to_lead_answers_its_waiting_requests_at_once(
    serve: Callable[[ASGIApp], Awaitable[str]],
    follower: Callable[..., FollowerApp],
    client: httpx.AsyncClient,
    services: Services,
) -> None:
    app = follower(wait_s=TIMEOUT_S * 10)  # far beyond the client's own timeout
    base = await serve(app)
    pending = asyncio.create_task(client.post(base + "/echo/x", content=b"{}"))
    await until(lambda: app.waiting == 1)
    app.close()
    answered = await asyncio.wait_for(pending, TIMEOUT_S)
    assert answered.status_code == 202 and answered.json()["status"] == "queued"
    assert app.waiting == 0
    assert stored(services) == [("POST", "/echo/x", None, None)]  # it acts on it itself


async def test_a_failing_or_slow_leader_route_is_answered_as_its_port_would_or_504(
    serve: Callable[[ASGIApp], Awaitable[str]],
    follower: Callable[..., FollowerApp],
    leader: LeaderSide,
    client: httpx.AsyncClient,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(relay, "REPLAY_TIMEOUT_S", 0.2)
    leader.start()
    base = await serve(follower())
    # A route that raises: the leader's own error page, as its own port gives it.
    direct = await client.get(await serve(leader.app) + "/boom")
    failed = await client.get(base + "/boom")
    assert (failed.status_code, failed.content) == (500, direct.content)
    assert direct.status_code == 500
    slow = await client.get(base + "/slow")
    assert slow.status_code == 504 and "did not finish" in slow.json()["error"]
    assert rows(services, "SELECT target, status FROM relayed_requests ORDER BY id") == [
        ("/boom", 500),
        ("/slow", 504),
    ]
    # The worker goes on with the next one.
    after = await client.post(base + "/echo/x", content=b"still here")
    assert (after.status_code, after.content) == (201, b"still here")


async def test_telegram_updates_need_the_secret_and_are_answered_at_once(
    serve: Callable[[ASGIApp], Awaitable[str]],
    follower: Callable[..., FollowerApp],
    leader: LeaderSide,
    client: httpx.AsyncClient,
    services: Services,
) -> None:
    app = follower(wait_s=TIMEOUT_S * 10, webhook_secret=SECRET, webhook_url=WEBHOOK_URL)
    base = await serve(app)
    hook = base + "/tg/hook-path"
    first = '{"update_id": 1, "message": {"text": "café"}}'.encode()
    second = b'{"update_id": 2}'
    for headers in ({}, {SECRET_HEADER: "wrong"}, {SECRET_HEADER: SECRET + "x"}):
        refused = await client.post(hook, content=first, headers=headers)
        assert refused.status_code == 403
    assert stored(services) == []

    for update in (first, second):  # no leader: still answered at once, not waited on
        taken = await asyncio.wait_for(
            client.post(hook, content=update, headers={SECRET_HEADER: SECRET}), TIMEOUT_S
        )
        assert taken.status_code == 200
    assert app.waiting == 0
    assert rows(services, "SELECT method, target, body, done_at FROM relayed_requests") == [
        ("POST", "/tg/hook-path", first, None),
        ("POST", "/tg/hook-path", second, None),
    ]
    headers = json.loads(rows(services, "SELECT headers FROM relayed_requests ORDER BY id")[0][0])
    assert [SECRET_HEADER.lower(), SECRET] in headers  # stored whole, the secret with it
    # The leader hands them to its own webhook route, in the order they came.
    assert await asyncio.wait_for(leader.worker.work_off(), TIMEOUT_S) == 2
    assert leader.updates == [first, second]


async def test_a_stored_request_wakes_the_worker_without_waiting_for_its_sweep(
    serve: Callable[[ASGIApp], Awaitable[str]],
    follower: Callable[..., FollowerApp],
    leader: LeaderSide,
    client: httpx.AsyncClient,
) -> None:
    await leader.listener.wait(0.01)  # listening from here on
    leader.start(RelayWorker(leader.app, leader.queue, leader.listener.wait, TIMEOUT_S * 10))
    base = await serve(follower())
    for n in range(3):
        answered = await client.post(f"{base}/echo/{n}", content=b"now")
        assert (answered.status_code, answered.headers["x-echo-name"]) == (201, str(n))


async def test_the_listener_returns_on_a_notification_or_after_its_timeout(url: str) -> None:
    listener = PgListener(url, CHANNEL)
    try:
        started = time.monotonic()
        await asyncio.wait_for(listener.wait(0.3), TIMEOUT_S)  # connects, listens, times out
        assert time.monotonic() - started >= 0.29

        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as other:
            waiting = asyncio.create_task(listener.wait(TIMEOUT_S * 10))
            await other.execute("SELECT pg_notify('opsgate_relay_other', '')")
            await other.execute("SELECT pg_notify('opsgate_relay', '')")
            await asyncio.wait_for(waiting, TIMEOUT_S)

            # Another channel's notification does not wake it.
            await other.execute("SELECT pg_notify('opsgate_relay_other', '')")
            started = time.monotonic()
            await asyncio.wait_for(listener.wait(0.3), TIMEOUT_S)
            assert time.monotonic() - started >= 0.29
    finally:
        await listener.close()


async def test_a_stored_request_wakes_the_leader_and_a_stored_answer_the_followers(
    url: str,
) -> None:
    """Migration 17's triggers: the INSERT notifies CHANNEL, storing an answer notifies
    ANSWERED_CHANNEL; a claim (no answer yet) does not wake the followers."""
    requests, answers = PgListener(url, CHANNEL), answers_listener(url)
    try:
        async with Storage(url) as follower_db, Storage(url) as leader_db:
            follower_queue = RelayQueue(follower_db, "follower:1")
            leader_queue = RelayQueue(leader_db, "leader:2")
            for listener in (requests, answers):
                await listener.wait(0.01)  # listening from here on

            woken = asyncio.create_task(requests.wait(TIMEOUT_S * 10))
            request_id = await follower_queue.put("POST", "/x", [], b"", "")
            await asyncio.wait_for(woken, TIMEOUT_S)

            assert [r.id for r in await leader_queue.claim()] == [request_id]
            started = time.monotonic()
            await asyncio.wait_for(answers.wait(0.3), TIMEOUT_S)  # a claim is no answer
            assert time.monotonic() - started >= 0.29

            woken = asyncio.create_task(answers.wait(TIMEOUT_S * 10))
            await leader_queue.answer(request_id, RelayedAnswer(200, [], b""))
            await asyncio.wait_for(woken, TIMEOUT_S)
    finally:
        await requests.close()
        await answers.close()


async def test_the_listener_waits_out_an_unreachable_database() -> None:
    listener = PgListener("postgresql://opsgate@127.0.0.1:9/opsgate", CHANNEL)
    started = time.monotonic()
    await asyncio.wait_for(listener.wait(0.2), TIMEOUT_S)  # no error: callers sweep anyway
    assert time.monotonic() - started >= 0.19
    with pytest.raises(ValueError, match="channel"):
        PgListener("postgresql://opsgate@127.0.0.1:9/opsgate", "relay; DROP TABLE x")


async def test_a_request_its_client_gave_up_on_half_sent_is_not_stored(
    serve: Callable[[ASGIApp], Awaitable[str]],
    follower: Callable[..., FollowerApp],
    services: Services,
) -> None:
    """The client declares 1000 bytes, sends 10 and hangs up: nothing whole to relay."""
    app = follower(wait_s=0.05)
    finished = asyncio.Event()

    async def watched(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                finished.set()

    base = await serve(watched)
    host, port = base.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /echo/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n" + b'{"deploy":'
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    await asyncio.wait_for(finished.wait(), TIMEOUT_S)
    assert rows(services, "SELECT method, target, body FROM relayed_requests") == []


async def test_a_read_the_leader_has_not_started_on_is_still_taken_back(
    serve: Callable[[ASGIApp], Awaitable[str]],
    follower: Callable[..., FollowerApp],
    leader: LeaderSide,
    client: httpx.AsyncClient,
    services: Services,
) -> None:
    """A read nobody answered in time is answered 503 and taken back, as long as no leader
    has started on it. The leader claims every open request at once and replays them one by
    one: a read behind a slow request is claimed, and not started, when its time is up."""
    app = follower(wait_s=2)
    base = await serve(app)
    slow = asyncio.create_task(client.post(base + "/gated", content=b"slow"))
    await until(lambda: app.waiting == 1)
    read = asyncio.create_task(client.get(base + "/items?q=1"))
    await until(lambda: app.waiting == 2)  # both stored
    working = asyncio.create_task(leader.worker.work_off())
    try:
        await asyncio.wait_for(leader.entered.wait(), TIMEOUT_S)
        assert app.waiting == 2  # the read still waits: the leader is on the slow one
        answered = await asyncio.wait_for(read, TIMEOUT_S)
        assert (await asyncio.wait_for(slow, TIMEOUT_S)).status_code == 202
    finally:
        leader.gate.set()
        await asyncio.wait_for(working, TIMEOUT_S)
    assert (answered.status_code, answered.headers.get("retry-after")) == (503, "1")
    assert [target for _, target, *_ in stored(services)] == ["/gated"]
