"""opsgate's own monitor: rules with `for`, a real unit on the systemd sandbox going down and
coming back, the host's memory; alerts through the real engine into outbox rows."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from bot.dev.harness.systemd import SystemdSandbox
from config.opsfile import OpsConfig, parse_ops_text
from services.alerts.engine import AlertEngine
from services.alerts.model import AlertStatus
from services.alerts.monitor import Monitor
from services.control.controller import ServiceController
from services.control.metrics import MetricsSampler
from services.hosts.registry import hosts_from_config
from services.records.audit import AuditLog
from services.records.storage import Storage

UNIT = "t-mon.service"
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
OPS = """
[chats.alerts]
critical = -100300
warning = -100301
[environments.staging]
[hosts.sandbox]
prefix = ["nsenter", "-t", "{pid}", "-m", "-p"]
[services.mon]
environment = "staging"
host = "sandbox"
unit = "{unit}"
[[alerts.rules]]
name = "ServiceDown"
metric = "service_down"
for_s = 30
severity = "critical"
[[alerts.rules]]
name = "HostMemory"
metric = "memory_percent"
above = 0
for_s = 60
"""


@dataclass
class World:
    monitor: Monitor
    engine: AlertEngine
    sandbox: SystemdSandbox
    now: list[datetime] = field(default_factory=lambda: [T0])

    def at(self, seconds: float) -> None:
        self.now[0] = T0 + timedelta(seconds=seconds)


@pytest.fixture
async def world(
    systemd_sandbox: SystemdSandbox, tmp_path: Path, database: str
) -> AsyncIterator[World]:
    base = Path(tempfile.mkdtemp(prefix="monitor_", dir=systemd_sandbox.work_dir))
    sleeper = f'ExecStart="{sys.executable}" -c "import time; time.sleep(3600)"'
    (systemd_sandbox.unit_dir / UNIT).write_text(f"[Service]\n{sleeper}\n")
    await systemd_sandbox.host.run(["systemctl", "daemon-reload"])
    ops: OpsConfig = parse_ops_text(OPS.format(pid=systemd_sandbox.pid, unit=UNIT))
    hosts = hosts_from_config(ops.hosts)
    now = [T0]
    async with Storage(database) as storage, httpx.AsyncClient() as http:
        engine = AlertEngine(storage, AuditLog(storage), lambda: ops, lambda: now[0])
        controller = ServiceController(ops, hosts, http)
        monitor = Monitor(engine, lambda: ops, lambda: controller, MetricsSampler(), lambda: now[0])
        yield World(monitor, engine, systemd_sandbox, now)
    await hosts.aclose()
    await systemd_sandbox.host.run(["systemctl", "stop", UNIT])
    (systemd_sandbox.unit_dir / UNIT).unlink()
    await systemd_sandbox.host.run(["systemctl", "daemon-reload"])
    shutil.rmtree(base)


def names(alerts: list[object]) -> list[tuple[str, str]]:
    return [(a.labels["alertname"], a.status.value) for a in alerts]  # type: ignore[attr-defined]


async def test_conditions_fire_after_their_for_and_resolve_when_they_stop(world: World) -> None:
    # The unit is stopped: down from the first cycle, but only reported after 30 s.
    assert await world.monitor.cycle() == []
    world.at(29)
    assert await world.monitor.cycle() == []
    world.at(30)
    fired = await world.monitor.cycle()
    assert names(fired) == [("ServiceDown", "firing")]
    [down] = fired
    assert down.labels == {
        "alertname": "ServiceDown", "severity": "critical", "source": "opsgate", "service": "mon",
    }  # fmt: skip
    assert down.starts_at == world.now[0] - timedelta(seconds=30)  # when it began to hold
    assert "down" in down.annotations["summary"]
    world.at(45)
    assert await world.monitor.cycle() == []  # still firing: reported once
    world.at(60)
    assert names(await world.monitor.cycle()) == [("HostMemory", "firing")]  # above 0 for 60 s

    assert (await world.sandbox.host.run(["systemctl", "start", UNIT])).ok
    world.at(61)
    resolved = await world.monitor.cycle()
    assert names(resolved) == [("ServiceDown", "resolved")]
    groups = await world.engine.firing_groups()
    assert sorted(a.name for g in groups for a in g.firing) == ["HostMemory"]


async def test_a_restart_takes_up_what_still_fires(world: World, tmp_path: Path) -> None:
    world.at(0)
    await world.monitor.cycle()
    world.at(30)
    assert names(await world.monitor.cycle()) == [("ServiceDown", "firing")]
    # A new Monitor (opsgate restarted) on the same engine: the unit comes back meanwhile.
    assert (await world.sandbox.host.run(["systemctl", "start", UNIT])).ok
    fresh = Monitor(
        world.engine,
        world.monitor._ops,
        world.monitor._controller,
        MetricsSampler(),
        lambda: world.now[0],
    )
    world.at(40)
    assert ("ServiceDown", "resolved") in names(await fresh.cycle())
    firing = [a for g in await world.engine.firing_groups() for a in g.firing]
    assert all(a.status is AlertStatus.FIRING and a.name != "ServiceDown" for a in firing)
