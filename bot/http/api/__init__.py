"""The JSON API: read services, deployments, flags, alerts and locks; do what the chat does
(deploy, rollback, promote, restore, halt, lock, unlock, silence, unsilence, flag changes).
Writes go through the services' front door, with the same checks, sign-off and audit as the
chat.

Who asks: a token of the ops file's [api_tokens] names its caller (a person, or a role); with
OPSGATE_API_TOKEN, `requested_by` in the body is a person from [people]. Either must hold the
role the chat command needs, or the answer is 403 and nothing changes.

    GET    /api/services | /api/deployments[?service=&limit=] | /api/deployments/{id}
    GET    /api/flags | /api/alerts | /api/locks | /api/openapi.json
    POST   /api/deployments         {"service", "version", "emergency"?, "environment"?}
    POST   /api/rollbacks           {"service", "version"?, "environment"?}
    POST   /api/promotions          {"service", "from"?}
    GET    /api/restores?service=   the rollback points that hold a database backup
    POST   /api/restores            {"service", "point", "environment"?}
    POST   /api/flags/{key}         {"percent"} | {"action": "on"|"off"|"kill"|..., ...}
    POST   /api/halt                {"reason"}
    POST   /api/locks/{env}         {"reason"}
    DELETE /api/locks/{env}
    POST   /api/silences            {"matchers", "duration", "comment"?}
    DELETE /api/silences/{id}

Each route is a named function of one module per resource (reads, changes, controls); this
package only assembles them behind the bearer token and turns refusals into status codes.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from bot.http.api import changes, controls, reads
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
    ("GET", "/api/restores", changes.list_restore_points),
    ("POST", "/api/restores", changes.request_restore),
    ("POST", "/api/flags/{key}", changes.change_flag),
    ("POST", "/api/halt", controls.halt),
    ("GET", "/api/locks", controls.list_locks),
    ("POST", "/api/locks/{environment}", controls.lock),
    ("DELETE", "/api/locks/{environment}", controls.unlock),
    ("POST", "/api/silences", controls.silence),
    ("DELETE", "/api/silences/{id}", controls.unsilence),
]


def api_routes(token: str) -> list[BaseRoute]:
    """The API's routes; they read the services from the Starlette app's state."""
    expected = token.encode()
    return [
        Route(path, guarded(handler, expected), methods=[verb]) for verb, path, handler in TABLE
    ]
