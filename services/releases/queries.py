"""Questions about a service's releases that the chat asks: what is kept, where to roll back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from config.opsfile import OpsConfig
from services.hosts.primitives import HostCommandFailed
from services.hosts.registry import Hosts
from services.releases.build import ReleaseError, validate_version
from services.releases.layout import ROLLBACK_MARK, ReleaseInfo, ReleaseLayout


class NoRollbackTarget(ReleaseError, LookupError):
    """There is no release to roll back to, or the one asked for cannot be used."""

    kind = "invalid"


class ReleaseQueries:
    def __init__(self, ops: Callable[[], OpsConfig], hosts: Callable[[], Hosts]) -> None:
        self._ops = ops
        self._hosts = hosts

    def layouts(self, name: str, environment: str | None = None) -> dict[str, ReleaseLayout]:
        """Host -> the service's releases there, for every host of `environment` (default:
        the service's first)."""
        service = self._ops().services[name]
        if service.deploy is None:
            raise NoRollbackTarget(f"{name} has no deploy section in the ops file")
        root = service.deploy.root
        return {h: ReleaseLayout(self._hosts().get(h), root) for h in service.hosts_in(environment)}

    def layout(self, name: str, environment: str | None = None) -> ReleaseLayout:
        """The releases on the first host: a fleet's hosts hold the same ones."""
        return next(iter(self.layouts(name, environment).values()))

    async def mark_bad(
        self, name: str, version: str, reason: str, environment: str | None = None
    ) -> None:
        version = validate_version(version)
        layouts = [x for x in self.layouts(name, environment).values() if await x.exists(version)]
        if not layouts:
            raise NoRollbackTarget(f"{name} has no release {version} on its hosts")
        await asyncio.gather(*(layout.mark_bad(version, reason) for layout in layouts))

    async def clear_bad(self, name: str, version: str, environment: str | None = None) -> str:
        """Lift a bad mark (by hand, after looking) on every host; returns the reason."""
        version = validate_version(version)
        reasons = {}
        for layout in self.layouts(name, environment).values():
            if await layout.exists(version) and (why := await layout.bad_reason(version)):
                reasons[layout] = why
        if not reasons:
            raise NoRollbackTarget(f"{name} {version} is not marked bad")
        await asyncio.gather(*(layout.clear_bad(version) for layout in reasons))
        return next(iter(reasons.values()))

    async def releases(self, name: str, environment: str | None = None) -> list[ReleaseInfo]:
        return await self.layout(name, environment).releases()

    async def current_by_host(
        self, name: str, environment: str | None = None
    ) -> dict[str, str | None]:
        """Host -> the release `current` points at there (None: nothing, or unreachable)."""
        layouts = self.layouts(name, environment)

        async def current(layout: ReleaseLayout) -> str | None:
            try:
                return await layout.current()
            except (HostCommandFailed, ReleaseError):
                return None

        found = await asyncio.gather(*(current(x) for x in layouts.values()))
        return dict(zip(layouts, found, strict=True))

    async def rollback_target(
        self, name: str, version: str | None, environment: str | None = None
    ) -> str:
        """The asked-for release if it exists and is not bad; else the newest good earlier one."""
        layout = self.layout(name, environment)
        if version is None:
            target = await layout.previous_good()
            if target is None:
                raise NoRollbackTarget(f"{name} has no earlier good release to roll back to")
            return target
        version = validate_version(version)
        if not await layout.exists(version):
            raise NoRollbackTarget(f"{name} has no release {version} on its host")
        reason = await layout.bad_reason(version)
        # Asked for by name, a release marked bad only by a failed rollback may be tried
        # again: it ran well before, and the service must never be left without a way back.
        if reason is not None and not reason.startswith(ROLLBACK_MARK):
            raise NoRollbackTarget(
                f"{name} {version} is marked bad ({reason}); pick another, or clear the mark"
                f" with /unbad {name} {version}"
            )
        if version == await layout.current():
            raise NoRollbackTarget(f"{name} {version} is already the current release")
        return version

    async def drill_pair(self, name: str, environment: str | None = None) -> tuple[str, str]:
        """(what runs now, the release a rollback would land on) for a drill."""
        layout = self.layout(name, environment)
        current = await layout.current()
        if current is None:
            raise NoRollbackTarget(f"{name} has no current release to drill with")
        target = await layout.previous_good()
        if target is None:
            raise NoRollbackTarget(f"{name} has no earlier good release to drill with")
        return current, target
