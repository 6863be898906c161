"""The OpenAPI document of the JSON API (bot/http/api.py), served at GET /api/openapi.json."""

from __future__ import annotations

from typing import Any

_ERROR = {
    "description": "refused, with the reason",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def _ok(schema: dict[str, Any], code: str = "200") -> dict[str, Any]:
    return {
        code: {"description": "ok", "content": {"application/json": {"schema": schema}}},
        "401": {"description": "missing or wrong bearer token"},
        "403": _ERROR,
        "404": _ERROR,
        "409": _ERROR,
        "422": _ERROR,
    }


def _body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": required}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_REQUESTER = {"type": "integer", "description": "Telegram user id of someone in [people]"}
_DEPLOYMENT = {"$ref": "#/components/schemas/Deployment"}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "opsgate",
        "version": "1",
        "description": "Read opsgate's state; request deploys, rollbacks and flag changes through"
        " the same checks, sign-off and audit as the chat.",
    },
    "security": [{"bearer": []}],
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "string"}}},
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
                    ["service", "version", "requested_by"],
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
                    ["service", "requested_by"],
                ),
                "responses": _ok(_DEPLOYMENT, "202"),
            }
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
                    ["service", "requested_by"],
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
                "summary": "set a flag's rollout percentage",
                "parameters": [
                    {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "requestBody": _body(
                    {
                        "percent": {"type": "number", "minimum": 0, "maximum": 100},
                        "requested_by": _REQUESTER,
                    },
                    ["percent", "requested_by"],
                ),
                "responses": _ok({"type": "object"}),
            }
        },
        "/api/alerts": {
            "get": {
                "summary": "alert groups firing now",
                "responses": _ok({"type": "array", "items": {"type": "object"}}),
            }
        },
    },
}
