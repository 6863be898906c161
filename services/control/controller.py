"""One front for the services in the ops file: their state, details and a verified restart.

It hides whether a service runs under systemd or supervisord, on which host, and how its
health is probed, so the chat, the HTTP API and the deploy pipeline ask the same questions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import httpx

from config.inventory import HealthConfig, Service
from config.opsfile import OpsConfig
from services.control.backends import ServiceBackend, backend_for
from services.control.blue_green import BlueGreen
from services.control.health import (
    CheckResult,
    CommandCheck,
    HealthCheck,
    HealthWait,
    HttpCheck,
    RetryPolicy,
    TcpCheck,
    check_with_retry,
    wait_until_healthy,
)
from services.control.metrics import MetricsSampler, ProcessSample
from services.control.units import ServiceControlError
from services.errors import OpsgateError
from services.hosts.primitives import HostCommandFailed
from services.hosts.registry import Hosts
from services.hosts.runner import Host
from services.progress import Progress, StepStatus


class UnknownService(OpsgateError, KeyError):
    """A service name the ops file does not list."""

    kind = "not_found"

    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = sorted(known)

    def __str__(self) -> str:
        return f"unknown service {self.name!r} (known: {', '.join(self.known) or 'none'})"


@dataclass(frozen=True)
class ServiceState:
    name: str
    environment: str
    manager: str
    control_name: str
    state: str  # as the manager says it: active/running, RUNNING, failed/failed, ...
    running: bool
    main_pid: int | None
    restarts: int | None  # systemd's NRestarts; None where the manager does not count
    since: datetime | None
    health: CheckResult | None
    error: str | None = None  # the manager could not be asked


@dataclass(frozen=True)
class ServiceDetails:
    state: ServiceState
    process: ProcessSample | None
    log_tail: str


@dataclass(frozen=True)
class RestartOutcome:
    ok: bool
    old_pid: int | None
    new_pid: int | None
    health: HealthWait | None
    error: str | None


def health_check_for(config: HealthConfig, host: Host, http: httpx.AsyncClient) -> HealthCheck:
    if config.url is not None:
        return HttpCheck(
            http,
            str(config.url),
            expect_status=config.expect_status,
            expect_json=dict(config.expect_json) or None,
            latency_limit_s=config.latency_limit_s,
            timeout_s=config.timeout_s,
        )
    if config.tcp is not None:
        address, _, port = config.tcp.rpartition(":")
        return TcpCheck(address.strip("[]"), int(port), timeout_s=config.timeout_s)
    assert config.command is not None  # exactly one probe: checked when the file was loaded
    return CommandCheck(host, config.command, timeout_s=config.timeout_s)


class ServiceController:
    def __init__(
        self,
        ops: OpsConfig,
        hosts: Hosts,
        http: httpx.AsyncClient,
        sampler: MetricsSampler | None = None,
        *,
        start_timeout_s: float = 60.0,
    ) -> None:
        self._ops = ops
        self._hosts = hosts
        self._http = http
        self._sampler = sampler or MetricsSampler()
        self._start_timeout_s = start_timeout_s

    def service(self, name: str) -> Service:
        service = self._ops.services.get(name)
        if service is None:
            raise UnknownService(name, list(self._ops.services))
        return service

    def backend(self, name: str) -> ServiceBackend:
        service = self.service(name)
        return backend_for(service, self._hosts.get(service.host))

    def blue_green(self, name: str) -> BlueGreen | None:
        """The service's two colours, when it deploys blue-green."""
        service = self.service(name)
        if service.deploy is None or service.deploy.strategy != "blue-green":
            return None
        return BlueGreen(name, service, self._hosts.get(service.host), self._http)

    async def live_backend(self, name: str) -> ServiceBackend:
        """What serves now: the service's unit, or the live colour's instance."""
        colors = self.blue_green(name)
        if colors is None:
            return self.backend(name)
        return colors.backend(await colors.live() or "blue")

    def health_check(self, name: str) -> HealthCheck | None:
        service = self.service(name)
        if service.health is None:
            return None
        return health_check_for(service.health, self._hosts.get(service.host), self._http)

    async def state(self, name: str) -> ServiceState:
        service = self.service(name)
        self._hosts.get(service.host)  # an unknown host fails before any probe starts
        check = self.health_check(name)
        health_task = asyncio.ensure_future(self._probe(name, check)) if check else None
        try:
            status = await (await self.live_backend(name)).status()
            error = None
        except (ServiceControlError, HostCommandFailed) as exc:
            status, error = None, str(exc)
        health = await health_task if health_task is not None else None
        return ServiceState(
            name=name,
            environment=service.environment,
            manager=service.manager,
            control_name=service.control_name,
            state=status.state if status else "unknown",
            running=status.running if status else False,
            main_pid=status.main_pid if status else None,
            restarts=status.restarts if status else None,
            since=status.since if status else None,
            health=health,
            error=error,
        )

    async def _probe(self, name: str, check: HealthCheck) -> CheckResult:
        health = self.service(name).health
        assert health is not None
        return await check_with_retry(check, RetryPolicy(health.attempts, health.interval_s))

    async def overview(self) -> list[ServiceState]:
        names = sorted(self._ops.services)
        return list(await asyncio.gather(*(self.state(n) for n in names)))

    async def details(self, name: str, lines: int = 15) -> ServiceDetails:
        state = await self.state(name)
        try:
            log_tail = await (await self.live_backend(name)).log_tail(lines)
        except (ServiceControlError, HostCommandFailed) as exc:
            log_tail = f"(log unavailable: {exc})"
        process = None
        if state.main_pid and self.service(name).host == "local":
            process = await self._sampler.sample_process(state.main_pid, include_children=True)
        return ServiceDetails(state, process, log_tail)

    async def restart(self, name: str, progress: Progress) -> RestartOutcome:
        """Restart, wait until running, then until healthy; each a step in `progress`."""
        service = self.service(name)
        old_pid = new_pid = None
        wait: HealthWait | None = None
        try:
            backend = await self.live_backend(name)
            async with progress.step(f"{service.manager}: restart {service.control_name}"):
                old_pid = (await backend.status()).main_pid
                await backend.restart()
            async with progress.step("wait until running") as step:
                status = await backend.wait_running(self._start_timeout_s)
                new_pid = status.main_pid
                step.detail = f"pid {old_pid or '-'} → {new_pid or '-'}"
            check = self.health_check(name)
            if check is not None and service.health is not None:
                title = f"health: {service.health.consecutive} in a row"
                async with progress.step(title) as step:
                    wait = await wait_until_healthy(
                        check,
                        service.health.consecutive,
                        service.health.within_s,
                        service.health.interval_s,
                    )
                    last = wait.last
                    latency = f"{last.latency_s * 1000:.0f} ms" if last else "-"
                    step.detail = f"{wait.checks} check(s), last {latency}"
                    if not wait.ok:
                        step.status = StepStatus.FAILED
                        step.detail = last.reason if last else "no answer"
        except (ServiceControlError, HostCommandFailed) as exc:
            return RestartOutcome(False, old_pid, new_pid, wait, str(exc))
        error = None if not progress.failed else progress.steps[-1].detail
        return RestartOutcome(not progress.failed, old_pid, new_pid, wait, error)
