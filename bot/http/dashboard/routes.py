"""The dashboard's HTTP side under /app/: the page, sign-in, the state, and the actions.

    GET  /app/                       the page (static; its script reads Telegram's initData)
    GET  /app/static/{name}          app.js, app.css
    POST /app/auth/telegram          {"init_data"} -> the session cookie and the CSRF token
    GET  /app/login?token=           a one-time link from /dashboard -> the cookie, then /app/
    POST /app/auth/logout
    GET  /app/api/session            who is signed in, and the CSRF token
    GET  /app/api/state              the snapshot (ETag; 304 when unchanged)
    POST /app/api/signoffs/items/{id}        {"ticked"}
    POST /app/api/signoffs/roles/{id}/approve
    POST /app/api/signoffs/roles/{id}/reject {"reason"}
    POST /app/api/alerts/{id}/ack
    POST /app/api/deployments/{id}/abort

Writes need the session and the X-CSRF-Token header; each goes through the same services as
the chat's button, with the same checks and audit, and the chat's message is edited as if the
button had been pressed there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bot.http.api.common import ApiRefused, body_of
from bot.http.dashboard.auth import (
    COOKIE,
    InitDataRefused,
    RateLimit,
    Session,
    SessionSigner,
    validate_init_data,
)
from config.integrations import Dashboard
from config.permissions import Action
from handlers.alerts_chat import redraw_group
from handlers.approvals_chat import refresh_signoff, signoff_changed
from handlers.context import OpsApplication
from services.approvals.model import ApprovalError, RoleMissing
from services.container import Services
from services.dashboard.snapshot import DashboardView, HistoryFilter
from services.deploy.model import BEFORE_SWITCH, DeploymentError, UnknownDeployment

log = logging.getLogger(__name__)

STATIC = {"app.js": "text/javascript", "app.css": "text/css"}
DEFAULTS = Dashboard(url="https://localhost/app/")  # limits when [dashboard] is not set
FRAME_ANCESTORS = "'self' https://web.telegram.org https://*.telegram.org"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    f" connect-src 'self'; frame-ancestors {FRAME_ANCESTORS}; base-uri 'none';"
    " form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
Endpoint = Callable[[Request], Awaitable[Response]]


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _asset(name: str) -> bytes:
    return files("bot.http.dashboard").joinpath("static", name).read_bytes()


def dashboard_routes(
    application: OpsApplication, services: Services, bot_token: str
) -> list[BaseRoute]:
    signer = SessionSigner(bot_token)
    limiter = RateLimit()
    view = DashboardView(services)
    page, assets = _asset("index.html"), {name: _asset(name) for name in STATIC}

    def settings() -> Dashboard:
        return services.ops.dashboard or DEFAULTS

    def secured(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response

    def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        response = JSONResponse({"error": message}, status_code=status, headers=headers)
        response.headers["Cache-Control"] = "no-store"
        return secured(response)

    def with_cookie(request: Request, response: Response, cookie: str) -> Response:
        https = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=settings().session_ttl_s,
            path="/app/",
            httponly=True,
            secure=https,
            # Telegram Web opens the app in a frame: only SameSite=None reaches it, and
            # browsers take that only over https. Writes need the CSRF header either way.
            samesite="none" if https else "lax",
        )
        return response

    def session_of(request: Request) -> Session:
        session = signer.read(request.cookies.get(COOKIE))
        if session is None:
            raise Refused(401, "not signed in: open the dashboard from Telegram")
        if session.person not in services.ops.people:
            raise Refused(403, "you are not in this team's [people] any more")
        return session

    def who(session: Session) -> dict[str, Any]:
        ops = services.ops
        return {
            "person": session.person,
            "name": ops.name_of(session.person) or str(session.person),
            "roles": sorted(ops.roles_of(session.person)),
            "csrf": signer.csrf(session),
        }

    def guarded(
        handler: Callable[[Request, Session], Awaitable[Response]], write: bool
    ) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                session = session_of(request)
                if write and not signer.csrf_ok(session, request.headers.get("x-csrf-token")):
                    raise Refused(403, "missing or wrong CSRF token")
                response = await handler(request, session)
            except (Refused, ApiRefused) as exc:
                return error(exc.status, str(exc))
            except RoleMissing as exc:
                return error(403, str(exc))
            except UnknownDeployment as exc:
                return error(404, str(exc))
            except (ApprovalError, DeploymentError) as exc:
                return error(409 if write else 404, str(exc))
            response.headers["Cache-Control"] = "no-store"
            return secured(response)

        return endpoint

    def limited(request: Request) -> Response | None:
        client = request.client.host if request.client else "?"
        wait = limiter.retry_after(client)
        if wait:
            return error(
                429, "too many sign-in attempts: wait a minute", {"Retry-After": str(wait)}
            )
        return None

    async def index(request: Request) -> Response:
        return secured(Response(page, media_type="text/html; charset=utf-8"))

    async def to_index(request: Request) -> Response:
        return RedirectResponse("/app/", status_code=308)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in assets:
            return error(404, "no such file")
        response = Response(assets[name], media_type=STATIC[name])
        response.headers["Cache-Control"] = "no-cache"
        return secured(response)

    async def sign_in_telegram(request: Request) -> Response:
        if (refused := limited(request)) is not None:
            return refused
        try:
            body = await body_of(request)
            raw = body.get("init_data")
            if not isinstance(raw, str):
                raise Refused(401, "init_data: Telegram's initData string")
            user = validate_init_data(raw, bot_token, settings().auth_max_age_s, time.time())
        except (Refused, ApiRefused) as exc:
            return error(exc.status, str(exc))
        except InitDataRefused as exc:
            log.info("dashboard sign-in refused: %s", exc)
            return error(401, str(exc))
        if user.id not in services.ops.people:
            log.info("dashboard sign-in refused: user %s is not in [people]", user.id)
            return error(403, "you are not in this team's [people]: ask an admin")
        cookie, session = signer.issue(user.id, settings().session_ttl_s)
        await services.audit.record("dashboard.signed_in", str(user.id), "", {"by": "telegram"})
        response = JSONResponse(who(session))
        response.headers["Cache-Control"] = "no-store"
        return secured(with_cookie(request, response, cookie))

    async def sign_in_link(request: Request) -> Response:
        if (refused := limited(request)) is not None:
            return refused
        person = await services.login_links.redeem(request.query_params.get("token", ""))
        if person is None or person not in services.ops.people:
            text = (
                "<!doctype html><title>opsgate</title><p>This login link was used already or"
                " has expired. Send /dashboard to the bot for a new one.</p>"
            )
            return secured(Response(text, status_code=401, media_type="text/html"))
        response = RedirectResponse("/app/", status_code=303)
        cookie, _ = signer.issue(person, settings().session_ttl_s)
        return secured(with_cookie(request, response, cookie))

    async def sign_out(request: Request, session: Session) -> Response:
        response = JSONResponse({"signed_out": True})
        response.delete_cookie(COOKIE, path="/app/")
        return response

    async def current(request: Request, session: Session) -> Response:
        return JSONResponse(who(session))

    async def state(request: Request, session: Session) -> Response:
        params = request.query_params
        limit = params.get("limit", "20")
        if not limit.isdigit() or not 1 <= int(limit) <= 200:
            raise Refused(422, "limit: a number from 1 to 200")
        where = HistoryFilter(
            params.get("service") or None,
            params.get("environment") or None,
            params.get("state") or None,
            int(limit),
        )
        body = json.dumps(await view.snapshot(session.person, where), separators=(",", ":"))
        etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return Response(body, media_type="application/json", headers={"ETag": etag})

    async def tick(request: Request, session: Session) -> Response:
        body = await body_of(request)
        ticked = body.get("ticked")
        if not isinstance(ticked, bool):
            raise Refused(422, "ticked: true or false")
        item = _id(request)
        signoff, changed = await services.approvals.tick(item, str(session.person), ticked)
        if changed:
            await signoff_changed(application.bot, services, signoff)
        return JSONResponse(
            {"message": ("Ticked." if ticked else "Unticked.") if changed else "Nothing to change."}
        )

    async def approve(request: Request, session: Session) -> Response:
        signoff, changed = await services.approvals.approve(_id(request), str(session.person))
        if not changed:
            return JSONResponse({"message": "Nothing to change."})
        await signoff_changed(application.bot, services, signoff)
        return JSONResponse(
            {"message": "Approved." if signoff.is_open else "Approved: signed off."}
        )

    async def reject(request: Request, session: Session) -> Response:
        body = await body_of(request)
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise Refused(422, "reason: a few words on why")
        signoff = await services.approvals.reject(_id(request), str(session.person), reason)
        await refresh_signoff(application.bot, services, signoff)
        return JSONResponse({"message": f"Rejected; deploy #{signoff.deployment_id} is cancelled."})

    async def ack(request: Request, session: Session) -> Response:
        if not services.ops.may(session.person, Action.ACK):
            raise Refused(
                403, f"This needs the role {services.ops.permissions.role_for(Action.ACK)}."
            )
        group = await services.alerts.ack(_id(request), str(session.person))
        if group is None:
            raise Refused(409, "This alert is no longer firing.")
        await redraw_group(application.bot, services, group.id)
        return JSONResponse({"message": "You are on it: escalation stops."})

    async def abort(request: Request, session: Session) -> Response:
        if not services.ops.may(session.person, Action.CONTROL):
            role = services.ops.permissions.role_for(Action.CONTROL)
            raise Refused(403, f"This needs the role {role}.")
        deployment = await services.deployments.get(_id(request))
        actor = str(session.person)
        if deployment.state in BEFORE_SWITCH:
            stopped = await services.front_door.cancel(deployment.id, actor, "aborted")
        else:
            stopped = await services.pipeline.abort(deployment.id, actor)
        if stopped.state.value == "cancelled":
            return JSONResponse({"message": f"#{stopped.id} cancelled; nothing was switched."})
        return JSONResponse({"message": f"Aborting #{stopped.id}: rolling back…"})

    return [
        Route("/app", to_index, methods=["GET"]),
        Route("/app/", index, methods=["GET"]),
        Route("/app/static/{name}", static, methods=["GET"]),
        Route("/app/auth/telegram", sign_in_telegram, methods=["POST"]),
        Route("/app/login", sign_in_link, methods=["GET"]),
        Route("/app/auth/logout", guarded(sign_out, write=True), methods=["POST"]),
        Route("/app/api/session", guarded(current, write=False), methods=["GET"]),
        Route("/app/api/state", guarded(state, write=False), methods=["GET"]),
        Route("/app/api/signoffs/items/{id}", guarded(tick, write=True), methods=["POST"]),
        Route(
            "/app/api/signoffs/roles/{id}/approve", guarded(approve, write=True), methods=["POST"]
        ),
        Route("/app/api/signoffs/roles/{id}/reject", guarded(reject, write=True), methods=["POST"]),
        Route("/app/api/alerts/{id}/ack", guarded(ack, write=True), methods=["POST"]),
        Route("/app/api/deployments/{id}/abort", guarded(abort, write=True), methods=["POST"]),
    ]


def _id(request: Request) -> int:
    text: str = request.path_params["id"]
    if not text.isdigit() or len(text) > 12:
        raise Refused(404, "no such item")
    return int(text)
