"""The OFREP fast path (bot/http/ofrep_fast.py) answers exactly as the Starlette routes do.

Two servers on loopback over the same flags, one with the Starlette routes alone and one with
the fast path's protocol in front as bot/runner.py serves them, get the same requests byte for
byte; statuses, headers (all but Date) and bodies must be identical. Then the whole OFREP
contract (tests/bot/test_ofrep.py) runs again with the fast path in front.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from bot.dev.harness.ofrep_flags import FLAGS, DictSource
from bot.http.ofrep import MAX_BODY_BYTES, PREFIX, FlagSource, ofrep_routes
from bot.http.ofrep_fast import ofrep_protocol
from bot.http.server import BackgroundHTTPServer

# The contract's tests, collected here too: the `serve` fixture below replaces theirs, so each
# of them runs once more against a server with the fast path in front.
from tests.bot.test_ofrep import *  # noqa: F403
from tests.bot.test_ofrep import TOKEN, Served

AUTH = f"Authorization: Bearer {TOKEN}\r\n"
JSON = "Content-Type: application/json\r\n"


def with_fast_path(
    app: ASGIApp, source: FlagSource, token: str, keep_alive_s: int = 5
) -> BackgroundHTTPServer:
    protocol = ofrep_protocol(source, token)
    return BackgroundHTTPServer(app, "127.0.0.1", 0, http=protocol, keep_alive_s=keep_alive_s)


def recording(protocol: type[asyncio.Protocol], targets: list[str]) -> type[asyncio.Protocol]:
    """The protocol, keeping every request target as it arrived (the app never sees those
    the fast path answers)."""

    class Recording(protocol):  # type: ignore[misc, valid-type]
        def on_headers_complete(self) -> None:
            targets.append(self.url.decode())
            super().on_headers_complete()

    return Recording


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    """test_ofrep.py's fixture, with the fast path in front of the routes."""
    servers: list[BackgroundHTTPServer] = []

    async def start(token: str = TOKEN, source: FlagSource | None = None) -> Served:
        real = source if isinstance(source, DictSource) else DictSource(FLAGS)
        targets: list[str] = []
        protocol = recording(ofrep_protocol(source or real, token), targets)
        app = Starlette(routes=ofrep_routes(source or real, token))
        server = BackgroundHTTPServer(app, "127.0.0.1", 0, http=protocol)
        await server.start()
        servers.append(server)
        return Served(f"http://127.0.0.1:{server.port}", server.port, real, targets)

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def both() -> AsyncIterator[Callable[[str], Awaitable[tuple[int, int]]]]:
    """Start the pair (routes only, fast path in front) over one token: their ports."""
    servers: list[BackgroundHTTPServer] = []

    async def start(token: str) -> tuple[int, int]:
        routes_only = Starlette(routes=ofrep_routes(DictSource(FLAGS), token))
        servers.append(BackgroundHTTPServer(routes_only, "127.0.0.1", 0))
        source = DictSource(FLAGS)
        servers.append(with_fast_path(Starlette(routes=ofrep_routes(source, token)), source, token))
        for server in servers[-2:]:
            await server.start()
        return servers[-2].port, servers[-1].port

    yield start
    for server in servers:
        await server.stop()


