"""Where each service runs and what: per environment, per host, collapsed when all agree.

"web production: v2 on 6/6 hosts, all healthy" is what a person wants first; the host by
host list only when the hosts disagree or something is wrong.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from config.opsfile import OpsConfig
from services.control.controller import ServiceController, ServiceState
from services.releases.queries import ReleaseQueries


@dataclass(frozen=True)
class Placement:
    """One service in one environment: every host's state and release."""

    service: str
    environment: str
    states: list[ServiceState]
    versions: dict[str, str | None]  # host -> current release (None: none, or not deployed)

    @property
    def hosts(self) -> list[str]:
        return [s.host for s in self.states]

    @property
    def healthy(self) -> list[str]:
        return [
            s.host
            for s in self.states
            if s.error is None and s.running and (s.health is None or s.health.ok)
        ]

    @property
    def version(self) -> str | None:
        """The release every host runs, or None when they differ (or none is deployed)."""
        found = set(self.versions.values())
        return found.pop() if len(found) == 1 else None

    @property
    def agree(self) -> bool:
        return len(self.healthy) == len(self.states) and (
            self.version is not None or not any(self.versions.values())
        )


async def placements(
    ops: OpsConfig,
    controller: ServiceController,
    releases: ReleaseQueries,
    name: str | None = None,
) -> list[Placement]:
    """Every service (or just `name`) in each of its environments, probed in parallel."""
    names = [name] if name is not None else sorted(ops.services)
    pairs = [(n, env) for n in names for env in ops.services[n].environment_names()]

    async def one(service: str, environment: str) -> Placement:
        states = await controller.fleet_state(service, environment)
        versions: dict[str, str | None] = {s.host: None for s in states}
        if ops.services[service].deploy is not None:
            versions.update(await releases.current_by_host(service, environment))
        return Placement(service, environment, states, versions)

    return list(await asyncio.gather(*(one(n, env) for n, env in pairs)))
