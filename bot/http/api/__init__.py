"""The JSON API behind OPSGATE_API_TOKEN: read services, deployments, flags and alerts; request
deploys, rollbacks and flag changes. Writes go through the services' front door, with the same
checks, sign-off and audit as the chat: `requested_by` is a person from [people] who must hold
the role the chat command needs, and the approvals chat gets the same sign-off message.

    GET  /api/services | /api/deployments[?service=&limit=] | /api/deployments/{id}
    GET  /api/flags | /api/alerts | /api/openapi.json
    POST /api/deployments   {"service", "version", "requested_by", "emergency"?}
    POST /api/rollbacks     {"service", "version"?, "requested_by"}
    POST /api/flags/{key}   {"percent", "requested_by"}

Each route is a named function of one module per resource (reads, changes); this package only
assembles them behind the bearer token and turns refusals into status codes.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from bot.http.api import changes, reads
from bot.http.api.common import Handler, guarded

TABLE: list[tuple[str, str, Handler]] = [
    ("GET", "/api/services", reads.list_services),
    ("GET", "/api/deployments", reads.list_deployments),
    ("GET", "/api/deployments/{id}", reads.one_deployment),
    ("GET", "/api/flags", reads.list_flags),
    ("GET", "/api/alerts", reads.list_alerts),
    ("GET", "/api/openapi.json", reads.openapi),
    ("POST", "/api/deployments", changes.request_deploy),
    ("POST", "/api/rollbacks", changes.request_rollback),
    ("POST", "/api/promotions", changes.request_promotion),
    ("POST", "/api/flags/{key}", changes.change_flag),
]


def api_routes(token: str) -> list[BaseRoute]:
    """The API's routes; they read the services from the Starlette app's state."""
    expected = token.encode()
    return [
        Route(path, guarded(handler, expected), methods=[verb]) for verb, path, handler in TABLE
    ]
