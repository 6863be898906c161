"""The watch window after a verified deploy: what makes opsgate roll back by itself.

Every `watch_interval_s` for `watch_s`:
    restarts     the unit's NRestarts grew by more than `max_restarts` (systemd): at once
    health       the health check failed `max_failed_checks` times in a row (a slow answer,
                 over the check's latency_limit_s, is a failure: the seeds' 5 s)
    memory       the main process and its children over `max_memory_mib` or
                 `max_memory_percent` of the host's memory (unset: the seeds' 90% when the
                 service runs on this machine), that many readings in a row
    error rate   errors/total between two readings of a Prometheus-format endpoint over
                 `error_rate.max_ratio` (the seeds' 5%), that many readings in a row; an
                 unreadable endpoint counts as a bad reading (the new release may have
                 broken it)
The first trigger raises `StepFailed` naming what was seen.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httpx

from config.inventory import DeployConfig, memory_percent_limit
from services.control.backends import ServiceBackend
from services.control.health import HealthCheck
from services.deploy.errors import StepFailed
from services.flags.gates import ErrorRateWatch
from services.hosts.facts import MIB, meminfo, process_tree_rss
from services.hosts.runner import Host, LocalHost
from services.progress import Progress


@dataclass
class _Streak:
    """Bad readings in a row for one condition; a good one resets it."""

    limit: int
    count: int = 0
    last: str = ""

    def add(self, bad: str | None) -> bool:
        self.count = self.count + 1 if bad else 0
        self.last = bad or self.last
        return self.count >= self.limit


@dataclass
class Watch:
    name: str
    deploy: DeployConfig
    backend: ServiceBackend
    check: HealthCheck | None
    host: Host
    http: httpx.AsyncClient
    restarts_before: int | None
    _memory_limit: int | None = field(default=None, init=False)
    streaks: dict[str, _Streak] = field(default_factory=dict, init=False)
    _errors: ErrorRateWatch | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        limit = self.deploy.max_failed_checks
        self.streaks = {k: _Streak(limit) for k in ("health", "memory", "errors")}
        self._errors = ErrorRateWatch(self.http)

    async def run(self, progress: Progress) -> None:
        deploy = self.deploy
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deploy.watch_s
        readings = 0
        async with progress.step(f"watch {deploy.watch_s:g} s") as step:
            await self.baseline()
            while loop.time() < deadline:
                await asyncio.sleep(min(deploy.watch_interval_s, max(deadline - loop.time(), 0)))
                seen = await self.reading()
                readings += 1
                step.detail = f"{readings} reading(s), last: {seen}"

    async def baseline(self) -> None:
        """The error-rate reading the first interval is measured on (none without one)."""
        if self.deploy.error_rate is not None and self._errors is not None:
            await self._errors.check(self.name, self.deploy.error_rate)

    async def reading(self) -> str:
        """One look at everything watched: what was seen, or StepFailed naming the breach."""
        deploy = self.deploy
        status = await self.backend.status()
        self._check_restarts(status.restarts)
        seen: list[str] = []
        if self.check is not None:
            result = await self.check.run()
            seen.append(f"health {result.reason}")
            if self.streaks["health"].add(None if result.ok else result.reason):
                raise StepFailed(self._why("failed its health check", self.streaks["health"]))
        if status.main_pid and self._limits_memory:
            bad = await self._memory(status.main_pid, seen)
            if self.streaks["memory"].add(bad):
                raise StepFailed(self._why("used too much memory", self.streaks["memory"]))
        if deploy.error_rate is not None and self._errors is not None:
            verdict = await self._errors.check(self.name, deploy.error_rate)
            seen.append("errors ok" if verdict.ok else verdict.reason)
            if self.streaks["errors"].add(None if verdict.ok else verdict.reason):
                raise StepFailed(self._why("had too many errors", self.streaks["errors"]))
        return ", ".join(seen) or "running"

    def _check_restarts(self, restarts: int | None) -> None:
        if restarts is None or self.restarts_before is None:
            return
        grown = restarts - self.restarts_before
        if grown > self.deploy.max_restarts:
            raise StepFailed(
                f"{self.name} restarted {grown} time(s) while watched"
                f" (allowed: {self.deploy.max_restarts})."
            )

    @property
    def _percent(self) -> float | None:
        return memory_percent_limit(self.deploy, isinstance(self.host, LocalHost))[0]

    @property
    def _limits_memory(self) -> bool:
        return self.deploy.max_memory_mib is not None or self._percent is not None

    async def _memory(self, pid: int, seen: list[str]) -> str | None:
        if self._memory_limit is None:
            limits = []
            if self.deploy.max_memory_mib is not None:
                limits.append(self.deploy.max_memory_mib * MIB)
            if (percent := self._percent) is not None:
                total = (await meminfo(self.host))["MemTotal"]
                limits.append(int(total * percent / 100))
            self._memory_limit = min(limits)
        rss = await process_tree_rss(self.host, pid)
        seen.append(f"memory {rss // MIB} MiB")
        if rss > self._memory_limit:
            return f"{rss // MIB} MiB > {self._memory_limit // MIB} MiB"
        return None

    def _why(self, what: str, streak: _Streak) -> str:
        return f"{self.name} {what} {streak.count} time(s) in a row while watched ({streak.last})."
