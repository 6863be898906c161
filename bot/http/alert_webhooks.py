"""POST /webhooks/alertmanager (its version 4 payload) and POST /webhooks/generic.

Both need `Authorization: Bearer OPSGATE_ALERTS_TOKEN` (without a configured token every
request is refused). A body is read up to its endpoint's limit, checked whole, and stored with
its outbox rows before the answer: a 200 means nothing can be lost any more; a 4xx says why and
changes nothing (Alertmanager retries only on 5xx and network errors, so a 4xx is final).
Alertmanager sends a whole group in one request, so its endpoint takes any number of alerts
and a body up to MAX_ALERTMANAGER_BYTES (about 30,000 alerts); the generic one keeps
MAX_BODY_BYTES and [alerts] max_alerts_per_request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from bot.http.bearer import bearer_ok
from services.alerts.intake import PayloadError, parse_alertmanager, parse_generic
from services.alerts.model import AlertStatus, IncomingAlert
from services.container import Services

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_ALERTMANAGER_BYTES = 32 * 1024 * 1024
OnCritical = Callable[[Sequence[IncomingAlert]], Awaitable[None]]
OnStored = Callable[[], None]  # alerts were stored: deliver what is due now


class _TooLarge(Exception):
    pass


async def _read(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def alert_routes(
    services: Services, token: str, on_critical: OnCritical, on_stored: OnStored
) -> list[BaseRoute]:
    expected = token.encode()
    if not expected:
        log.warning("alert webhooks have no token configured: every request is refused")

    def authorised(request: Request) -> bool:
        return bearer_ok(request, expected)

    def endpoint(
        parse: Callable[[object, datetime, int], list[IncomingAlert]], max_bytes: int
    ) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def receive(request: Request) -> JSONResponse:
            if not authorised(request):
                return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
            try:
                body = await _read(request, max_bytes)
            except _TooLarge:
                return JSONResponse({"error": f"body over {max_bytes} bytes"}, status_code=413)
            try:
                payload = json.loads(body)
            except (ValueError, UnicodeDecodeError) as exc:
                return JSONResponse({"error": f"body is not JSON: {exc}"[:300]}, status_code=400)
            options = services.ops.alerts
            try:
                alerts = parse(payload, services.clock(), options.max_alerts_per_request)
            except PayloadError as exc:
                log.warning("refused an alert webhook body: %s", exc)
                return JSONResponse({"error": str(exc)[:300]}, status_code=422)
            report = await services.alerts.ingest(alerts)
            critical = [
                a
                for a in report.new_firing
                if a.labels.get("severity") == "critical" and a.status is AlertStatus.FIRING
            ]
            if critical:
                await on_critical(critical)
            if report.new_firing or report.resolved:
                on_stored()
            return JSONResponse(
                {
                    "accepted": len(alerts),
                    "new_firing": len(report.new_firing),
                    "resolved": len(report.resolved),
                    "unchanged": report.unchanged,
                    "unrouted": report.unrouted,
                }
            )

        return receive

    return [
        Route(
            "/webhooks/alertmanager",
            endpoint(parse_alertmanager, MAX_ALERTMANAGER_BYTES),
            methods=["POST"],
        ),
        Route("/webhooks/generic", endpoint(parse_generic, MAX_BODY_BYTES), methods=["POST"]),
    ]
