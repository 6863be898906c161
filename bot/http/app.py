"""The HTTP side: Starlette on the bot's event loop. Health, and Telegram's webhook when on."""

from __future__ import annotations

import hmac
import json
import logging
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from telegram import Update

from bot.alert_notifier import deliver_alerts_soon
from bot.http.alert_webhooks import alert_routes
from bot.http.api import api_routes
from bot.http.dashboard.routes import dashboard_routes
from bot.http.metrics import metrics_endpoint, metrics_response
from bot.http.ofrep import ofrep_routes
from handlers.context import OpsApplication
from services.container import Services

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 (a header name)
DEFAULT_WEBHOOK_PATH = "/telegram/webhook"
MAX_UPDATE_BYTES = 1_000_000  # Telegram's updates are far smaller; refuse anything bigger


def webhook_path(webhook_url: str) -> str:
    path = urlsplit(webhook_url).path
    return path if path not in ("", "/") else DEFAULT_WEBHOOK_PATH


def create_http_app(
    application: OpsApplication,
    services: Services,
    webhook_secret: str | None = None,
    webhook_url: str = "",
    api_token: str = "",
    alerts_token: str = "",
) -> Starlette:
    """`webhook_secret` set means webhook mode: updates are accepted only with that header.

    OFREP answers only with `api_token` as its bearer token; without one it refuses all.
    """

    async def health(request: Request) -> JSONResponse:
        writable = await services.storage.is_writable()
        runtime = services.runtime
        reachable = runtime.chat_reachable
        checked = runtime.chat_checked_at
        uptime = round(services.uptime_seconds(), 1)
        leadership = services.leadership
        leading = leadership.leading if leadership else None
        body = {
            "status": "healthy" if writable and reachable is not False else "degraded",
            "role": "leader",
            "this": leadership.name if leadership else None,
            "version": services.version,
            "uptime": uptime,
            "uptime_seconds": uptime,
            "open_deployments": len(await services.deployments.in_flight()),
            "plans_active": [plan.flag_key for plan in await services.plans.active()],
            "telegram": {
                "reachable": reachable,
                "checked_at": checked.isoformat() if checked else None,
                "api_errors": runtime.chat_api_errors,
                "calls_pending": runtime.chat_calls_pending,
            },
            "database_writable": writable,
            "leader": leading.as_json() if leading else None,
            "webhooks": {
                hook.name: {
                    "pending": hook.pending,
                    "failing": hook.failing,
                    "last_error": hook.last_error or None,
                    "last_error_at": hook.last_error_at,
                    "last_delivered_at": hook.last_delivered_at,
                    "delivered": hook.delivered,
                    "failed_attempts": hook.failed,
                    "gave_up": hook.gave_up,
                }
                for hook in await services.webhooks.status()
            },
        }
        return JSONResponse(body, status_code=200 if writable else 503)

    async def metrics(request: Request) -> Response:
        return metrics_response(await metrics_endpoint(services))

    async def telegram_webhook(request: Request) -> Response:
        given = request.headers.get(SECRET_HEADER, "")
        assert webhook_secret is not None
        if not hmac.compare_digest(given.encode(), webhook_secret.encode()):
            log.warning("refused a webhook request without the right secret header")
            return JSONResponse({"error": "forbidden"}, status_code=403)
        body = await request.body()
        if len(body) > MAX_UPDATE_BYTES:
            return JSONResponse({"error": "update too large"}, status_code=413)
        try:
            update = Update.de_json(json.loads(body), application.bot)
        except (ValueError, TypeError, KeyError, AttributeError):
            log.warning("refused a webhook request whose body is not a Telegram update")
            return JSONResponse({"error": "not a Telegram update"}, status_code=400)
        await application.update_queue.put(update)
        return Response(status_code=200)

    routes: list[BaseRoute] = [
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    routes += ofrep_routes(services.flag_source, api_token)

    def deliver_now() -> None:
        deliver_alerts_soon(application)

    routes += alert_routes(services, alerts_token, services.pipeline.critical_alerts, deliver_now)
    routes += api_routes(api_token)
    routes += dashboard_routes(application, services, application.bot.token)
    if webhook_secret is not None:
        routes.append(Route(webhook_path(webhook_url), telegram_webhook, methods=["POST"]))
    app = Starlette(routes=routes)
    app.state.services = services  # the API's routes read it from here
    return app
