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

from config.inventory import LOCAL_HOST, HealthConfig, Service
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
    host: str
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


def health_check_for(
    config: HealthConfig, host: Host, http: httpx.AsyncClient, address: str = "127.0.0.1"
) -> HealthCheck:
    """`address` replaces "{address}" in the url or tcp probe: each host of a fleet is
    checked at its own address."""
    if config.url is not None:
        return HttpCheck(
            http,
            str(config.url).replace("{address}", address),
            expect_status=config.expect_status,
            expect_json=dict(config.expect_json) or None,
            latency_limit_s=config.latency_limit_s,
            timeout_s=config.timeout_s,
        )
    if config.tcp is not None:
        where, _, port = config.tcp.replace("{address}", address).rpartition(":")
        return TcpCheck(where.strip("[]"), int(port), timeout_s=config.timeout_s)
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

    def host_of(self, name: str, host: str | None = None) -> str:
        """`host`, or the first host of the service's first environment."""
        if host is not None:
            return host
        hosts = self.service(name).hosts_in()
        return hosts[0] if hosts else LOCAL_HOST

    def address_of(self, host: str) -> str:
        """Where a host's services are reached: its ssh address, or this machine."""
        config = self._ops.hosts.get(host)
        return config.address if config is not None and config.address else "127.0.0.1"

    def backend(self, name: str, host: str | None = None) -> ServiceBackend:
        service = self.service(name)
        return backend_for(service, self._hosts.get(self.host_of(name, host)))

    def blue_green(self, name: str, host: str | None = None) -> BlueGreen | None:
        """The service's two colours, when it deploys blue-green or canary."""
        service = self.service(name)
        if service.deploy is None or service.deploy.strategy == "restart":
            return None
        return BlueGreen(name, service, self._hosts.get(self.host_of(name, host)), self._http)

    async def live_backend(self, name: str, host: str | None = None) -> ServiceBackend:
        """What serves now: the service's unit, or the live colour's instance."""
        colors = self.blue_green(name, host)
        if colors is None:
            return self.backend(name, host)
        return colors.backend(await colors.live() or "blue")

    def health_check(self, name: str, host: str | None = None) -> HealthCheck | None:
        service = self.service(name)
        if service.health is None:
            return None
        where = self.host_of(name, host)
        return health_check_for(
            service.health, self._hosts.get(where), self._http, self.address_of(where)
        )

    async def state(
        self, name: str, host: str | None = None, environment: str | None = None
    ) -> ServiceState:
        service = self.service(name)
        host = self.host_of(name, host)
        self._hosts.get(host)  # an unknown host fails before any probe starts
        check = self.health_check(name, host)
        health_task = asyncio.ensure_future(self._probe(name, check)) if check else None
        try:
            status = await (await self.live_backend(name, host)).status()
            error = None
        except (ServiceControlError, HostCommandFailed) as exc:
            status, error = None, str(exc)
        health = await health_task if health_task is not None else None
        return ServiceState(
            name=name,
            environment=environment or service.home,
            host=host,
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

    async def fleet_state(self, name: str, environment: str | None = None) -> list[ServiceState]:
        """One state per host of the service in `environment` (default: its first)."""
        service = self.service(name)
        environment = environment or service.home
        hosts = service.hosts_in(environment)
        return list(await asyncio.gather(*(self.state(name, h, environment) for h in hosts)))

    async def _probe(self, name: str, check: HealthCheck) -> CheckResult:
        health = self.service(name).health
        assert health is not None
        return await check_with_retry(check, RetryPolicy(health.attempts, health.interval_s))

    async def overview(self) -> list[ServiceState]:
        """One state per service, environment and host, in the ops file's order of
        environments (promotion order)."""
        names = sorted(self._ops.services)
        work = [
            self.state(n, h, env)
            for n in names
            for env in self.service(n).environment_names()
            for h in self.service(n).hosts_in(env)
        ]
        return list(await asyncio.gather(*work))

    async def details(self, name: str, lines: int = 15, host: str | None = None) -> ServiceDetails:
        state = await self.state(name, host)
        try:
            log_tail = await (await self.live_backend(name, state.host)).log_tail(lines)
        except (ServiceControlError, HostCommandFailed) as exc:
            log_tail = f"(log unavailable: {exc})"
        process = None
        if state.main_pid and state.host == LOCAL_HOST:
            process = await self._sampler.sample_process(state.main_pid, include_children=True)
        return ServiceDetails(state, process, log_tail)

    async def restart(
        self, name: str, progress: Progress, host: str | None = None
    ) -> RestartOutcome:
        """Restart, wait until running, then until healthy; each a step in `progress`."""
        service = self.service(name)
        old_pid = new_pid = None
        wait: HealthWait | None = None
        on = f" on {host}" if host is not None and len(service.all_hosts()) > 1 else ""
        try:
            backend = await self.live_backend(name, host)
            async with progress.step(f"{service.manager}: restart {service.control_name}{on}"):
                old_pid = (await backend.status()).main_pid
                await backend.restart()
            async with progress.step("wait until running") as step:
                status = await backend.wait_running(self._start_timeout_s)
                new_pid = status.main_pid
                step.detail = f"pid {old_pid or '-'} → {new_pid or '-'}"
            check = self.health_check(name, host)
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
