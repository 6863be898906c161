"""An `opsgate run` process among several on one PostgreSQL, as the failover and follower
tests watch it: its name, its /health, its role, its log."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bot.dev.harness.opsgate_process import OpsgateProcess

ROLE_TIMEOUT_S = 30  # a bound for a hung test, not the measure (bench/failover.py is)


@dataclass
class Member:
    process: OpsgateProcess
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        """host:pid, as it names itself in /health, /status and the events."""
        assert self.process.process is not None
        return f"{socket.gethostname()}:{self.process.process.pid}"

    async def health(self) -> tuple[int, dict[str, Any]]:
        async with httpx.AsyncClient(timeout=2) as http:
            answer = await http.get(f"{self.url}/health")
        return answer.status_code, answer.json()

    async def wait_role(self, role: str, timeout: float = ROLE_TIMEOUT_S) -> dict[str, Any]:
        """Until /health answers 200 as the `role` (leader or follower); fails at once if
        the process died."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                code, body = await self.health()
                if code == 200 and body.get("role") == role:
                    return body
            running = self.process.process
            assert running is not None and running.returncode is None, self.log()[-2000:]
            assert asyncio.get_running_loop().time() < deadline, f"not the {role} in time"
            await asyncio.sleep(0.05)

    def log(self) -> str:
        return (self.directory / "opsgate.log").read_text(errors="replace")
