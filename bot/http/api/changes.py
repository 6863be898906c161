"""API writes: deploys, rollbacks, promotions, database restores and flag changes, through the
services' front door.

Parse the body, check who asks, call one service, answer 202 with the deployment; refusals
are the services' own errors, mapped to status codes in bot/http/api/common.py.
"""

from __future__ import annotations

from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bot.http.api.common import ApiRefused, actor, body_of, services_of
from bot.http.api.schema import FLAG_ACTIONS
from config.permissions import Action
from services.deploy.front_door import Origin
from services.deploy.model import deployment_json
from services.flags.edits import TargetingEdit, Verb, apply_targeting, chat_types_of
from services.flags.types import Flag, FlagError
from services.releases.build import InvalidVersion

API = Origin("api")


async def request_deploy(request: Request) -> Response:
    services, body = services_of(request), await body_of(request)
    emergency = body.get("emergency", False) is True
    who = actor(request, body, Action.EMERGENCY if emergency else Action.DEPLOY)
    name, version = text(body, "service"), text(body, "version")
    environment = optional_text(body, "environment")
    try:
        requested = await services.front_door.deploy(
            name, version, who, API, emergency=emergency, environment=environment
        )
    except InvalidVersion as exc:
        raise ApiRefused(422, f"version: {exc}") from None
    deployment = await services.deployments.get(requested.deployment.id)
    return JSONResponse(deployment_json(deployment), status_code=202)


async def request_rollback(request: Request) -> Response:
    services, body = services_of(request), await body_of(request)
    who = actor(request, body, Action.ROLLBACK)
    requested = await services.front_door.rollback(
        text(body, "service"),
        optional_text(body, "version"),
        who,
        API,
        optional_text(body, "environment"),
    )
    deployment = await services.deployments.get(requested.deployment.id)
    return JSONResponse(deployment_json(deployment), status_code=202)


async def request_restore(request: Request) -> Response:
    """`{"service", "point", "environment"?}`: the database backup of rollback point `point`
    put back (the service stopped, restored, started, verified), signed off like a deploy."""
    services, body = services_of(request), await body_of(request)
    who = actor(request, body, Action.ROLLBACK)
    point = body.get("point")
    point = str(point) if isinstance(point, int) and not isinstance(point, bool) else point
    requested = await services.front_door.restore(
        text(body, "service"),
        point if isinstance(point, str) else "",
        who,
        API,
        optional_text(body, "environment"),
    )
    deployment = await services.deployments.get(requested.deployment.id)
    return JSONResponse(deployment_json(deployment), status_code=202)


async def list_restore_points(request: Request) -> Response:
    """`?service=NAME[&environment=ENV]`: the rollback points holding a database backup."""
    services = services_of(request)
    name = request.query_params.get("service", "")
    environment = request.query_params.get("environment")
    points = await services.front_door.restore_points(name, environment)
    return JSONResponse(
        [
            {
                "point": p.deployment_id,
                "created_at": p.created_at,
                "previous_version": p.previous_version,
                "database": p.database.source if p.database else None,
                "sha256": p.database.sha256 if p.database else None,
            }
            for p in points
        ]
    )


async def request_promotion(request: Request) -> Response:
    """What runs in `from` (default: the first environment another is promoted from) goes
    to the next environment, through the usual sign-off."""
    services, body = services_of(request), await body_of(request)
    who = actor(request, body, Action.DEPLOY)
    requested = await services.front_door.promote(
        text(body, "service"), who, API, optional_text(body, "from")
    )
    deployment = await services.deployments.get(requested.deployment.id)
    return JSONResponse(deployment_json(deployment), status_code=202)


async def change_flag(request: Request) -> Response:
    """`{"percent": 25}` (`action` may be left out), or `{"action": "on" | "off" | "kill" |
    "unkill", "reason"?}`, or a targeting change: `{"action": "exclude" | "unexclude" |
    "allow" | "disallow", "target": {"kind": "chat"|"user", "id"}}`, `{"action":
    "segment_add" | "segment_remove", "segment"}`, `{"action": "chats", "chat_types": [...]}`."""
    services, body = services_of(request), await body_of(request)
    key = request.path_params["key"]
    verb = body.get("action", "percent")
    if verb not in FLAG_ACTIONS:
        raise ApiRefused(422, f"action: one of {', '.join(FLAG_ACTIONS)}")
    who = actor(request, body, Action.FLAGS)
    if await services.flags.get(key) is None:
        raise ApiRefused(404, f"unknown flag {key[:60]!r}")
    raw = body.get("percent")
    percent = float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else None
    if (
        verb == "percent"
        and percent is not None
        and services.four_eyes.needs_approval(key, percent)
    ):
        asked = await services.four_eyes.request(key, {"percent": percent}, who)
        return JSONResponse(
            {
                "pending_approval": asked.id,
                "message": f"{asked.summary} needs a second person: in chat,"
                f" /flag {key} approve {asked.id}",
            },
            status_code=202,
        )
    try:
        flag = await _apply_flag(request, key, verb, body, who)
    except (FlagError, ValueError) as exc:
        raise ApiRefused(422, str(exc)) from None
    return JSONResponse(flag_json(flag))


