"""Blue-green on one host: two instances of a systemd template unit behind a proxy.

    ROOT/blue -> releases/v1     ROOT/blue.env   PORT=8101, OPSGATE_COLOR=blue
    ROOT/green -> releases/v2    ROOT/green.env  PORT=8102, OPSGATE_COLOR=green
    ROOT/live-color              "green": the colour the proxy sends traffic to
    upstream file                the proxy's upstream, rewritten whole, then `reload` runs

The live colour is what the host says (the file), never a memory of opsgate's: after a
crash, the next start reads the same truth.
"""

from __future__ import annotations

import httpx

from config.inventory import BlueGreenConfig, Service
from services.control.backends import SystemdBackend
from services.control.health import HttpCheck
from services.control.systemd import SystemdManager
from services.control.traffic import (
    Color,
    HaproxyWeights,
    NginxWeights,
    ProxyReloadFailed,
    WeightRouter,
    reload_proxy,
)
from services.hosts.primitives import HostCommandFailed, write_file
from services.hosts.runner import Host
from services.releases.layout import ReleaseLayout

__all__ = ["COLORS", "BlueGreen", "Color", "ProxyReloadFailed", "other"]

COLORS: tuple[Color, Color] = ("blue", "green")
LIVE_FILE = "live-color"


def other(color: Color | None) -> Color:
    """The idle colour; with nothing live yet, blue goes first."""
    return "green" if color == "blue" else "blue"


class BlueGreen:
    def __init__(
        self,
        name: str,
        service: Service,
        host: Host,
        http: httpx.AsyncClient,
        *,
        timeout_s: float = 60.0,
    ) -> None:
        deploy = service.deploy
        assert deploy is not None and deploy.blue_green is not None and service.unit is not None
        self.name = name
        self.service = service
        self.config: BlueGreenConfig = deploy.blue_green
        self.host = host
        self.layout = ReleaseLayout(host, deploy.root)
        self.systemd = SystemdManager(host, user_mode=service.user_manager)
        self._http = http
        self._timeout_s = timeout_s
        # A canary splits traffic by weights; plain blue-green rewrites one upstream line.
        self.router: WeightRouter | None = self._router()

    def _router(self) -> WeightRouter | None:
        canary = self.service.deploy.canary if self.service.deploy else None
        if canary is None:
            return None
        if canary.router == "haproxy":
            assert canary.haproxy is not None
            return HaproxyWeights(canary.haproxy)
        ports: dict[Color, int] = {c: self.port(c) for c in COLORS}
        return NginxWeights(
            self.name,
            self.host,
            upstream_file=self.config.upstream_file,
            reload=self.config.reload,
            canary=canary,
            ports=ports,
            timeout_s=self._timeout_s,
        )

    def all_to(self, color: Color) -> dict[Color, int]:
        return {color: 100, other(color): 0}

    def port(self, color: Color) -> int:
        return self.config.blue_port if color == "blue" else self.config.green_port

    def unit(self, color: Color) -> str:
        assert self.service.unit is not None
        return self.service.unit.replace("@.service", f"@{color}.service")

    def backend(self, color: Color) -> SystemdBackend:
        return SystemdBackend(self.systemd, self.unit(color))

    def health_check(self, color: Color) -> HttpCheck:
        """The colour's own port, with the service's expectations (status, JSON, latency)."""
        health = self.service.health
        url = self.config.health_url.replace("{port}", str(self.port(color)))
        if health is None:
            return HttpCheck(self._http, url)
        return HttpCheck(
            self._http,
            url,
            expect_status=health.expect_status,
            expect_json=dict(health.expect_json) or None,
            latency_limit_s=health.latency_limit_s,
            timeout_s=health.timeout_s,
        )

    async def live(self) -> Color | None:
        path = f"{self.layout.root}/{LIVE_FILE}"
        result = await self.host.run(["cat", "--", path], timeout=self._timeout_s)
        if result.ok:
            text = result.stdout.strip()
            return "blue" if text == "blue" else "green" if text == "green" else None
        if result.connection_failed or result.timed_out or await self.layout.has(LIVE_FILE):
            raise HostCommandFailed(result)
        return None  # no file yet: nothing deployed with blue-green so far

    async def version_of(self, color: Color) -> str | None:
        """The release the colour's link points at."""
        return await self.layout.read_link(color)

    async def prepare(self, color: Color, version: str) -> None:
        """Point the colour at `version` and write its env file; it runs it at its next start."""
        await self.layout.replace_link(color, version)
        env = f"PORT={self.port(color)}\nOPSGATE_COLOR={color}\nOPSGATE_RELEASE={version}\n"
        path = f"{self.layout.root}/{color}.env"
        await write_file(self.host, path, env.encode(), timeout=self._timeout_s)

    def upstream_text(self, color: Color) -> str:
        template = self.config.upstream_template
        return template.replace("{service}", self.name).replace("{port}", str(self.port(color)))

    async def points_at(self, color: Color) -> bool:
        """Whether the upstream file already says what send_traffic_to(color) would write."""
        if self.router is not None:
            return await self.router.shows(self.all_to(color))
        path = self.config.upstream_file
        result = await self.host.run(["cat", "--", path], timeout=self._timeout_s)
        return result.ok and result.stdout == self.upstream_text(color)

    async def send_traffic_to(self, color: Color) -> None:
        """Rewrite the upstream file whole, reload the proxy, then record the live colour.

        A reload that fails (a proxy refusing its config) leaves the proxy on the old upstream,
        so the live-colour file is written only after it succeeded."""
        if self.router is not None:
            await self.router.set_weights(self.all_to(color))
        else:
            text = self.upstream_text(color).encode()
            await write_file(self.host, self.config.upstream_file, text, timeout=self._timeout_s)
            await reload_proxy(self.host, self.config.reload, self._timeout_s)
        await self.mark_live(color)

    async def mark_live(self, color: Color) -> None:
        path = f"{self.layout.root}/{LIVE_FILE}"
        await write_file(self.host, path, f"{color}\n".encode(), timeout=self._timeout_s)
