"""Who gets which share of the requests: the two slots' weights at the proxy.

    NginxWeights    rewrites the upstream file with both servers and their weights, then
                    reloads. A reload makes the old workers close idle keep-alive connections:
                    a client that reuses one without checking loses that request.
    HaproxyWeights  `set server BACKEND/SERVER weight N` on HAProxy's admin socket: the
                    weights change inside the running process, no connection is closed.

Weights are percentages of the two slots (blue + green = 100). A shadow mirror (nginx only)
is a separate file included in the server block, written at the start and end of the phase.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Literal, Protocol

from config.canary import CanaryConfig, HaproxyRouter, Shadow
from services.control.units import tail_lines
from services.errors import OpsgateError
from services.hosts.primitives import write_file
from services.hosts.runner import Host

Color = Literal["blue", "green"]
Weights = Mapping[Color, int]
SHADOW_LOCATION = "/_opsgate_shadow"


class ProxyReloadFailed(OpsgateError):
    """The proxy refused the change: it still sends traffic where it did."""


class WeightRouter(Protocol):
    async def set_weights(self, weights: Weights) -> None:
        """Make the proxy split requests by `weights` (percent per colour)."""
        ...

    async def shows(self, weights: Weights) -> bool:
        """Whether the proxy already splits requests this way."""
        ...

    def describe(self, weights: Weights) -> str:
        """For the card: how the change was made."""
        ...


def split(canary: Color, weight: int) -> dict[Color, int]:
    stable: Color = "green" if canary == "blue" else "blue"
    return {canary: weight, stable: 100 - weight}


class NginxWeights:
    def __init__(
        self,
        service: str,
        host: Host,
        *,
        upstream_file: str,
        reload: list[str],
        canary: CanaryConfig,
        ports: Mapping[Color, int],
        timeout_s: float = 60.0,
    ) -> None:
        self._service = service
        self._host = host
        self._file = upstream_file
        self._reload = reload
        self._config = canary
        self._ports = ports
        self._timeout_s = timeout_s

    def text(self, weights: Weights) -> str:
        # nginx has no weight 0: a slot without a share is left out of the upstream.
        servers = "".join(
            self._config.server_template.replace("{port}", str(self._ports[color])).replace(
                "{weight}", str(weight)
            )
            for color, weight in sorted(weights.items())
            if weight > 0
        )
        template = self._config.upstream_template.replace("{service}", self._service)
        return template.replace("{servers}", servers)

    async def set_weights(self, weights: Weights) -> None:
        await write_file(
            self._host, self._file, self.text(weights).encode(), timeout=self._timeout_s
        )
        await reload_proxy(self._host, self._reload, self._timeout_s)

    async def shows(self, weights: Weights) -> bool:
        result = await self._host.run(["cat", "--", self._file], timeout=self._timeout_s)
        return result.ok and result.stdout == self.text(weights)

    def describe(self, weights: Weights) -> str:
        return f"{self._file} rewritten, nginx reloaded"


async def reload_proxy(host: Host, argv: list[str], timeout_s: float) -> None:
    result = await host.run(argv, timeout=timeout_s)
    if not result.ok:
        tail = tail_lines(f"{result.stdout}\n{result.stderr}".strip(), 3)
        raise ProxyReloadFailed(f"the proxy did not reload ({result.summary}): {tail}")


class HaproxyWeights:
    def __init__(self, config: HaproxyRouter, *, timeout_s: float = 5.0) -> None:
        self._config = config
        self._timeout_s = timeout_s

    def _server(self, color: Color) -> str:
        name = self._config.blue if color == "blue" else self._config.green
        return f"{self._config.backend}/{name}"

    async def command(self, line: str) -> str:
        """One line on the admin socket; HAProxy answers and closes the connection."""
        admin = self._config.admin
        try:
            async with asyncio.timeout(self._timeout_s):
                if admin.startswith("/"):
                    reader, writer = await asyncio.open_unix_connection(admin)
                else:
                    address, port = admin.rsplit(":", 1)
                    reader, writer = await asyncio.open_connection(address, int(port))
                try:
                    writer.write(line.encode() + b"\n")
                    await writer.drain()
                    answer = await reader.read()
                finally:
                    writer.close()
        except (OSError, TimeoutError) as exc:
            raise ProxyReloadFailed(
                f"HAProxy's admin socket {admin} did not answer: {exc}"
            ) from exc
        return answer.decode(errors="replace").strip()

    async def set_weights(self, weights: Weights) -> None:
        # The side that gains goes first, so the two never add up to nothing.
        order = sorted(weights.items(), key=lambda item: -item[1])
        line = "; ".join(f"set server {self._server(c)} weight {w}" for c, w in order)
        answer = await self.command(line)
        if answer:  # success is silent
            raise ProxyReloadFailed(f"HAProxy refused the weights: {tail_lines(answer, 3)}")

    async def weights(self) -> dict[Color, int]:
        colors: tuple[Color, Color] = ("blue", "green")
        line = "; ".join(f"get weight {self._server(c)}" for c in colors)
        answer = await self.command(line)
        # One answer per command, each followed by an empty line.
        answers = [text for text in answer.splitlines() if text.strip()]
        found: dict[Color, int] = {}
        for color, text in zip(colors, answers, strict=False):
            first = text.split(" ", 1)[0]
            if not first.isdigit():
                raise ProxyReloadFailed(f"HAProxy: {tail_lines(answer, 3)}")
            found[color] = int(first)
        if len(found) != len(colors):
            raise ProxyReloadFailed(f"HAProxy: {tail_lines(answer, 3)}")
        return found

    async def shows(self, weights: Weights) -> bool:
        current = await self.weights()
        return all(current.get(color) == weight for color, weight in weights.items())

    def describe(self, weights: Weights) -> str:
        return f"HAProxy {self._config.backend} weights set live (no reload)"


def mirror_text(shadow: Shadow, port: int) -> str:
    """The server-level include that copies every request to the shadow; its answers are
    dropped. Short timeouts: a slow shadow must not hold up the client's next request."""
    timeout = f"{shadow.timeout_s:g}s"
    return (
        f"mirror {SHADOW_LOCATION};\n"
        f"location = {SHADOW_LOCATION} {{\n"
        "    internal;\n"
        "    log_subrequest on;\n"
        f"    proxy_connect_timeout {timeout};\n"
        f"    proxy_read_timeout {timeout};\n"
        f"    proxy_send_timeout {timeout};\n"
        f"    proxy_pass http://{shadow.address}:{port}$request_uri;\n"
        "}\n"
    )


async def set_mirror(
    host: Host, shadow: Shadow, reload: list[str], port: int | None, timeout_s: float = 60.0
) -> None:
    """Mirror to `port`, or stop mirroring (None): rewrite the include, reload nginx."""
    text = mirror_text(shadow, port) if port is not None else "# no shadow (opsgate)\n"
    await write_file(host, shadow.mirror_file, text.encode(), timeout=timeout_s)
    await reload_proxy(host, reload, timeout_s)
