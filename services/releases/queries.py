"""Questions about a service's releases that the chat asks: what is kept, where to roll back."""

from __future__ import annotations

from collections.abc import Callable

from config.opsfile import OpsConfig
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

    def layout(self, name: str) -> ReleaseLayout:
        service = self._ops().services[name]
        if service.deploy is None:
            raise NoRollbackTarget(f"{name} has no deploy section in the ops file")
        return ReleaseLayout(self._hosts().get(service.host), service.deploy.root)

    async def mark_bad(self, name: str, version: str, reason: str) -> None:
        layout = self.layout(name)
        version = validate_version(version)
        if not await layout.exists(version):
            raise NoRollbackTarget(f"{name} has no release {version} on its host")
        await layout.mark_bad(version, reason)

    async def clear_bad(self, name: str, version: str) -> str:
        """Lift a bad mark (by hand, after looking); returns the reason it had."""
        layout = self.layout(name)
        version = validate_version(version)
        if not await layout.exists(version):
            raise NoRollbackTarget(f"{name} has no release {version} on its host")
        reason = await layout.bad_reason(version)
        if reason is None:
            raise NoRollbackTarget(f"{name} {version} is not marked bad")
        await layout.clear_bad(version)
        return reason

    async def releases(self, name: str) -> list[ReleaseInfo]:
        return await self.layout(name).releases()

    async def rollback_target(self, name: str, version: str | None) -> str:
        """The asked-for release if it exists and is not bad; else the newest good earlier one."""
        layout = self.layout(name)
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

    async def drill_pair(self, name: str) -> tuple[str, str]:
        """(what runs now, the release a rollback would land on) for a drill."""
        layout = self.layout(name)
        current = await layout.current()
        if current is None:
            raise NoRollbackTarget(f"{name} has no current release to drill with")
        target = await layout.previous_good()
        if target is None:
            raise NoRollbackTarget(f"{name} has no earlier good release to drill with")
        return current, target
