"""What every API route shares: the bearer guard, JSON bodies, who asks, and status codes.

Two kinds of token open the API. OPSGATE_API_TOKEN (the process-wide one) names no caller:
each write says who asks in `requested_by`. A token of the ops file's [api_tokens.NAME] names
its caller: it acts as `person`, or holds `role` and is named "NAME (token)" in the audit.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bot.http.bearer import bearer_ok, bearer_token, token_by_hash
from config.permissions import Action
from services.container import Services
from services.errors import OpsgateError

MAX_BODY = 64 * 1024
Handler = Callable[[Request], Awaitable[Response]]
# OpsgateError.kind -> HTTP status; a refusal the service layer explains in its message.
STATUS_OF_KIND = {"invalid": 422, "not_found": 404, "conflict": 409, "unavailable": 503}


class ApiRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Caller:
    """Who holds the token: `token` None for OPSGATE_API_TOKEN (then `requested_by` says who),
    else the [api_tokens] entry's name with its person or its role."""

    token: str | None = None
    person: int | None = None
    role: str | None = None

    @property
    def actor(self) -> str:
        """As rows and the audit name the caller: a person's id, or "NAME (token)"."""
        return str(self.person) if self.person is not None else f"{self.token} (token)"


def caller_of(request: Request, expected: bytes) -> Caller | None:
    """The caller the bearer token names, or None (no token, or a wrong one)."""
    if bearer_ok(request, expected):
        return Caller()
    given = bearer_token(request)
    if given is None:
        return None
    tokens = services_of(request).ops.api_tokens
    name = token_by_hash(given, ((n, t.sha256) for n, t in tokens.items()))
    if name is None:
        return None
    return Caller(name, tokens[name].person, tokens[name].role)


def guarded(handler: Handler, expected: bytes) -> Handler:
    """The bearer token first; then refusals of the route or of a service become JSON errors."""

    async def endpoint(request: Request) -> Response:
        caller = caller_of(request, expected)
        if caller is None:
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        request.state.caller = caller
        try:
            return await handler(request)
        except ApiRefused as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        except OpsgateError as exc:
            status = STATUS_OF_KIND.get(exc.kind, 409)
            return JSONResponse({"error": str(exc)}, status_code=status)

    return endpoint


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def body_of(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ApiRefused(413, f"body over {MAX_BODY} bytes")
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise ApiRefused(400, f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiRefused(422, "expected a JSON object")
    return body


def actor(request: Request, body: dict[str, Any], action: Action) -> str:
    """Who does `action`, as the audit names them, once they are known to hold its role: the
    token's caller, or (OPSGATE_API_TOKEN) the person of `requested_by`."""
    caller: Caller = request.state.caller
    services = services_of(request)
    if caller.token is None:
        return str(person(services, body, action))
    ops = services.ops
    if caller.person is not None:
        roles = ops.roles_of(caller.person)
    else:
        roles = frozenset([caller.role]) if caller.role is not None else frozenset()
    allowed = ops.permissions.allows(action, roles)
    if not allowed:
        role = ops.permissions.role_for(action)
        raise ApiRefused(403, f"the token {caller.token} does not hold the role {role}")
    return caller.actor


def person(services: Services, body: dict[str, Any], action: Action) -> int:
    """`requested_by` must be a person holding the role `action` needs, as in the chat."""
    ops = services.ops
    who = body.get("requested_by")
    if not isinstance(who, int) or isinstance(who, bool) or who not in ops.people:
        raise ApiRefused(422, "requested_by: the Telegram user id of someone in [people]")
    if not ops.may(who, action):
        role = ops.permissions.role_for(action)
        raise ApiRefused(403, f"requested_by {who} does not hold the role {role}")
    return who