async def exchange(port: int, request: bytes) -> tuple[bytes, list[bytes], bytes]:
    """Send exact bytes (the request says Connection: close): status line, headers, body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    try:
        answer = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *headers = head.split(b"\r\n")
    return status, [h for h in headers if not h.lower().startswith(b"date:")], body


def request(method: str, target: str, body: bytes = b"", head: str = AUTH + JSON) -> bytes:
    framed = "Transfer-Encoding" in head or "Content-Length" in head
    length = "" if framed else f"Content-Length: {len(body)}\r\n"
    start = f"{method} {target} HTTP/1.1\r\nHost: t\r\n{head}{length}Connection: close\r\n\r\n"
    return start.encode("latin-1") + body


def context(**ctx: object) -> bytes:
    return json.dumps({"context": ctx}).encode()


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(body), body) + b"0\r\n\r\n"


ONE = f"{PREFIX}/half"
CASES: dict[str, bytes] = {
    "split, on": request("POST", ONE, context(targetingKey="alice")),
    "split, off": request("POST", ONE, context(targetingKey="carol", chat_type="group")),
    "static": request("POST", f"{PREFIX}/checkout", context(targetingKey="u")),
    "disabled": request("POST", f"{PREFIX}/dark-mode", context(targetingKey="u")),
    "targeted": request("POST", f"{PREFIX}/beta", context(targetingKey="alice")),
    "not targeted": request("POST", f"{PREFIX}/beta", context(targetingKey="bob")),
    "unknown flag": request("POST", f"{PREFIX}/no-such-flag", context(targetingKey="u")),
    "no targeting key": request("POST", ONE, b'{"context": {}}'),
    "no context": request("POST", ONE, b"{}"),
    "empty body": request("POST", ONE, b""),
    "bad JSON": request("POST", ONE, b"{not json"),
    "NaN": request("POST", ONE, b'{"context": {"n": NaN}}'),
    "deep nesting": request("POST", ONE, b"[" * 100_000 + b"]" * 100_000),
    "not an object": request("POST", ONE, b"[1]"),
    "context not an object": request("POST", ONE, b'{"context": 5}'),
    "numeric targeting key": request("POST", ONE, b'{"context": {"targetingKey": 7}}'),
    "list attribute": request("POST", ONE, context(targetingKey="a", tags=["x"])),
    "long targeting key": request("POST", ONE, context(targetingKey="k" * 257)),
    "lone surrogate": request("POST", ONE, b'{"context": {"targetingKey": "\\ud800"}}'),
    "non-ASCII key": request("POST", ONE, context(targetingKey="Łódź-ユーザー")),
    "UTF-16 body": request("POST", ONE, '{"context": {"targetingKey": "a"}}'.encode("utf-16")),
    "not UTF-8": request("POST", ONE, b'{"context": {"targetingKey": "\xff"}}'),
    "at 1 MB": request("POST", ONE, b'{"context": {"targetingKey": "a"}}'.ljust(MAX_BODY_BYTES)),
    "over 1 MB": request("POST", ONE, b"{}".ljust(MAX_BODY_BYTES + 1)),
    "10 GB declared": request("POST", ONE, head=AUTH + f"Content-Length: {10**10}\r\n"),
    "chunked": request(
        "POST", ONE, chunked(context(targetingKey="a")), AUTH + "Transfer-Encoding: chunked\r\n"
    ),
    "chunked, over 1 MB": request(
        "POST", ONE, chunked(b" " * (MAX_BODY_BYTES + 1)), AUTH + "Transfer-Encoding: chunked\r\n"
    ),
    "no token": request("POST", ONE, context(targetingKey="a"), JSON),
    "wrong token": request(
        "POST", ONE, context(targetingKey="a"), "Authorization: Bearer guess\r\n"
    ),
    "Basic": request("POST", ONE, context(targetingKey="a"), f"Authorization: Basic {TOKEN}\r\n"),
    "bare token": request("POST", ONE, context(targetingKey="a"), f"Authorization: {TOKEN}\r\n"),
    "lowercase scheme": request(
        "POST", ONE, context(targetingKey="a"), f"authorization: bearer {TOKEN}\r\n"
    ),
    "token, spaces": request(
        "POST", ONE, context(targetingKey="a"), f"Authorization: Bearer   {TOKEN} \r\n"
    ),
    "token, NBSP": request(
        "POST", ONE, context(targetingKey="a"), f"Authorization: Bearer {TOKEN}\xa0\r\n"
    ),
    "two tokens": request(
        "POST", ONE, context(targetingKey="a"), f"{AUTH}Authorization: Bearer guess\r\n"
    ),
    "key with a slash": request("POST", f"{PREFIX}/a/b", b"{}"),
    "upper-case key": request("POST", f"{PREFIX}/Half", b"{}"),
    "key of 129": request("POST", f"{PREFIX}/{'x' * 129}", b"{}"),
    "empty key": request("POST", f"{PREFIX}/", b"{}"),
    "encoded dots": request("POST", f"{PREFIX}/%2e%2e", b"{}"),
    "query string": request("POST", f"{ONE}?x=1", b"{}"),
    "GET": request("GET", ONE),
    "HEAD": request("HEAD", ONE),
    "PUT": request("PUT", ONE, b"{}"),
    "bulk": request("POST", PREFIX, context(targetingKey="alice")),
    "bulk, If-None-Match": request(
        "POST", PREFIX, context(targetingKey="alice"), AUTH + 'If-None-Match: "x", *\r\n'
    ),
    "bulk, no token": request("POST", PREFIX, b"{}", JSON),
    "elsewhere": request("POST", "/ofrep/v1/evaluate", b"{}"),
    "Expect: 100-continue": request(
        "POST", ONE, context(targetingKey="a"), AUTH + "Expect: 100-continue\r\n"
    ),
    "HTTP/1.0": request("POST", ONE, context(targetingKey="a")).replace(b"HTTP/1.1", b"HTTP/1.0"),
    "two lengths": request("POST", ONE, b"{}", AUTH + "Content-Length: 2\r\nContent-Length: 2\r\n"),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_the_same_answer_either_way(
    both: Callable[..., Awaitable[tuple[int, int]]], name: str
) -> None:
    routes_only, fast = await both(TOKEN)
    slow_answer = await exchange(routes_only, CASES[name])
    assert slow_answer == await exchange(fast, CASES[name])
    assert slow_answer[0].startswith(b"HTTP/1.1 ")


async def test_without_a_token_configured_both_refuse(
    both: Callable[..., Awaitable[tuple[int, int]]],
) -> None:
    routes_only, fast = await both("")
    for head in (AUTH, "Authorization: Bearer \r\n", ""):
        sent = request("POST", ONE, context(targetingKey="a"), head)
        slow_answer = await exchange(routes_only, sent)
        assert slow_answer == await exchange(fast, sent)
        assert slow_answer[0] == b"HTTP/1.1 401 Unauthorized"


async def test_only_plain_single_flag_posts_skip_the_app(
    recording_app: tuple[int, list[str], DictSource],
) -> None:
    """What reaches the app: everything but a plain, valid single-flag POST."""
    port, reached, source = recording_app
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as http:
        answered = await http.post(ONE, json={"context": {"targetingKey": "alice"}})
        refused = await http.post(ONE, json={}, headers={"Authorization": "Bearer guess"})
        passed = [
            await http.get(ONE),
            await http.post(PREFIX, json={}),
            await http.post(f"{ONE}?x=1", json={}),
            await http.post(f"{PREFIX}/Half", json={}),
            await http.post("/health", json={}),
            await http.post(ONE, json={}, headers={"Expect": "100-continue"}),
        ]
        streamed = await http.post(ONE, content=chunks())  # chunked: no Content-Length
    assert (answered.status_code, answered.json()["reason"]) == (200, "SPLIT")
    assert refused.status_code == 401
    assert [answer.status_code for answer in [*passed, streamed]] == [418] * 7
    assert reached == [
        f"GET {ONE}",
        f"POST {PREFIX}",
        f"POST {ONE}",
        f"POST {PREFIX}/Half",
        "POST /health",
        f"POST {ONE}",
        f"POST {ONE}",
    ]
    assert [ctx.targeting_key for ctx in source.seen] == ["alice"]  # the refused never got in


async def chunks() -> AsyncIterator[bytes]:
    yield b"{}"


@pytest.fixture
async def recording_app() -> AsyncIterator[tuple[int, list[str], DictSource]]:
    """A server whose app answers 418 to all it gets, after 0.3 s for /slow and 1.5 s for
    /slower, and which closes connections idle for 1 s: its port, what reached the app, and
    the flag source."""
    reached: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        reached.append(f"{scope['method']} {scope['path']}")
        while (await receive()).get("more_body"):
            pass
        await asyncio.sleep({"/slow": 0.3, "/slower": 1.5}.get(scope["path"], 0))
        body = scope["path"].encode()
        length = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 418, "headers": length})
        await send({"type": "http.response.body", "body": body})

    source = DictSource(FLAGS)
    server = with_fast_path(app, source, TOKEN, keep_alive_s=1)
    await server.start()
    yield server.port, reached, source
    await server.stop()


def keep_alive(method: str, target: str, body: bytes = b"") -> bytes:
    return (
        f"{method} {target} HTTP/1.1\r\nHost: t\r\n{AUTH}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def read_answers(reader: asyncio.StreamReader, count: int) -> list[tuple[bytes, bytes]]:
    answers = []
    for _ in range(count):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        answers.append((head.split(b"\r\n")[0], await reader.readexactly(length)))
    return answers


async def test_pipelined_requests_are_answered_in_order_on_one_connection(
    recording_app: tuple[int, list[str], DictSource],
) -> None:
    """A fast answer never overtakes a slower one sent before it, and a request after a fast
    one in the same read is served too (not cut off by the keep-alive timeout)."""
    port, reached, _ = recording_app
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        fast = keep_alive("POST", ONE, context(targetingKey="alice"))
        writer.write(fast + keep_alive("POST", "/slow") + fast + keep_alive("GET", "/x") + fast)
        answers = await read_answers(reader, 5)
        writer.write(fast)  # the connection is still open for more
        answers += await read_answers(reader, 1)
    finally:
        writer.close()
    teapot = b"HTTP/1.1 418 I'm a Teapot"
    assert [status for status, _ in answers] == [
        b"HTTP/1.1 200 OK",
        *[teapot] * 4,
        b"HTTP/1.1 200 OK",
    ]
    assert b'"SPLIT"' in answers[0][1] and b'"SPLIT"' in answers[5][1]
    assert [body for _, body in answers[1:5]] == [b"/slow", ONE.encode(), b"/x", ONE.encode()]
    # The fast requests queued behind /slow went through the app, in order.
    assert reached == ["POST /slow", f"POST {ONE}", "GET /x", f"POST {ONE}"]


async def test_keep_alive_closes_only_connections_idle_for_the_whole_timeout(
    recording_app: tuple[int, list[str], DictSource],
) -> None:
    """The fast path keeps one lazy idle timer (1 s here): a connection in use stays open past
    it, one busy with a longer request is not cut off, and an idle one is closed."""
    port, _, _ = recording_app
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    fast = keep_alive("POST", ONE, context(targetingKey="alice"))
    try:
        for _ in range(5):  # 2 s of use, 0.4 s apart
            writer.write(fast)
            assert (await read_answers(reader, 1))[0][0] == b"HTTP/1.1 200 OK"
            await asyncio.sleep(0.4)
        writer.write(fast + keep_alive("POST", "/slower"))  # 1.5 s in the app
        answers = await read_answers(reader, 2)
        assert [body for _, body in answers][1] == b"/slower"
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        idle = asyncio.get_running_loop().time() - started
    finally:
        writer.close()
    assert 0.5 < idle < 3.5
