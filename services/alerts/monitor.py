"""opsgate's own monitor: [[alerts.rules]] evaluated every monitor_interval_s, each condition
firing only once it has held for `for_s` (like a Prometheus rule's `for`), and resolving when
it stops holding. Alerts go through the same engine as Alertmanager's.

    cpu_percent, memory_percent, disk_percent (of `path`)    the host opsgate runs on
    service_down      a service not running, or failing its health check (value 1)
    service_restarts  systemd's NRestarts above `above`

After a restart the conditions still firing in the engine are taken up again, so one that
cleared while opsgate was down still resolves.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import psutil

from config.alerts import MonitorRule
from config.opsfile import OpsConfig
from services.alerts.engine import AlertEngine
from services.alerts.model import AlertStatus, IncomingAlert
from services.control.controller import ServiceController
from services.control.metrics import MetricsSampler


@dataclass(frozen=True)
class Reading:
    subject: str  # the host or the service
    value: float
    text: str  # what a person reads: "memory at 93%"


class Monitor:
    def __init__(
        self,
        engine: AlertEngine,
        ops: Callable[[], OpsConfig],
        controller: Callable[[], ServiceController],
        sampler: MetricsSampler,
        clock: Callable[[], datetime],
    ) -> None:
        self._engine = engine
        self._ops = ops
        self._controller = controller
        self._sampler = sampler
        self._clock = clock
        self._since: dict[str, datetime] = {}  # condition -> holding since
        self._firing: set[str] = set()
        self._resumed = False
        self._host = socket.gethostname()

    async def cycle(self) -> list[IncomingAlert]:
        """One sampling cycle; returns the firing and resolved alerts it reported."""
        rules = self._ops().alerts.rules
        if not rules:
            return []
        if not self._resumed:
            await self._resume()
        now = self._clock()
        reported: list[IncomingAlert] = []
        seen: set[str] = set()
        for rule in rules:
            for reading in await self._read(rule):
                key = f"{rule.name}:{reading.subject}"
                seen.add(key)
                labels = self._labels(rule, reading.subject)
                if reading.value > rule.above:
                    since = self._since.setdefault(key, now)
                    held = (now - since).total_seconds()
                    if key not in self._firing and held >= rule.for_s:
                        self._firing.add(key)
                        reported.append(
                            self._alert(labels, reading, rule, AlertStatus.FIRING, since)
                        )
                    continue
                self._since.pop(key, None)
                if key in self._firing:
                    self._firing.discard(key)
                    reported.append(self._alert(labels, reading, rule, AlertStatus.RESOLVED, now))
        if reported:
            await self._engine.ingest(reported)
        return reported

    async def _resume(self) -> None:
        self._resumed = True
        for group in await self._engine.firing_groups():
            for alert in group.firing:
                if alert.source == "monitor":
                    service, host = alert.labels.get("service"), alert.labels.get("host", "")
                    subject = f"{service}@{host}" if service and host else service or host
                    self._firing.add(f"{alert.name}:{subject}")

    def _labels(self, rule: MonitorRule, subject: str) -> dict[str, str]:
        labels = {"alertname": rule.name, "severity": rule.severity, "source": "opsgate"}
        if rule.metric.startswith("service_"):
            service, _, host = subject.partition("@")
            labels["service"] = service
            if host:
                labels["host"] = host
        else:
            labels["host"] = subject
        return labels

    def _alert(
        self,
        labels: dict[str, str],
        reading: Reading,
        rule: MonitorRule,
        status: AlertStatus,
        at: datetime,
    ) -> IncomingAlert:
        summary = f"{reading.text} (over {rule.above:g} for {rule.for_s:g} s)"
        if status is AlertStatus.RESOLVED:
            summary = f"back to normal: {reading.text}"
        ends = at if status is AlertStatus.RESOLVED else None
        return IncomingAlert(labels, {"summary": summary}, status, at, ends, "monitor")

    async def _read(self, rule: MonitorRule) -> list[Reading]:
        if rule.metric == "cpu_percent":
            sample = await self._sampler.sample_system()
            cpu = sample.cpu_percent or 0.0
            return [Reading(self._host, cpu, f"CPU at {cpu:.0f}%")]
        if rule.metric == "memory_percent":
            sample = await self._sampler.sample_system()
            return [
                Reading(
                    self._host, sample.memory_percent, f"memory at {sample.memory_percent:.0f}%"
                )
            ]
        if rule.metric == "disk_percent":
            usage = await asyncio.to_thread(psutil.disk_usage, rule.path)
            return [Reading(self._host, usage.percent, f"{rule.path} {usage.percent:.0f}% full")]
        controller = self._controller()
        ops = self._ops()
        names = rule.services or sorted(ops.services)
        # Every host of every environment: a fleet's one bad host is an alert of its own
        # (subject "web@web3"), a one-host service keeps its plain name.
        places = [
            (name, env, host)
            for name in names
            if name in ops.services
            for env in ops.services[name].environment_names()
            for host in ops.services[name].hosts_in(env)
        ]
        states = await asyncio.gather(*(controller.state(n, h, e) for n, e, h in places))
        readings = []
        for (service, _, host), state in zip(places, states, strict=True):
            name = service if len(ops.services[service].all_hosts()) == 1 else f"{service}@{host}"
            if rule.metric == "service_down":
                healthy = state.running and (state.health is None or state.health.ok)
                why = state.error or (state.health.reason if state.health else state.state)
                text = "running and healthy" if healthy else f"down: {why}"
                readings.append(Reading(name, 0.0 if healthy else 1.0, text))
            else:
                restarts = float(state.restarts or 0)
                readings.append(Reading(name, restarts, f"{restarts:g} restart(s)"))
        return readings
