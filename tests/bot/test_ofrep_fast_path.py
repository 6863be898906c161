"""The OFREP fast path (bot/http/ofrep_fast.py) answers exactly as the Starlette routes do.

Two servers on loopback over the same flags, one with the Starlette routes alone and one with
the fast path in front as bot/http/app.py composes it, get the same requests byte for byte;
statuses, headers (all but Date) and bodies must be identical. Then the whole OFREP contract
(tests/bot/test_ofrep.py) runs again with the fast path in front.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from bot.dev.harness.ofrep_flags import FLAGS, DictSource, Recorder
from bot.http.ofrep import MAX_BODY_BYTES, PREFIX, FlagSource, ofrep_routes
from bot.http.ofrep_fast import OfrepFastPath, ofrep_fast_path
from bot.http.server import BackgroundHTTPServer

# The contract's tests, collected here too: the `serve` fixture below replaces theirs, so each
# of them runs once more against a server with the fast path in front.
from tests.bot.test_ofrep import *  # noqa: F403
from tests.bot.test_ofrep import TOKEN, Served

AUTH = f"Authorization: Bearer {TOKEN}\r\n"
JSON = "Content-Type: application/json\r\n"


def with_fast_path(source: FlagSource, token: str) -> Starlette:
    return Starlette(
        routes=ofrep_routes(source, token), middleware=[ofrep_fast_path(source, token)]
    )


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    """test_ofrep.py's fixture, with the fast path in front of the routes."""
    servers: list[BackgroundHTTPServer] = []

    async def start(token: str = TOKEN, source: FlagSource | None = None) -> Served:
        real = source if isinstance(source, DictSource) else DictSource(FLAGS)
        recorder = Recorder(with_fast_path(source or real, token))
        server = BackgroundHTTPServer(recorder, "127.0.0.1", 0)
        await server.start()
        servers.append(server)
        return Served(f"http://127.0.0.1:{server.port}", server.port, real, recorder.targets)

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def both() -> AsyncIterator[Callable[[str], Awaitable[tuple[int, int]]]]:
    """Start the pair (routes only, fast path in front) over one token: their ports."""
    servers: list[BackgroundHTTPServer] = []

    async def start(token: str) -> tuple[int, int]:
        routes_only = Starlette(routes=ofrep_routes(DictSource(FLAGS), token))
        fast = with_fast_path(DictSource(FLAGS), token)
        for app in (routes_only, fast):
            servers.append(BackgroundHTTPServer(app, "127.0.0.1", 0))
            await servers[-1].start()
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


async def test_only_single_flag_posts_skip_the_app() -> None:
    """What reaches the wrapped app: everything but a valid single-flag POST."""
    reached: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(f"{scope['method']} {scope['path']}")
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    source = DictSource(FLAGS)
    transport = httpx.ASGITransport(OfrepFastPath(app, source, TOKEN))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as http:
        answered = await http.post(ONE, json={"context": {"targetingKey": "alice"}})
        refused = await http.post(ONE, json={}, headers={"Authorization": "Bearer guess"})
        passed = [
            await http.get(ONE),
            await http.post(PREFIX, json={}),
            await http.post(f"{ONE}?x=1", json={}),
            await http.post(f"{PREFIX}/Half", json={}),
            await http.post("/health", json={}),
        ]
    assert (answered.status_code, answered.json()["reason"]) == (200, "SPLIT")
    assert refused.status_code == 401
    assert [answer.status_code for answer in passed] == [418] * 5
    assert reached == [
        f"GET {ONE}",
        f"POST {PREFIX}",
        f"POST {ONE}",
        f"POST {PREFIX}/Half",
        "POST /health",
    ]
    assert [ctx.targeting_key for ctx in source.seen] == ["alice"]  # the refused never got in
