"""Drain: a host stops getting requests before its restart and gets them again once healthy.

With an nginx upstream file, opsgate writes every host of the environment as a server line
and marks the drained ones `down`, then reloads the proxy (nginx lets in-flight requests on
old workers finish); `settle_s` gives them time before the restart. With commands, the
team's own `out` and `back_in` run on the host itself. A host is put back only after it was
verified healthy, so a failed host stays out of the pool until it is rolled back.
"""

from __future__ import annotations

import asyncio

from config.inventory import Drain
from services.control.units import tail_lines
from services.deploy.errors import NotTheReleasesFault
from services.hosts.primitives import write_file
from services.hosts.registry import Hosts

TIMEOUT_S = 30.0


class Drainer:
    def __init__(
        self,
        service: str,
        config: Drain,
        hosts: Hosts,
        addresses: dict[str, str],  # every host of the environment -> its service address
    ) -> None:
        self._service = service
        self._config = config
        self._hosts = hosts
        self._addresses = addresses
        self._out: set[str] = set()
        self._lock = asyncio.Lock()  # hosts of one batch drain at once: one file, one writer

    def upstream_text(self) -> str:
        config = self._config
        servers = "".join(
            f"    server {address}:{config.port}{' down' if host in self._out else ''};\n"
            for host, address in self._addresses.items()
        )
        return config.upstream_template.replace("{service}", self._service).replace(
            "{servers}", servers
        )

    async def take_out(self, host: str) -> None:
        if self._config.upstream_file is not None:
            async with self._lock:
                self._out.add(host)
                await self._write_and_reload()
        else:
            await self._command(self._config.out, host, "out")
        if self._config.settle_s > 0:
            await asyncio.sleep(self._config.settle_s)

    async def put_back(self, host: str) -> None:
        if self._config.upstream_file is not None:
            async with self._lock:
                self._out.discard(host)
                await self._write_and_reload()
        else:
            await self._command(self._config.back_in, host, "back_in")

    async def _write_and_reload(self) -> None:
        config = self._config
        assert config.upstream_file is not None
        proxy = self._hosts.get(config.proxy_host)
        text = self.upstream_text().encode()
        await write_file(proxy, config.upstream_file, text, timeout=TIMEOUT_S)
        result = await proxy.run(config.reload, timeout=TIMEOUT_S)
        if not result.ok:
            tail = tail_lines(f"{result.stdout}\n{result.stderr}".strip(), 3)
            raise NotTheReleasesFault(f"the proxy did not reload ({result.summary}): {tail}")

    async def _command(self, argv: list[str] | None, host: str, what: str) -> None:
        if argv is None:
            return
        env = {"OPSGATE_HOST": host, "OPSGATE_ADDRESS": self._addresses.get(host, "")}
        env["OPSGATE_SERVICE"] = self._service
        result = await self._hosts.get(host).run(argv, timeout=TIMEOUT_S, env=env)
        if not result.ok:
            tail = tail_lines(f"{result.stdout}\n{result.stderr}".strip(), 3)
            raise NotTheReleasesFault(f"drain {what} failed on {host} ({result.summary}): {tail}")
