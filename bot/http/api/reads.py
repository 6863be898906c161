"""API reads: services with their state, deployments with their trail, flags, alerts."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bot.http.api.common import ApiRefused, deployment_json, services_of
from bot.http.api.schema import OPENAPI
from services.deploy.model import DeploymentError


async def list_services(request: Request) -> Response:
    states = await services_of(request).controller().overview()
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
    rows = await services_of(request).deployments.history(service, int(limit))
    return JSONResponse([deployment_json(d) for d in rows])


async def one_deployment(request: Request) -> Response:
    services, text = services_of(request), request.path_params["id"]
    try:
        deployment = await services.deployments.get(int(text))
    except (ValueError, DeploymentError):
        raise ApiRefused(404, f"no deployment {text[:20]!r}") from None
    trail = await services.audit_export.trail(deployment.id)
    return JSONResponse({**deployment_json(deployment), "trail": trail})


async def list_flags(request: Request) -> Response:
    flags = await services_of(request).flags.all()
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
    groups = await services_of(request).alerts.firing_groups()
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


async def openapi(request: Request) -> Response:
    return JSONResponse(OPENAPI)
