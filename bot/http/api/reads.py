"""API reads: services with their state, deployments with their trail, flags, alerts."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bot.http.api.changes import flag_json
from bot.http.api.common import ApiRefused, services_of
from bot.http.api.schema import OPENAPI
from services.alerts.listing import apply as apply_filter
from services.alerts.listing import filter_from_params
from services.alerts.model import MatcherError
from services.control.controller import ServiceState
from services.deploy.model import DeploymentError, deployment_json


async def list_services(request: Request) -> Response:
    """One item per service and environment; `hosts` has each host's state and release."""
    placements = await services_of(request).placements()
    items = []
    for placement in placements:
        first = placement.states[0]
        hosts = [
            {
                "host": s.host,
                "version": placement.versions.get(s.host),
                "state": s.state,
                "running": s.running,
                "main_pid": s.main_pid,
                "health": _health(s),
                "error": s.error,
            }
            for s in placement.states
        ]
        items.append(
            {
                "name": placement.service,
                "environment": placement.environment,
                "manager": first.manager,
                "state": first.state,
                "running": first.running,
                "main_pid": first.main_pid,
                "restarts": first.restarts,
                "health": _health(first),
                "error": first.error,
                "version": placement.version,
                "healthy_hosts": len(placement.healthy),
                "hosts": hosts,
            }
        )
    return JSONResponse(items)


def _health(state: ServiceState) -> dict[str, object] | None:
    return None if state.health is None else {"ok": state.health.ok, "reason": state.health.reason}


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
    return JSONResponse([flag_json(f) for f in flags])


async def list_alerts(request: Request) -> Response:
    """Firing groups, filtered by ?service= and ?severity=, paged by ?limit= (default: all)
    and ?offset=; X-Total-Count says how many match."""
    params = request.query_params
    limit, offset = params.get("limit"), params.get("offset", "0")
    if limit is not None and (not limit.isdigit() or not 1 <= int(limit) <= 500):
        raise ApiRefused(422, "limit: a number from 1 to 500")
    if not offset.isdigit() or len(offset) > 9:
        raise ApiRefused(422, "offset: a number from 0")
    try:
        where = filter_from_params(params.get("service"), params.get("severity"))
    except MatcherError as exc:
        raise ApiRefused(422, str(exc)) from None
    groups = apply_filter(await services_of(request).alerts.firing_groups(), where)
    start = int(offset)
    shown = groups[start:] if limit is None else groups[start : start + int(limit)]
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
            for g in shown
        ],
        headers={"X-Total-Count": str(len(groups))},
    )


async def openapi(request: Request) -> Response:
    return JSONResponse(OPENAPI)
