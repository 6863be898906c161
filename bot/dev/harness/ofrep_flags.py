"""Support for the OFREP tests and bench: a real FlagSource over a dict of Flags, evaluated by
services/flags/engine.py, an ASGI recorder of request targets, and a raw-socket POST."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from services.flags import engine
from services.flags.types import Evaluation, EvaluationContext, Flag, Targeting

FLAGS = (
    Flag("checkout", enabled=True, rollout_percent=100.0),
    Flag("dark-mode", enabled=False, rollout_percent=100.0),
    Flag("beta", enabled=True, targeting=Targeting(user_ids=frozenset({"alice"}))),
    Flag("half", enabled=True, rollout_percent=50.0),  # buckets: alice 140 (on), carol 844
)


class DictSource:
    """Flags in a dict, evaluated by the real engine. `put` changes a flag, and so the etag;
    `seen` records every context the source was asked to evaluate with."""

    def __init__(self, flags: Iterable[Flag]) -> None:
        self.flags = {flag.key: flag for flag in flags}
        self.version = 0
        self.seen: list[EvaluationContext] = []

    def put(self, flag: Flag) -> None:
        self.flags[flag.key] = flag
        self.version += 1

    def etag(self) -> str:
        return f"v{self.version}"

    def evaluate(self, key: str, ctx: EvaluationContext) -> Evaluation:
        self.seen.append(ctx)
        return engine.evaluate(self.flags.get(key), key, ctx, {})

    def evaluate_all(self, ctx: EvaluationContext) -> list[Evaluation]:
        self.seen.append(ctx)
        return engine.evaluate_all(self.flags.values(), ctx, {})


class Recorder:
    """ASGI wrapper keeping each request target as it arrived: what a client really sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.targets: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = scope["query_string"].decode()
            self.targets.append(scope["raw_path"].decode() + (f"?{query}" if query else ""))
        await self.app(scope, receive, send)


async def raw_post(port: int, target: str, body: bytes, head: str) -> tuple[int, bytes]:
    """POST exact bytes, no client cleaning the path up; the answer's status and body.

    `head` ends the header block; the server must close the connection (say or earn it).
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST {target} HTTP/1.1\r\nHost: t\r\n{head}".encode() + body)
    try:
        answer = await reader.read()
    finally:
        writer.close()
        # A reset here means the server stopped reading what we sent, as it should.
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]
