"""API controls: /halt, environment locks and alert silences, as the chat has them.

Halt goes through the front door; locks through the environment locks; silences through the
alert engine's own silence/unsilence. Each is audited under the caller (common.actor).
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bot.http.api.changes import text
from bot.http.api.common import ApiRefused, actor, body_of, services_of
from config.permissions import Action
from services.alerts.model import MatcherError, parse_matchers
from services.alerts.silences import SilenceEntry, silence_duration
from services.deploy.locks import EnvLock


async def halt(request: Request) -> Response:
    """`{"reason"}`: cancel what has not switched, stop rollouts, pause plans, lock all."""
    services, body = services_of(request), await body_of(request)
    who = actor(request, body, Action.CONTROL)
    reason = text(body, "reason")
    if not reason.strip():
        raise ApiRefused(422, "reason: why everything stops (it stays until unlocked)")
    report = await services.front_door.halt(who, reason)
    return JSONResponse(
        {
            "cancelled": [d.id for d in report.cancelled],
            "still_running": [d.id for d in report.still_running],
            "paused": [p.flag_key for p in report.paused],
            "locked": [lock.environment for lock in report.locked],
        }
    )


async def list_locks(request: Request) -> Response:
    held = await services_of(request).env_locks.all()
    return JSONResponse([lock_json(lock) for lock in held])


async def lock(request: Request) -> Response:
    """`{"reason"}`: deploys to the environment are refused until it is unlocked."""
    services, body = services_of(request), await body_of(request)
    who = actor(request, body, Action.LOCK)
    environment = _environment(request)
    locked = await services.env_locks.lock(environment, who, text(body, "reason"))
    return JSONResponse(lock_json(locked), status_code=201)


async def unlock(request: Request) -> Response:
    """A per-caller token needs no body; OPSGATE_API_TOKEN sends `{"requested_by"}`."""
    services, body = services_of(request), await body_of(request)
    who = actor(request, body, Action.LOCK)
    ended = await services.env_locks.unlock(_environment(request), who)
    return JSONResponse(lock_json(ended))


async def silence(request: Request) -> Response:
    """`{"matchers": "alertname=DiskFull service=~web.*", "duration": "2h", "comment"?}`."""
    services, body = services_of(request), await body_of(request)
    who = actor(request, body, Action.SILENCE)
    try:
        matchers = parse_matchers(text(body, "matchers"))
    except MatcherError as exc:
        raise ApiRefused(422, f"matchers: {exc}") from None
    duration = silence_duration(text(body, "duration"))
    if duration is None:
        raise ApiRefused(422, "duration: 1s to 30d, like 30m, 2h, 1d")
    made = await services.silences.create(matchers, duration, who, text(body, "comment"))
    answer = silence_json(made.entry)
    answer["fallback_reason"] = made.unreachable  # Alertmanager unreachable: a local silence
    return JSONResponse(answer, status_code=201)


async def unsilence(request: Request) -> Response:
    services, body = services_of(request), await body_of(request)
    who, raw = actor(request, body, Action.SILENCE), request.path_params["id"]
    if not re.fullmatch(r"#?[0-9a-f-]{1,64}", raw):
        raise ApiRefused(404, f"no silence {raw[:20]!r} in force")
    ended = await services.silences.expire(raw, who)  # SilenceNotFound: 404
    return JSONResponse(silence_json(ended))


def _environment(request: Request) -> str:
    name: str = request.path_params["environment"]
    known = sorted(services_of(request).ops.environments)
    if name not in known:
        raise ApiRefused(404, f"unknown environment {name[:40]!r} (known: {', '.join(known)})")
    return name


def lock_json(held: EnvLock) -> dict[str, Any]:
    return {
        "environment": held.environment,
        "locked_by": held.locked_by,
        "reason": held.reason,
        "since": held.since.isoformat(),
    }


def silence_json(s: SilenceEntry) -> dict[str, Any]:
    """`where`: alertmanager, local (no Alertmanager) or fallback (it was unreachable)."""
    return {
        "id": s.id,
        "where": s.where,
        "matchers": list(s.matchers),
        "ends_at": s.ends_at.isoformat(),
        "created_by": s.created_by,
        "comment": s.comment,
    }
