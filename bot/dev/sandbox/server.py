"""The sandbox as an HTTP server: Bot API routes, control routes, webhook sender, runners.

``SandboxServer`` runs on the caller's event loop; ``SandboxThread`` runs one on its own loop in a
daemon thread, so session-scoped pytest fixtures can share it across per-test event loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from email import policy
from email.parser import BytesParser
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl

import httpx
from starlette.applications import Starlette
from starlette.datastructures import Secret
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route

from bot.dev.sandbox.control import control_routes
from bot.dev.sandbox.methods import METHODS
from bot.dev.sandbox.rules import ApiError, Params, Upload, bad_request
from bot.dev.sandbox.state import SandboxState
from bot.http.server import BackgroundHTTPServer

# What nginx in front of the Bot API answers when the backend is down; PTB: NetworkError.
BAD_GATEWAY = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
RETRY_FIRST, RETRY_MAX = 0.05, 1.0


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], dict[str, Upload]]:
    """multipart/form-data via the stdlib (python-multipart is not a dependency)."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    values: dict[str, Any] = {}
    uploads: dict[str, Upload] = {}
    for part in message.iter_parts() if message.is_multipart() else []:
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if not isinstance(name, str):
            continue
        filename = part.get_filename()
        if filename is None:
            values[name] = data.decode()
        else:
            uploads[name] = Upload(filename, part.get_content_type(), data)
    return values, uploads


async def read_params(request: Request) -> Params:
    """Parameters from the query string plus a form, multipart or JSON body."""
    values: dict[str, Any] = dict(request.query_params)
    content_type = request.headers.get("content-type", "")
    body = await request.body()
    uploads: dict[str, Upload] = {}
    if content_type.startswith("multipart/form-data"):
        fields, uploads = parse_multipart(content_type, body)
        values |= fields
    elif content_type.startswith("application/json") and body:
        try:
            decoded = json.loads(body)
        except ValueError:
            raise bad_request("can't parse JSON encoded request parameters") from None
        values |= decoded if isinstance(decoded, dict) else {}
    elif body:
        values |= dict(parse_qsl(body.decode(), keep_blank_values=True))
    return Params(values, uploads)


def bot_endpoint(state: SandboxState, token: Secret) -> Callable[[Request], Awaitable[Response]]:
    async def bot_api(request: Request) -> Response:
        if state.outage:
            return HTMLResponse(BAD_GATEWAY, status_code=502)
        sent = request.path_params["token"].encode()
        if not hmac.compare_digest(sent, str(token).encode()):  # bytes: str must be ASCII
            return JSONResponse(ApiError(401, "Unauthorized").body(), status_code=401)
        method = request.path_params["method"].lower()
        if state.slow_s and method != "getupdates":
            await asyncio.sleep(state.slow_s)
        handler = METHODS.get(method)
        if handler is None:
            return JSONResponse(ApiError(404, "Not Found").body(), status_code=404)
        fault = state.faults.draw(method)
        if fault == "5xx":
            return HTMLResponse(BAD_GATEWAY, status_code=502)
        if fault == "429":
            wait = state.faults.retry_after
            error = ApiError(429, f"Too Many Requests: retry after {wait}", {"retry_after": wait})
            return JSONResponse(error.body(), status_code=429)
        try:
            result = await handler(state, await read_params(request))
        except ApiError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        return JSONResponse({"ok": True, "result": result})

    return bot_api


async def deliver_webhooks(state: SandboxState, client: httpx.AsyncClient) -> None:
    """POST pending updates to the webhook one at a time, in order, retrying until accepted."""
    delay = RETRY_FIRST
    while not state.closed:
        hook = state.webhook
        if hook is None or not state.updates:
            await state.wait_wakeup()
            continue
        update = state.updates[0]
        secret = hook.secret_token
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret else {}
        try:
            response = await client.post(hook.url, json=update, headers=headers)
            error = None if response.is_success else f"Wrong response: {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"Connection failed: {type(exc).__name__}"
        if error is None:
            state.updates = [u for u in state.updates if u["update_id"] != update["update_id"]]
            delay = RETRY_FIRST
            continue
        hook.last_error_date, hook.last_error_message = int(time.time()), error
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX)


def create_app(state: SandboxState, token: str) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=5.0) as client:
            sender = asyncio.create_task(deliver_webhooks(state, client))
            yield
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    routes = [
        Route("/bot{token}/{method}", bot_endpoint(state, Secret(token)), methods=["GET", "POST"]),
        Mount("/control", routes=control_routes(state)),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


class SandboxServer:
    """The sandbox on the current event loop: ``await start()``, then ``await stop()``."""

    def __init__(self, token: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.state = SandboxState()
        self.app = create_app(self.state, token)
        # lifespan on: the webhook sender runs as a task of the app's lifespan.
        self._http = BackgroundHTTPServer(self.app, host, port, lifespan="on")

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/bot"

    @property
    def control_url(self) -> str:
        return f"http://{self.host}:{self.port}/control"

    async def start(self) -> None:
        await self._http.start()

    async def stop(self) -> None:
        self.state.close()  # release long polls so connections can finish
        await self._http.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class SandboxThread:
    """A SandboxServer on its own event loop in a daemon thread; use as a context manager."""

    def __init__(self, token: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = SandboxServer(token, host, port)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="bot-api-sandbox", daemon=True)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def control_url(self) -> str:
        return self.server.control_url

    @property
    def port(self) -> int:
        return self.server.port

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        try:
            await self.server.start()
        except Exception as exc:  # reported by start() in the caller's thread
            self._error = exc
            return
        finally:
            self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.server.stop()

    def start(self) -> Self:
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError("sandbox thread failed to start") from self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
