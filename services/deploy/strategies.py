"""How a release starts taking traffic: restart in place, or blue-green behind a proxy.

Both make `current` point at the release that serves, so releases, rollback points and
recovery read one truth whatever the strategy.

    restart     current -> the release, then the unit restarts (systemd sends SIGTERM and
                waits TimeoutStopSec; supervisord waits stopwaitsecs), then verify.
    blue-green  the idle colour starts with the release and must be healthy on its own port
                before the proxy is repointed; the old colour drains, then stops. A failure
                before the repoint leaves traffic where it was.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from config.inventory import HealthConfig
from services.control.backends import ServiceBackend
from services.control.blue_green import BlueGreen, Color, ProxyReloadFailed, other
from services.control.controller import ServiceController
from services.control.health import wait_until_healthy
from services.deploy.errors import NotTheReleasesFault, StepFailed
from services.deploy.verify import restart
from services.progress import Progress
from services.releases.layout import ReleaseLayout


class SwitchStrategy(Protocol):
    async def backend(self) -> ServiceBackend:
        """The unit that serves now (what verify and watch look at)."""
        ...

    async def switch(self, version: str, progress: Progress, current: str | None = None) -> None:
        """Make `version` serve; `current` points at it afterwards. `current` (when given):
        what the link points at, as the caller read it under the deploy's lock."""
        ...

    async def switch_back(self, version: str, progress: Progress) -> None:
        """After a failed switch to another release: `version` serves again."""
        ...

    async def complete_switch(self, version: str, current: str | None, progress: Progress) -> None:
        """After opsgate died while switching to `version` (`current` as found): finish it."""
        ...


class RestartStrategy:
    def __init__(
        self, name: str, controller: ServiceController, layout: ReleaseLayout, host: str
    ) -> None:
        self._name = name
        self._controller = controller
        self._layout = layout
        self._host = host

    async def backend(self) -> ServiceBackend:
        return self._controller.backend(self._name, self._host)

    async def switch(self, version: str, progress: Progress, current: str | None = None) -> None:
        async with progress.step(f"switch to {version}"):
            await self._layout.switch(version, current)
        await restart(self._controller, self._name, progress, self._host)

    async def switch_back(self, version: str, progress: Progress) -> None:
        async with progress.step(f"roll back to {version}"):
            await self._layout.switch(version)
        await restart(self._controller, self._name, progress, self._host)

    async def complete_switch(self, version: str, current: str | None, progress: Progress) -> None:
        if current != version:
            async with progress.step(f"switch to {version}"):
                await self._layout.switch(version)
        await restart(self._controller, self._name, progress, self._host)


class BlueGreenStrategy:
    def __init__(self, colors: BlueGreen, *, start_timeout_s: float) -> None:
        self._colors = colors
        self._start_timeout_s = start_timeout_s
        health = colors.service.health or HealthConfig(url=None)
        self._consecutive, self._within_s = health.consecutive, health.within_s
        self._interval_s = health.interval_s

    async def backend(self) -> ServiceBackend:
        return self._colors.backend(await self._colors.live() or "blue")

    async def switch(self, version: str, progress: Progress, current: str | None = None) -> None:
        colors = self._colors  # `current` is not needed: the live colour says what serves
        live = await colors.live()
        idle = other(live)
        await self._start(idle, version, progress)
        async with progress.step(f"traffic to {idle}") as step:
            try:
                await colors.send_traffic_to(idle)
            except ProxyReloadFailed as exc:
                raise NotTheReleasesFault(
                    f"Traffic stayed on {live or 'nothing'}: {exc}. {idle} ran {version}"
                    " healthy; fix the proxy and deploy again."
                ) from exc
            await colors.layout.switch(version)
            step.detail = f"{colors.config.upstream_file} → port {colors.port(idle)}, reloaded"
        if live is not None:
            await self._drain_and_stop(live, progress)

    async def switch_back(self, version: str, progress: Progress) -> None:
        colors = self._colors
        live = await colors.live()
        if live is not None and await colors.version_of(live) == version:
            # The failure came before the proxy moved: the old colour still serves.
            async with progress.step(f"traffic stays on {live} ({version})") as step:
                idle = other(live)
                await colors.systemd.stop(colors.unit(idle))
                step.detail = f"stopped {colors.unit(idle)}"
                # The proxy is left alone unless a refused reload left the upstream file
                # naming the idle colour: a reload closes idle keep-alive connections, so a
                # deploy that changed nothing must not cost clients a request.
                if not await colors.points_at(live):
                    try:
                        await colors.send_traffic_to(live)
                    except ProxyReloadFailed as exc:  # then the proxy never took the new one
                        step.detail += f"; {exc}"
                if await colors.layout.current() != version:
                    await colors.layout.switch(version)
            return
        await self.switch(version, progress)

    async def complete_switch(self, version: str, current: str | None, progress: Progress) -> None:
        colors = self._colors
        live = await colors.live()
        if current == version and live is not None and await colors.version_of(live) == version:
            # The proxy had moved: only the old colour may still be running.
            async with progress.step(f"stop {colors.unit(other(live))}"):
                await colors.systemd.stop(colors.unit(other(live)))
            return
        await self.switch(version, progress)

    async def _start(self, color: Color, version: str, progress: Progress) -> None:
        colors = self._colors
        unit = colors.unit(color)
        async with progress.step(f"start {unit} with {version}") as step:
            await colors.prepare(color, version)
            await colors.systemd.restart(unit)
            status = await colors.systemd.wait_active(unit, self._start_timeout_s)
            step.detail = f"pid {status.main_pid or '-'}, port {colors.port(color)}"
        check = colors.health_check(color)
        async with progress.step(f"{color} healthy: {self._consecutive} in a row") as step:
            wait = await wait_until_healthy(
                check, self._consecutive, self._within_s, self._interval_s
            )
            last = wait.last.reason if wait.last else "no answer"
            step.detail = f"{wait.checks} check(s), last: {last}"
            if not wait.ok:
                await colors.systemd.stop(unit)  # never leave a broken colour running
                raise StepFailed(
                    f"{colors.name} {version} on {color} was not healthy {self._consecutive}"
                    f" times in a row within {self._within_s:g} s (last: {last}); traffic"
                    " never moved."
                )

    async def _drain_and_stop(self, color: Color, progress: Progress) -> None:
        colors = self._colors
        async with progress.step(f"drain {colors.config.drain_s:g} s, stop {colors.unit(color)}"):
            # The proxy's old workers finish the requests they hold on the old colour.
            await asyncio.sleep(colors.config.drain_s)
            await colors.systemd.stop(colors.unit(color))
