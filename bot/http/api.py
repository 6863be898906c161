"""The JSON API behind OPSGATE_API_TOKEN: read services, deployments, flags and alerts; request
deploys, rollbacks and flag changes. Writes go through the same checks, sign-off and audit as
the chat: `requested_by` is a person from [people] who must hold the role the chat command
needs, and the approvals chat gets the same sign-off message.

    GET  /api/services | /api/deployments[?service=&limit=] | /api/deployments/{id}
    GET  /api/flags | /api/alerts | /api/openapi.json
    POST /api/deployments   {"service", "version", "requested_by", "emergency"?}
    POST /api/rollbacks     {"service", "version"?, "requested_by"}
    POST /api/flags/{key}   {"percent", "requested_by"}
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot.http.api_schema import OPENAPI
from bot.http.bearer import bearer_ok
from handlers.approvals_chat import open_signoff
from handlers.context import OpsApplication
from handlers.deploy_cards import launch
from handlers.deploy_chat import DEPLOY_ROLE, EMERGENCY_ROLE
from services.approvals.model import deploy_policy, rollback_rule
from services.container import Services
from services.deploy.locks import EnvLockError
from services.deploy.model import Deployment, DeploymentError, DeploymentKind
from services.deploy.model import DeploymentState as S
from services.deploy.windows import deploy_refusal
from services.flags.types import FlagError
from services.hosts.primitives import HostCommandFailed
from services.releases.build import InvalidVersion, validate_version

MAX_BODY = 64 * 1024
Handler = Callable[[Request], Awaitable[Response]]


class ApiRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def deployment_json(d: Deployment) -> dict[str, Any]:
    return {
        "id": d.id,
        "service": d.service,
        "environment": d.environment,
        "version": d.version,
        "previous_version": d.previous_version,
        "kind": d.kind.value,
        "state": d.state.value,
        "requested_by": d.requested_by,
        "emergency": d.emergency,
        "created_at": d.created_at.isoformat(),
        "finished_at": d.finished_at.isoformat() if d.finished_at else None,
        "error": d.error or None,
    }


def api_routes(application: OpsApplication, services: Services, token: str) -> list[BaseRoute]:
    expected = token.encode()

    def guarded(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            if not bearer_ok(request, expected):
                return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
            try:
                return await handler(request)
            except ApiRefused as exc:
                return JSONResponse({"error": str(exc)}, status_code=exc.status)

        return endpoint

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

    def person(body: dict[str, Any], role: str) -> int:
        """`requested_by` must be a person holding `role`, as in the chat."""
        who = body.get("requested_by")
        if not isinstance(who, int) or isinstance(who, bool) or who not in services.ops.people:
            raise ApiRefused(422, "requested_by: the Telegram user id of someone in [people]")
        if role not in services.ops.roles_of(who):
            raise ApiRefused(403, f"requested_by {who} does not hold the role {role}")
        return who

    def deployable(name: object) -> str:
        if not isinstance(name, str) or name not in services.ops.services:
            known = ", ".join(sorted(services.ops.services))
            raise ApiRefused(404, f"unknown service {str(name)[:40]!r} (known: {known})")
        if services.ops.services[name].deploy is None:
            raise ApiRefused(422, f"{name} has no deploy section in the ops file")
        return name

    async def list_services(request: Request) -> Response:
        states = await services.controller().overview()
        return JSONResponse(
            [
                {
                    "name": s.name,
                    "environment": s.environment,
                    "manager": s.manager,
                    "state": s.state,
                    "running": s.running,
                    "main_pid": s.main_pid,
                    "restarts": s.restarts,
                    "health": None
                    if s.health is None
                    else {"ok": s.health.ok, "reason": s.health.reason},
                    "error": s.error,
                }
                for s in states
            ]
        )

    async def list_deployments(request: Request) -> Response:
        service = request.query_params.get("service")
        limit = request.query_params.get("limit", "20")
        if not limit.isdigit() or not 1 <= int(limit) <= 500:
            raise ApiRefused(422, "limit: a number from 1 to 500")
        rows = await services.deployments.history(service, int(limit))
        return JSONResponse([deployment_json(d) for d in rows])

    async def one_deployment(request: Request) -> Response:
        text = request.path_params["id"]
        try:
            deployment = await services.deployments.get(int(text))
        except (ValueError, DeploymentError):
            raise ApiRefused(404, f"no deployment {text[:20]!r}") from None
        trail = await services.audit_export.trail(deployment.id)
        return JSONResponse({**deployment_json(deployment), "trail": trail})

    async def list_flags(request: Request) -> Response:
        flags = await services.flags.all()
        return JSONResponse(
            [
                {
                    "key": f.key,
                    "enabled": f.enabled,
                    "killed": f.killed,
                    "rollout_percent": f.rollout_percent,
                    "version": f.version,
                }
                for f in flags
            ]
        )

    async def list_alerts(request: Request) -> Response:
        groups = await services.alerts.firing_groups()
        return JSONResponse(
            [
                {
                    "group": g.id,
                    "labels": dict(g.labels),
                    "acked_by": g.acked_by,
                    "alerts": [
                        {
                            "fingerprint": a.fingerprint,
                            "labels": dict(a.labels),
                            "annotations": dict(a.annotations),
                            "starts_at": a.starts_at.isoformat(),
                        }
                        for a in g.firing
                    ],
                }
                for g in groups
            ]
        )

    async def request_deploy(request: Request) -> Response:
        body = await body_of(request)
        emergency = body.get("emergency", False) is True
        who = person(body, EMERGENCY_ROLE if emergency else DEPLOY_ROLE)
        name = deployable(body.get("service"))
        version = body.get("version")
        try:
            validate_version(str(version) if isinstance(version, str) else "")
        except InvalidVersion as exc:
            raise ApiRefused(422, f"version: {exc}") from None
        environment_name = services.ops.services[name].environment
        environment = services.ops.environments.get(environment_name)
        if environment is not None and not emergency:
            refusal = deploy_refusal(environment_name, environment, services.clock())
            if refusal is not None:
                raise ApiRefused(409, refusal)
        try:
            deployment = await services.deployments.request(
                name, environment_name, str(version), str(who), emergency=emergency
            )
        except (DeploymentError, EnvLockError) as exc:
            raise ApiRefused(409, str(exc)) from None
        policy = deploy_policy(services.ops, environment_name)
        if policy is not None and not emergency:
            await open_signoff(application.bot, services, deployment, policy, None)
        else:
            note = "requested through the API" + (", emergency" if emergency else "")
            await services.deployments.advance(deployment.id, S.APPROVED, str(who), note)
            await _start(deployment)
        deployment = await services.deployments.get(deployment.id)
        return JSONResponse(deployment_json(deployment), status_code=202)

    async def request_rollback(request: Request) -> Response:
        body = await body_of(request)
        who = person(body, DEPLOY_ROLE)
        name = deployable(body.get("service"))
        version = body.get("version")
        environment_name = services.ops.services[name].environment
        policy, emergency = rollback_rule(services.ops, environment_name, who)
        try:
            target = await services.releases.rollback_target(
                name, version if isinstance(version, str) else None
            )
            deployment = await services.deployments.request(
                name,
                environment_name,
                target,
                str(who),
                kind=DeploymentKind.ROLLBACK,
                emergency=emergency,
            )
        except (LookupError, InvalidVersion, HostCommandFailed) as exc:
            raise ApiRefused(422, str(exc)) from None
        except (DeploymentError, EnvLockError) as exc:
            raise ApiRefused(409, str(exc)) from None
        if policy is not None and not emergency:
            await open_signoff(application.bot, services, deployment, policy, None)
        else:
            await services.deployments.advance(deployment.id, S.APPROVED, str(who), "API")
            await _start(deployment)
        deployment = await services.deployments.get(deployment.id)
        return JSONResponse(deployment_json(deployment), status_code=202)

    async def change_flag(request: Request) -> Response:
        body = await body_of(request)
        who = person(body, DEPLOY_ROLE)
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

    async def openapi(request: Request) -> Response:
        return JSONResponse(OPENAPI)

    async def _start(deployment: Deployment) -> None:
        chat_id = services.ops.chats.deploys
        if chat_id is None:
            raise ApiRefused(409, "no [chats] deploys to show the deploy in")
        await launch(application, deployment, chat_id)

    table: list[tuple[str, str, Handler]] = [
        ("GET", "/api/services", list_services),
        ("GET", "/api/deployments", list_deployments),
        ("GET", "/api/deployments/{id}", one_deployment),
        ("GET", "/api/flags", list_flags),
        ("GET", "/api/alerts", list_alerts),
        ("GET", "/api/openapi.json", openapi),
        ("POST", "/api/deployments", request_deploy),
        ("POST", "/api/rollbacks", request_rollback),
        ("POST", "/api/flags/{key}", change_flag),
    ]
    return [Route(path, guarded(handler), methods=[verb]) for verb, path, handler in table]
