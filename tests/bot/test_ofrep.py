"""OFREP over real HTTP on loopback: httpx for the wire format, a raw socket where the exact
request bytes matter, and the real OpenFeature SDK with its OFREP provider as the client.

The provider is synchronous (requests), so SDK calls run in a thread via asyncio.to_thread
while the server runs on the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext as SdkContext
from openfeature.exception import ErrorCode as SdkErrorCode
from openfeature.flag_evaluation import Reason as SdkReason
from starlette.applications import Starlette

from bot.dev.harness.ofrep_flags import FLAGS, DictSource, Recorder, raw_post
from bot.http.ofrep import MAX_BODY_BYTES, PREFIX, FlagSource, ofrep_routes
from bot.http.server import BackgroundHTTPServer

TOKEN = "ofrep-token-for-tests_0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Served:
    url: str
    port: int
    source: DictSource
    targets: list[str]


Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[BackgroundHTTPServer] = []

    async def start(token: str = TOKEN, source: FlagSource | None = None) -> Served:
        real = source if isinstance(source, DictSource) else DictSource(FLAGS)
        recorder = Recorder(Starlette(routes=ofrep_routes(source or real, token)))
        server = BackgroundHTTPServer(recorder, "127.0.0.1", 0)
        await server.start()
        servers.append(server)
        return Served(f"http://127.0.0.1:{server.port}", server.port, real, recorder.targets)

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
def sdk_client() -> Iterator[Callable[..., OpenFeatureClient]]:
    """The real SDK with the real OFREP provider, one domain per client."""
    providers: list[OFREPProvider] = []

    def make(url: str, token: str = TOKEN) -> OpenFeatureClient:
        headers = {"Authorization": f"Bearer {token}"}
        provider = OFREPProvider(url, headers_factory=lambda: headers)
        providers.append(provider)
        api.set_provider(provider, domain=f"ofrep-test-{len(providers)}")
        return api.get_client(domain=f"ofrep-test-{len(providers)}")

    yield make
    api.clear_providers()
    for provider in providers:
        provider.session.close()


def details(client: OpenFeatureClient, key: str, ctx: SdkContext | None = None) -> Any:
    return asyncio.to_thread(client.get_boolean_details, key, False, ctx)


async def test_sdk_evaluates_with_a_targeting_key(serve: Serve, sdk_client: Any) -> None:
    served = await serve()
    client = sdk_client(served.url)
    on = await details(client, "half", SdkContext("alice", {"chat_type": "group"}))
    off = await details(client, "half", SdkContext("carol"))
    assert (on.value, on.reason, on.variant, on.error_code) == (True, SdkReason.SPLIT, "on", None)
    assert (off.value, off.reason, off.variant, off.error_code) == (False, "SPLIT", "off", None)
    # The targeting key and the attributes arrive as the source's context.
    assert served.source.seen[0].targeting_key == "alice"
    assert served.source.seen[0].attributes == {"chat_type": "group"}


async def test_sdk_missing_disabled_and_targeted(serve: Serve, sdk_client: Any) -> None:
    served = await serve()
    client = sdk_client(served.url)
    missing = await details(client, "no-such-flag", SdkContext("u-1"))
    disabled = await details(client, "dark-mode", SdkContext("u-1"))
    alice = await details(client, "beta", SdkContext("alice"))
    bob = await details(client, "beta", SdkContext("bob"))
    assert (missing.value, missing.reason) == (False, SdkReason.ERROR)
    assert missing.error_code == SdkErrorCode.FLAG_NOT_FOUND
    assert missing.error_message == "flag 'no-such-flag' not found"
    assert (disabled.value, disabled.reason, disabled.variant) == (False, "DISABLED", "off")
    assert (alice.value, alice.reason, alice.variant) == (True, "TARGETING_MATCH", "on")
    assert (bob.value, bob.reason, bob.variant, bob.error_code) == (False, "DEFAULT", "off", None)


async def test_sdk_gets_the_default_without_the_right_token(serve: Serve, sdk_client: Any) -> None:
    served, closed = await serve(), await serve(token="")
    wrong = await details(sdk_client(served.url, token="guess"), "checkout", SdkContext("u"))
    empty = await details(sdk_client(closed.url, token=""), "checkout", SdkContext("u"))
    for refused in (wrong, empty):
        assert (refused.value, refused.reason) == (False, SdkReason.ERROR)
        assert (refused.error_code, refused.error_message) == (SdkErrorCode.GENERAL, "unauthorized")
    assert served.source.seen == closed.source.seen == []


async def test_sdk_odd_keys_never_reach_the_source(serve: Serve, sdk_client: Any) -> None:
    served = await serve()
    client = sdk_client(served.url)
    for key in ["a/b", "../x", "%2e%2e", "a b", "Checkout", "x" * 129, "checkout?x=1", "../../a"]:
        got = await details(client, key, SdkContext("u"))
        assert (got.value, got.error_code) == (False, SdkErrorCode.FLAG_NOT_FOUND), key
    assert served.source.seen == []
    # The provider puts keys into the path unencoded and resolves `..` itself (urljoin).
    assert served.targets == [
        f"{PREFIX}/a/b",
        "/ofrep/v1/evaluate/x",  # outside the OFREP routes: a plain 404
        f"{PREFIX}/..",  # %2e%2e decoded by the client
        f"{PREFIX}/a%20b",
        f"{PREFIX}/Checkout",
        f"{PREFIX}/{'x' * 129}",
        f"{PREFIX}/checkout?x=1",  # refused: `?` is not a key character, no query is defined
        "/ofrep/v1/a",
    ]


async def test_sdk_keys_the_client_rewrites_are_invisible_here(
    serve: Serve, sdk_client: Any
) -> None:
    """A known limit: the client turns these into a valid key before sending."""
    served = await serve()
    client = sdk_client(served.url)
    for key in ["x/../checkout", "checkout#frag", "check\tout"]:
        assert (await details(client, key, SdkContext("u"))).value is True, key
    assert served.targets == [f"{PREFIX}/checkout"] * 3


async def test_single_bodies_are_the_spec_shapes(serve: Serve) -> None:
    served = await serve()
    async with httpx.AsyncClient(base_url=served.url, headers=AUTH) as http:
        ok = await http.post(f"{PREFIX}/beta", json={"context": {"targetingKey": "alice"}})
        missing = await http.post(f"{PREFIX}/nope", json={"context": {}})
        no_key = await http.post(f"{PREFIX}/half", json={"context": {"plan": "pro"}})
    assert (ok.status_code, ok.headers["content-type"]) == (200, "application/json")
    assert ok.json() == {
        "key": "beta",
        "value": True,
        "reason": "TARGETING_MATCH",
        "variant": "on",
        "metadata": {},
    }
    assert missing.status_code == 404
    assert missing.json() == {
        "key": "nope",
        "errorCode": "FLAG_NOT_FOUND",
        "errorDetails": "flag 'nope' not found",
    }
    assert no_key.status_code == 400
    assert no_key.json()["errorCode"] == "TARGETING_KEY_MISSING"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "PARSE_ERROR"),
        (b"", "PARSE_ERROR"),
        (b"[1]", "PARSE_ERROR"),
        (b'{"context": {"n": NaN}}', "PARSE_ERROR"),
        (b"[" * 100_000 + b"]" * 100_000, "PARSE_ERROR"),
        (b'{"context": 5}', "INVALID_CONTEXT"),
        (b'{"context": null}', "INVALID_CONTEXT"),
        (b'{"context": {"targetingKey": 7}}', "INVALID_CONTEXT"),
        (b'{"context": {"targetingKey": "a", "tags": ["x"]}}', "INVALID_CONTEXT"),
    ],
)
async def test_bad_bodies_get_400(serve: Serve, body: bytes, code: str) -> None:
    served = await serve()
    async with httpx.AsyncClient(base_url=served.url, headers=AUTH) as http:
        single = await http.post(f"{PREFIX}/checkout", content=body)
        bulk = await http.post(PREFIX, content=body)
    assert (single.status_code, bulk.status_code) == (400, 400)
    assert single.json()["key"] == "checkout"
    assert single.json()["errorCode"] == bulk.json()["errorCode"] == code
    assert set(bulk.json()) == {"errorCode", "errorDetails"}
    assert served.source.seen == []


async def test_odd_keys_get_404_before_any_lookup(serve: Serve) -> None:
    """Sent byte for byte, with no client in between to clean the path up."""
    served = await serve()
    head = f"Authorization: Bearer {TOKEN}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
    odd = ["a/b", "../x", "..%2Fx", "%2e%2e", "a%20b", "Upper", "x" * 129, "", "%00", "half?b=1"]
    for key in odd:
        status, body = await raw_post(served.port, f"{PREFIX}/{key}", b"{}", head)
        assert status == 404, key
        assert b'"errorCode":"FLAG_NOT_FOUND"' in body and b"not a valid flag key" in body
    assert served.source.seen == []


async def test_without_the_token_everything_is_401(serve: Serve) -> None:
    served, closed = await serve(), await serve(token="")
    refused = [
        (served.url, {}),
        (served.url, {"Authorization": "Bearer guess"}),
        (served.url, {"Authorization": f"Basic {TOKEN}"}),
        (served.url, {"Authorization": TOKEN}),
        (closed.url, {"Authorization": "Bearer"}),
    ]
    async with httpx.AsyncClient() as http:
        for base, headers in refused:
            for path in (f"{PREFIX}/checkout", PREFIX, f"{PREFIX}/a/b"):
                answer = await http.post(base + path, json={"context": {}}, headers=headers)
                assert answer.status_code == 401, (base, headers, path)
                assert answer.headers["www-authenticate"].startswith("Bearer")
        lower = await http.post(
            served.url + f"{PREFIX}/checkout", json={}, headers={"authorization": f"bearer {TOKEN}"}
        )
    assert lower.status_code == 200  # the scheme is case-insensitive (RFC 9110)
    assert served.source.seen[1:] == closed.source.seen == []


async def test_bulk_carries_an_etag_and_honours_if_none_match(serve: Serve) -> None:
    served = await serve()
    alice = {"context": {"targetingKey": "alice"}}
    async with httpx.AsyncClient(base_url=served.url, headers=AUTH) as http:
        first = await http.post(PREFIX, json=alice)
        etag = first.headers["etag"]
        same = await http.post(PREFIX, json=alice, headers={"If-None-Match": etag})
        listed = await http.post(PREFIX, json=alice, headers={"If-None-Match": f'"x", W/{etag}'})
        nobody = await http.post(PREFIX, json={"context": {}}, headers={"If-None-Match": etag})
        served.source.put(replace(FLAGS[1], enabled=True))  # dark-mode switched on
        changed = await http.post(PREFIX, json=alice, headers={"If-None-Match": etag})
    assert first.status_code == 200
    assert [(f["key"], f["value"], f["reason"]) for f in first.json()["flags"]] == [
        ("checkout", True, "STATIC"),
        ("dark-mode", False, "DISABLED"),
        ("beta", True, "TARGETING_MATCH"),
        ("half", True, "SPLIT"),
    ]
    assert (same.status_code, same.content, same.headers["etag"]) == (304, b"", etag)
    assert listed.status_code == 304
    # Another context is another answer: its own tag, and per-flag errors inline.
    assert nobody.status_code == 200 and nobody.headers["etag"] != etag
    assert nobody.json()["flags"][3] == {
        "key": "half",
        "errorCode": "TARGETING_KEY_MISSING",
        "errorDetails": "a partial rollout needs a targeting key",
    }
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert changed.json()["flags"][1]["value"] is True


async def test_bodies_over_1_mb_get_413(serve: Serve) -> None:
    served = await serve()
    padded = b'{"context": {}}'.ljust(MAX_BODY_BYTES)  # trailing spaces: still valid JSON
    async with httpx.AsyncClient(base_url=served.url, headers=AUTH) as http:
        at_limit = await http.post(f"{PREFIX}/checkout", content=padded)
        over = await http.post(f"{PREFIX}/checkout", content=padded + b" ")
    assert at_limit.status_code == 200
    assert (over.status_code, over.headers["connection"]) == (413, "close")
    assert over.json() == {"errorDetails": f"request body over {MAX_BODY_BYTES} bytes"}
    # A declared length is refused from the headers: 10 GB promised, nothing sent.
    head = f"Authorization: Bearer {TOKEN}\r\nContent-Length: {10**10}\r\n\r\n"
    assert (await raw_post(served.port, PREFIX, b"", head))[0] == 413
    # No length at all (chunked): counted as it arrives, refused past the limit.
    head = f"Authorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n"
    for chunks in (16, 60):  # just over; over, and all of it read and dropped (< 4 MB)
        body = b"%x\r\n%s\r\n" % (64_000, b" " * 64_000) * chunks + b"0\r\n\r\n"
        assert (await raw_post(served.port, PREFIX, body, head))[0] == 413, chunks
    # Beyond 4 MB the server stops reading and closes; the client may only see a reset.
    with contextlib.suppress(ConnectionResetError):
        body = b"%x\r\n%s\r\n" % (64_000, b" " * 64_000) * 100 + b"0\r\n\r\n"
        assert (await raw_post(served.port, PREFIX, body, head))[0] == 413
    assert len(served.source.seen) == 1  # the body at the limit, nothing else


async def test_a_failing_source_gets_500(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    broken = DictSource(FLAGS)
    broken.flags = None  # type: ignore[assignment]  # every lookup now raises
    served = await serve(source=broken)
    async with httpx.AsyncClient(base_url=served.url, headers=AUTH) as http:
        answer = await http.post(f"{PREFIX}/checkout", json={"context": {}})
    assert answer.status_code == 500
    assert answer.json() == {"errorDetails": "internal error while evaluating"}
    assert "OFREP evaluation of checkout failed" in caplog.text
