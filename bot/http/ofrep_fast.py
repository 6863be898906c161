"""OFREP's single-flag evaluation answered by the HTTP parser itself: the HTTP hot path.

uvicorn runs every request as an ASGI cycle: a scope, a task, receive and send messages, then
the app's middleware, router and wrappers. For `POST /ofrep/v1/evaluate/flags/{key}` all of
that costs many times the evaluation, so `ofrep_protocol` gives uvicorn a subclass of its own
httptools protocol that answers such a request as soon as its body is in, synchronously, from
`Ofrep.answer_one`: the same bearer check, JSON parsing, statuses, bodies and headers as the
Starlette route, and the same `FlagSource.evaluate`.

Only the plain case takes this path: HTTP/1.1, a valid key with no `%` and no query string, a
Content-Length of at most MAX_BODY_BYTES, no Transfer-Encoding, no `Expect`, and no earlier
request on the connection still being answered (answers keep their order). Anything else runs
through uvicorn and the app as before, so odd requests get the routes' answers.
tests/bot/test_ofrep_fast_path.py checks both paths give the same answers, byte for byte.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from bot.http.ofrep import MAX_BODY_BYTES, PREFIX, Answer, FlagSource, Ofrep
from services.flags.types import is_valid_flag_key

_SINGLE = (PREFIX + "/").encode()


_default_block: tuple[object, bytes] = (None, b"")


def _default_headers(headers: list[tuple[bytes, bytes]]) -> bytes:
    """uvicorn's headers for every answer (date, server) as one block; uvicorn replaces the
    list each second, so the block is made once per list."""
    global _default_block
    if _default_block[0] is not headers:
        _default_block = (headers, b"".join(b"%s: %s\r\n" % pair for pair in headers))
    return _default_block[1]


# Answers repeat (bot/http/ofrep.py encodes each evaluation's once): so does all that follows
# the status line and the date, on a connection kept alive. Held with the answer, so the id
# stays its own.
_FRAMED: dict[int, tuple[Answer, bytes]] = {}
_MAX_FRAMED = 4096


def _frame(answer: Answer, keep_alive: bool) -> tuple[bytes, bool]:
    """The answer's headers, the blank line and its body; and whether the connection stays."""
    out: list[bytes] = []
    for text_name, text_value in answer.headers:
        if text_name == "connection" and "close" in text_value.lower():
            keep_alive = False
        out += (text_name.encode(), b": ", text_value.encode("latin-1"), b"\r\n")
    # As Starlette's Response lists them, after the answer's own headers; then uvicorn's
    # `connection: close` when it closes without being told to.
    out.append(b"content-length: %d\r\ncontent-type: application/json\r\n" % len(answer.body))
    if not keep_alive and not any(name == "connection" for name, _ in answer.headers):
        out.append(b"connection: close\r\n")
    out += (b"\r\n", answer.body)
    return b"".join(out), keep_alive


_KEYS: dict[bytes, str] = {}  # single-flag targets seen, to their (valid) keys
_MAX_KEYS = 4096


def _key_of(url: bytes) -> str | None:
    """The flag key of a single-flag target as sent, or None: another target, or a key that
    is not valid (a `?` or `%` in the target is not valid in a key either)."""
    key = _KEYS.get(url)
    if key is not None:
        return key
    if not url.startswith(_SINGLE):
        return None
    key = url[len(_SINGLE) :].decode("ascii", "replace")
    if not is_valid_flag_key(key):
        return None
    if len(_KEYS) < _MAX_KEYS:  # flags are few: a full table means odd clients, not flags
        _KEYS[url] = key
    return key


class OfrepProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering plain single-flag evaluations itself."""

    ofrep: Ofrep  # set on the subclass `ofrep_protocol` makes

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fast_key: str | None = None  # the request being answered here, if one is
        self._fast_body = b""
        self._fast_authorization = b""
        self._close_after = False
        self._active_at = 0.0  # loop time of the last read or answer

    # Keep-alive. uvicorn cancels its idle timer on every read and arms a new one after every
    # answer: two timer operations per request, a large share of a fast answer's cost. Here a
    # timer, once armed, stays: reads and answers only note the time, and when it fires it
    # closes the connection only if nothing happened for the whole timeout, else waits the rest.

    def _unset_keepalive_if_required(self) -> None:
        self._active_at = self.loop.time()

    def timeout_keep_alive_handler(self) -> None:
        self.timeout_keep_alive_task = None
        if self._fast_key is not None or (self.cycle and not self.cycle.response_complete):
            return  # mid-request: its answer arms the timer again, as uvicorn's does
        idle = self.loop.time() - self._active_at
        if idle < self.timeout_keep_alive:
            self._arm_keep_alive(self.timeout_keep_alive - idle)
        else:
            super().timeout_keep_alive_handler()

    def _arm_keep_alive(self, delay: float) -> None:
        if self.timeout_keep_alive_task is None:
            handler = self.timeout_keep_alive_handler
            self.timeout_keep_alive_task = self.loop.call_later(delay, handler)

    def on_response_complete(self) -> None:
        # An ASGI answer: uvicorn arms a new timer without looking for one still armed.
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        super().connection_lost(exc)

    # uvicorn makes each request's ASGI scope as the request begins; a fast answer needs none,
    # so it is made only when the request turns out to go through uvicorn after all.

    def on_message_begin(self) -> None:
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def _begin_scope(self) -> None:
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers

    def on_headers_complete(self) -> None:
        key = self._fast_path_key()
        if key is None:
            self._begin_scope()
            super().on_headers_complete()
            return
        self._fast_key = key
        self._fast_body = b""

    def _fast_path_key(self) -> str | None:
        key = _key_of(self.url)
        if key is None:
            return None
        parser = self.parser
        if parser.get_method() != b"POST" or parser.get_http_version() != "1.1":
            return None
        if self.root_path or self.pipeline or (self.cycle and not self.cycle.response_complete):
            return None
        length = None
        self._fast_authorization = b""
        for name, value in self.headers:
            if name == b"authorization":
                if not self._fast_authorization:  # the first, as Starlette's headers.get
                    self._fast_authorization = value
            elif name == b"content-length" and length is None and value.isdigit():
                length = int(value) if len(value) <= 12 else None
            elif name in (b"content-length", b"transfer-encoding", b"expect"):
                return None
        if length is None or length > MAX_BODY_BYTES:
            return None
        return key

    def on_body(self, body: bytes) -> None:
        if self._fast_key is None:
            super().on_body(body)
        else:
            self._fast_body += body

    def on_message_complete(self) -> None:
        key = self._fast_key
        if key is None:
            super().on_message_complete()
            return
        self._fast_key = None
        authorization = self._fast_authorization.decode("latin-1")
        answer = self.ofrep.answer_one(authorization, key, self._fast_body)
        keep_alive = self.parser.should_keep_alive() and not self._close_after
        default = _default_headers(self.server_state.default_headers)
        framed = _FRAMED.get(id(answer))
        if keep_alive and framed is not None and framed[0] is answer:
            self.transport.write(b"%s%s%s" % (STATUS_LINE[answer.status], default, framed[1]))
        else:
            rest, keep_alive = _frame(answer, keep_alive)
            self.transport.write(b"%s%s%s" % (STATUS_LINE[answer.status], default, rest))
            if keep_alive:
                if len(_FRAMED) >= _MAX_FRAMED:
                    _FRAMED.clear()
                _FRAMED[id(answer)] = (answer, rest)
        if self.access_log and self.access_logger.isEnabledFor(logging.INFO):
            self.access_logger.info(
                '%s - "POST %s HTTP/1.1" %d',
                f"{self.client[0]}:{self.client[1]}" if self.client else "-",
                self.url.decode("ascii"),
                answer.status,
            )
        self.server_state.total_requests += 1
        if not keep_alive:
            self.transport.close()
        else:  # nothing can be queued behind it: it was taken only with nothing in flight
            # Answered within the read that brought it: that read noted the time already.
            self._arm_keep_alive(self.timeout_keep_alive)

    def shutdown(self) -> None:
        if self._fast_key is None:
            super().shutdown()
        else:
            self._close_after = True  # answered, then closed, as uvicorn does mid-request


def ofrep_protocol(source: FlagSource, token: str) -> type[asyncio.Protocol]:
    """For `BackgroundHTTPServer(http=...)`: the fast path over the same source and token as
    `ofrep_routes(source, token)`, which stays in the app for everything else."""
    return type("OfrepFastProtocol", (OfrepProtocol,), {"ofrep": Ofrep(source, token)})
