"""The OpenAPI document of the JSON API (bot/http/api/), served at GET /api/openapi.json."""

from __future__ import annotations

from typing import Any

# The flag changes of `/flag KEY ...` the API makes (plans stay in the chat).
FLAG_ACTIONS = (
    *("percent", "on", "off", "kill", "unkill", "exclude", "include", "unexclude"),
    *("allow", "disallow", "segment_add", "segment_remove", "chats", "split"),
)

_ERROR = {
    "description": "refused, with the reason",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def _ok(schema: dict[str, Any], code: str = "200") -> dict[str, Any]:
    return {
        code: {"description": "ok", "content": {"application/json": {"schema": schema}}},
        "400": {"description": "the body is not JSON"},
        "401": {"description": "missing or wrong bearer token"},
        "403": _ERROR,
        "404": _ERROR,
        "409": _ERROR,
        "422": _ERROR,
    }


def _body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": required}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_REQUESTER = {
    "type": "integer",
    "description": "with OPSGATE_API_TOKEN only: the Telegram user id of someone in [people]"
    " (a token of [api_tokens] names its caller itself, and this is not read)",
}
_TEXT = {"type": "string"}
_DEPLOYMENT = {"$ref": "#/components/schemas/Deployment"}
_LOCK = {"$ref": "#/components/schemas/Lock"}
_SILENCE = {"$ref": "#/components/schemas/Silence"}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "opsgate",
        "version": "1",
        "description": "Read opsgate's state; do what the chat does (deploy, rollback, halt,"
        " lock, silence, flag changes) through the same checks, sign-off and audit. The bearer"
        " token is one of the ops file's [api_tokens] (it names the caller: a person or a"
        " role), or OPSGATE_API_TOKEN with `requested_by` in each write. A caller without the"
        " role the chat command needs gets 403 and nothing changes.",
    },
    "security": [{"bearer": []}],
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "string"}}},
            "Flag": {
                "type": "object",
                "properties": {
                    "key": _TEXT,
                    "rollout_percent": {"type": "number"},
                    "enabled": {"type": "boolean"},
                    "killed": {"type": "boolean"},
                    "version": {"type": "integer"},
                },
            },
            "Lock": {
                "type": "object",
                "properties": {
                    "environment": _TEXT,
                    "locked_by": _TEXT,
                    "reason": _TEXT,
                    "since": {"type": "string", "format": "date-time"},
                },
            },
            "Silence": {
                "type": "object",
                "properties": {
                    "id": _TEXT,  # Alertmanager's id, or opsgate's own number as text
                    "where": {"type": "string", "enum": ["alertmanager", "local", "fallback"]},
                    "matchers": {"type": "array", "items": _TEXT},
                    "ends_at": {"type": "string", "format": "date-time"},
                    "created_by": _TEXT,
                    "comment": _TEXT,
                    "fallback_reason": {"type": "string", "nullable": True},
                },
            },
            "Deployment": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "service": {"type": "string"},
                    "environment": {"type": "string"},
                    "version": {"type": "string"},
                    "previous_version": {"type": ["string", "null"]},
                    "kind": {"enum": ["deploy", "rollback", "drill"]},
                    "state": {"type": "string"},
                    "requested_by": {"type": "string"},
                    "emergency": {"type": "boolean"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "finished_at": {"type": ["string", "null"], "format": "date-time"},
                    "error": {"type": ["string", "null"]},
                },
            },
        },
    },
    "paths": {
        "/api/services": {
            "get": {
                "summary": "each service per environment: state, health, each host's release",
                "responses": _ok({"type": "array", "items": {"type": "object"}}),
            }
        },
        "/api/deployments": {
            "get": {
                "summary": "recent deployments, newest first",
                "parameters": [
                    {"name": "service", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                ],
                "responses": _ok({"type": "array", "items": _DEPLOYMENT}),
            },
            "post": {
                "summary": "request a deploy (waits for sign-off where the policy asks)",
                "requestBody": _body(
                    {
                        "service": {"type": "string"},
                        "version": {"type": "string"},
                        "requested_by": _REQUESTER,
                        "emergency": {"type": "boolean"},
                        "environment": {"type": "string"},
                    },
                    ["service", "version"],
                ),
                "responses": _ok(_DEPLOYMENT, "202"),
            },
        },
        "/api/deployments/{id}": {
            "get": {
                "summary": "one deployment with its whole trail",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
                ],
                "responses": _ok(_DEPLOYMENT),
            }
        },
        "/api/rollbacks": {
            "post": {
                "summary": "roll back to a release, or the newest good one before the current",
                "requestBody": _body(
                    {
                        "service": {"type": "string"},
                        "version": {"type": "string"},
                        "requested_by": _REQUESTER,
                        "environment": {"type": "string"},
                    },
                    ["service"],
                ),
                "responses": _ok(_DEPLOYMENT, "202"),
            }
        },
        "/api/restores": {
            "get": {
                "summary": "the rollback points of a service that hold a database backup",
                "parameters": [
                    {
                        "name": "service",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    {"name": "environment", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": _ok({"type": "array", "items": {"type": "object"}}),
            },
            "post": {
                "summary": "restore a service's database from a rollback point (stop, restore,"
                " start, verify; sign-off like a deploy)",
                "requestBody": _body(
                    {
                        "service": {"type": "string"},
                        "point": {"type": ["string", "integer"]},
                        "requested_by": _REQUESTER,
                        "environment": {"type": "string"},
                    },
                    ["service", "point"],
                ),
                "responses": _ok(_DEPLOYMENT, "202"),
            },
        },
        "/api/promotions": {
            "post": {
                "summary": "deploy what runs in one environment to the next one",
                "requestBody": _body(
                    {
                        "service": {"type": "string"},
                        "from": {"type": "string"},
                        "requested_by": _REQUESTER,
                    },
                    ["service"],
                ),
                "responses": _ok(_DEPLOYMENT, "202"),
            }
        },
        "/api/flags": {
            "get": {
                "summary": "feature flags",
                "responses": _ok({"type": "array", "items": {"type": "object"}}),
            }
        },
        "/api/flags/{key}": {
            "post": {
                "summary": "change a flag: its rollout, state, kill switch or targeting",
                "parameters": [
                    {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "requestBody": _body(
                    {
                        "action": {
                            "enum": list(FLAG_ACTIONS),
                            "default": "percent",
                        },
                        "percent": {"type": "number", "minimum": 0, "maximum": 100},
                        "reason": {"type": "string", "description": "for kill"},
                        "target": {
                            "type": "object",
                            "description": "exclude, unexclude, include; allow, disallow (users)",
                            "properties": {
                                "kind": {"enum": ["chat", "user"]},
                                "id": {"type": ["string", "integer"]},
                            },
                            "required": ["kind", "id"],
                        },
                        "segment": {"type": "string", "description": "for segment_add/remove"},
                        "split": {
                            "type": "object",
                            "additionalProperties": {"type": "integer", "minimum": 0},
                            "description": "for split: each variant's weight",
                        },
                        "chat_types": {
                            "type": "array",
                            "items": {"enum": ["private", "group", "supergroup", "channel"]},
                            "description": "for chats; empty: every chat type",
                        },
                        "requested_by": _REQUESTER,
                    },
                    [],
                ),
                "responses": _ok({"$ref": "#/components/schemas/Flag"}),
            }
        },
        "/api/alerts": {
            "get": {
                "summary": "alert groups firing now; X-Total-Count says how many match",
                "parameters": [
                    {"name": "service", "in": "query", "schema": {"type": "string"}},
                    {"name": "severity", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                    },
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                ],
                "responses": _ok({"type": "array", "items": {"type": "object"}}),
            }
        },
        "/api/halt": {
            "post": {
                "summary": "emergency stop: cancel what has not switched, stop rollouts before"
                " their next host, pause flag plans, lock every environment (role: control)",
                "requestBody": _body({"reason": _TEXT, "requested_by": _REQUESTER}, ["reason"]),
                "responses": _ok(
                    {
                        "type": "object",
                        "properties": {
                            "cancelled": {"type": "array", "items": {"type": "integer"}},
                            "still_running": {"type": "array", "items": {"type": "integer"}},
                            "paused": {"type": "array", "items": _TEXT},
                            "locked": {"type": "array", "items": _TEXT},
                        },
                    }
                ),
            }
        },
        "/api/locks": {
            "get": {
                "summary": "environment locks in force",
                "responses": _ok({"type": "array", "items": _LOCK}),
            }
        },
        "/api/locks/{environment}": {
            "parameters": [
                {"name": "environment", "in": "path", "required": True, "schema": _TEXT}
            ],
            "post": {
                "summary": "lock an environment against deploys (role: lock)",
                "requestBody": _body({"reason": _TEXT, "requested_by": _REQUESTER}, ["reason"]),
                "responses": _ok(_LOCK, "201"),
            },
            "delete": {
                "summary": "lift an environment's lock (role: lock)",
                "responses": _ok(_LOCK),
            },
        },
        "/api/silences": {
            "post": {
                "summary": "silence alerts matching every matcher for a while (role: silence)",
                "requestBody": _body(
                    {
                        "matchers": {
                            "type": "string",
                            "description": "label=value or label=~regex, space-separated",
                        },
                        "duration": {"type": "string", "pattern": "^[0-9]{1,4}[smhd]$"},
                        "comment": _TEXT,
                        "requested_by": _REQUESTER,
                    },
                    ["matchers", "duration"],
                ),
                "responses": _ok(_SILENCE, "201"),
            }
        },
        "/api/silences/{id}": {
            "delete": {
                "summary": "end a silence now (role: silence)",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
                ],
                "responses": _ok(_SILENCE),
            }
        },
    },
}
