"""OFREP's single-flag evaluation answered before Starlette's routing: the HTTP hot path.

`POST /ofrep/v1/evaluate/flags/{key}` with a valid flag key and no query string goes straight
to `Ofrep.evaluate_one`, the very endpoint the Starlette route calls: the same bearer check
(constant time), body limits, JSON parsing, statuses and error bodies, and the same
`FlagSource.evaluate`. What it skips is the work done per request before that endpoint: the
middleware stack, matching the path against every route of the HTTP side, and the route's
request/response wrappers.

Everything else (the bulk endpoint and its ETag, other methods, odd keys, query strings, every
other route) is passed to the wrapped app unchanged, so those answers are Starlette's, as before.
tests/bot/test_ofrep_fast_path.py checks both paths give the same answers, byte for byte.
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from bot.http.ofrep import PREFIX, FlagSource, Ofrep
from services.flags.types import is_valid_flag_key

_SINGLE = PREFIX + "/"


class OfrepFastPath:
    """ASGI middleware: single-flag OFREP evaluations answered here, the rest passed on."""

    def __init__(self, app: ASGIApp, source: FlagSource, token: str) -> None:
        self.app = app
        self._ofrep = Ofrep(source, token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and not scope["query_string"]
            and not scope.get("root_path")  # routes match the path as given: no mount prefix
        ):
            path: str = scope["path"]
            if path.startswith(_SINGLE) and is_valid_flag_key(key := path[len(_SINGLE) :]):
                response = await self._ofrep.evaluate_one(Request(scope, receive), key)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def ofrep_fast_path(source: FlagSource, token: str) -> Middleware:
    """For `Starlette(middleware=[...])`: the fast path over the same source and token as
    `ofrep_routes(source, token)`."""
    return Middleware(OfrepFastPath, source=source, token=token)
