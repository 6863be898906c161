"""uvicorn on the caller's event loop, started and stopped by hand, without signal handlers.

Shared by opsgate's HTTP side and the Bot API sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Literal

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # signals belong to the program embedding us; it stops us itself


class BackgroundHTTPServer:
    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        lifespan: Literal["on", "off"] = "off",
        # auto: httptools, installed; or a protocol class (bot/http/ofrep_fast.py's)
        http: Literal["auto", "h11", "httptools"] | type[asyncio.Protocol] = "auto",
        keep_alive_s: int = 5,  # uvicorn's default: an idle connection is closed after it
        graceful_s: float = 5,  # at stop, how long requests in flight may take to finish
    ) -> None:
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._config = uvicorn.Config(
            app,
            log_config=None,  # leave the embedding program's logging alone
            # Levels are the embedding program's too (bot/logs.py: access lines and uvicorn's
            # start notes only at DEBUG; its formatter scrubs the Bot API token from URLs).
            log_level=None,
            access_log=True,
            lifespan=lifespan,
            http=http,
            ws="none",  # no websockets served: uvicorn need not load a websocket library
            timeout_graceful_shutdown=graceful_s,  # type: ignore[arg-type]
            timeout_keep_alive=keep_alive_s,
        )
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (known once started, also when port 0 was asked for)."""
        if self._port is None:
            raise RuntimeError("server is not listening")
        return self._port

    async def start(self) -> None:
        # Binding ourselves tells us the port before uvicorn starts, even for port 0.
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on such sockets, and without it
        # every response waits ~40 ms for a delayed ACK.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        self._port = int(sock.getsockname()[1])
        self._server = _EmbeddedServer(self._config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                sock.close()
                self._task.result()  # re-raises why it could not start
                raise RuntimeError("HTTP server stopped during start-up")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._server = self._task = None


class SwappableApp:
    """An ASGI app whose handler can be replaced while the server runs: a follower that comes
    to lead keeps its port open, and the next request meets the leader's app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