async def _apply_flag(
    request: Request, key: str, verb: str, body: dict[str, Any], who: str
) -> Flag:
    flags = services_of(request).flags
    if verb == "percent":
        percent = body.get("percent")
        if not isinstance(percent, (int, float)) or isinstance(percent, bool):
            raise ApiRefused(422, "percent: a number from 0 to 100")
        return await flags.set_rollout(key, float(percent), who, "API")
    if verb in ("on", "off"):
        return await flags.set_enabled(key, verb == "on", who)
    if verb == "kill":
        return await flags.kill(key, who, text(body, "reason") or "killed through the API")
    if verb == "unkill":
        return await flags.unkill(key, who)
    if verb == "split":
        weights = body.get("split")
        if not isinstance(weights, dict) or not all(
            isinstance(w, int) and not isinstance(w, bool) for w in weights.values()
        ):
            raise ApiRefused(422, 'split: {"variant": weight, ...}, whole weights')
        return await flags.set_split(key, [(str(k), int(w)) for k, w in weights.items()], who)
    if verb == "include":  # kept for older callers: unexclude, and a user also allowed
        kind, ident = _target(body)
        return await flags.include(key, kind, ident, who)
    services = services_of(request)
    return await apply_targeting(flags, services.ops.segments, key, _edit(verb, body), who)


def _target(body: dict[str, Any]) -> tuple[Literal["chat", "user"], str]:
    target = body.get("target")
    kind = target.get("kind") if isinstance(target, dict) else None
    ident = target.get("id") if isinstance(target, dict) else None
    if kind not in ("chat", "user") or not isinstance(ident, (str, int)) or ident is True:
        raise ApiRefused(422, 'target: {"kind": "chat" or "user", "id": a Telegram id}')
    return ("chat" if kind == "chat" else "user"), str(ident)


def _edit(verb: str, body: dict[str, Any]) -> TargetingEdit:
    """The targeting change a body asks for; 422 when it is not well formed."""
    if verb in ("exclude", "unexclude"):
        kind, ident = _target(body)
        return TargetingEdit("exclude" if verb == "exclude" else "unexclude", kind, ident)
    if verb in ("allow", "disallow"):
        kind, ident = _target(body)
        if kind != "user":
            raise ApiRefused(422, f'{verb} takes a user: {{"kind": "user", "id": ...}}')
        return TargetingEdit("allow" if verb == "allow" else "disallow", "user", ident)
    if verb in ("segment_add", "segment_remove"):
        name = text(body, "segment")
        if not name:
            raise ApiRefused(422, "segment: the name of an ops-file segment")
        which: Verb = "segment_add" if verb == "segment_add" else "segment_remove"
        return TargetingEdit(which, segment=name)
    wanted = body.get("chat_types")
    if not isinstance(wanted, list) or not all(isinstance(v, str) for v in wanted):
        raise ApiRefused(422, 'chat_types: a list such as ["group", "supergroup"] ([]: all)')
    return TargetingEdit(
        "chats", chat_types=chat_types_of(",".join(wanted)) if wanted else frozenset()
    )


def flag_json(flag: Flag) -> dict[str, Any]:
    tg = flag.targeting
    variants = (
        {}
        if not flag.split
        else {
            "kind": flag.kind,
            "variants": dict(flag.variants),
            "default": flag.off_variant,
            "split": dict(flag.split),
        }
    )
    return variants | {
        "key": flag.key,
        "rollout_percent": flag.rollout_percent,
        "enabled": flag.enabled,
        "killed": flag.killed,
        "version": flag.version,
        "targeting": {
            "allow": sorted(tg.user_ids),
            "segments": list(tg.segments),
            "chat_types": sorted(tg.chat_types),
            "excluded_chats": sorted(tg.excluded_chats),
            "excluded_users": sorted(tg.excluded_users),
        },
    }


def optional_text(body: dict[str, Any], field: str) -> str | None:
    """Absent: None. Present but not text: "" (refused by the front door, never ignored)."""
    if field not in body or body[field] is None:
        return None
    return text(body, field)


def text(body: dict[str, Any], field: str) -> str:
    """A text field as given; anything else becomes "" and is refused by the front door."""
    value = body.get(field)
    return value if isinstance(value, str) else ""
