"""API writes: deploys, rollbacks and flag changes, through the services' front door.

Parse the body, check who asks, call one service, answer 202 with the deployment; refusals
are the services' own errors, mapped to status codes in bot/http/api/common.py.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bot.http.api.common import ApiRefused, body_of, deployment_json, person, services_of
from config.permissions import Action
from services.deploy.front_door import Origin
from services.flags.types import FlagError
from services.releases.build import InvalidVersion

API = Origin("api")


async def request_deploy(request: Request) -> Response:
    services, body = services_of(request), await body_of(request)
    emergency = body.get("emergency", False) is True
    who = person(services, body, Action.EMERGENCY if emergency else Action.DEPLOY)
    name, version = _text(body, "service"), _text(body, "version")
    environment = _optional_text(body, "environment")
    try:
        requested = await services.front_door.deploy(
            name, version, str(who), API, emergency=emergency, environment=environment
        )
    except InvalidVersion as exc:
        raise ApiRefused(422, f"version: {exc}") from None
    deployment = await services.deployments.get(requested.deployment.id)
    return JSONResponse(deployment_json(deployment), status_code=202)


async def request_rollback(request: Request) -> Response:
    services, body = services_of(request), await body_of(request)
    who = person(services, body, Action.ROLLBACK)
    requested = await services.front_door.rollback(
        _text(body, "service"),
        _optional_text(body, "version"),
        str(who),
        API,
        _optional_text(body, "environment"),
    )
    deployment = await services.deployments.get(requested.deployment.id)
    return JSONResponse(deployment_json(deployment), status_code=202)


async def request_promotion(request: Request) -> Response:
    """What runs in `from` (default: the first environment another is promoted from) goes
    to the next environment, through the usual sign-off."""
    services, body = services_of(request), await body_of(request)
    who = person(services, body, Action.DEPLOY)
    requested = await services.front_door.promote(
        _text(body, "service"), str(who), API, _optional_text(body, "from")
    )
    deployment = await services.deployments.get(requested.deployment.id)
    return JSONResponse(deployment_json(deployment), status_code=202)


async def change_flag(request: Request) -> Response:
    services, body = services_of(request), await body_of(request)
    who = person(services, body, Action.FLAGS)
    key = request.path_params["key"]
    percent = body.get("percent")
    if not isinstance(percent, (int, float)) or isinstance(percent, bool):
        raise ApiRefused(422, "percent: a number from 0 to 100")
    if await services.flags.get(key) is None:
        raise ApiRefused(404, f"unknown flag {key[:60]!r}")
    try:
        flag = await services.flags.set_rollout(key, float(percent), str(who), "API")
    except (FlagError, ValueError) as exc:
        raise ApiRefused(422, str(exc)) from None
    return JSONResponse({"key": flag.key, "rollout_percent": flag.rollout_percent})


def _optional_text(body: dict[str, object], field: str) -> str | None:
    """Absent: None. Present but not text: "" (refused by the front door, never ignored)."""
    if field not in body or body[field] is None:
        return None
    return _text(body, field)


def _text(body: dict[str, object], field: str) -> str:
    """A text field as given; anything else becomes "" and is refused by the front door."""
    value = body.get(field)
    return value if isinstance(value, str) else ""
