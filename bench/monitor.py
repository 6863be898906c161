"""CPU cost of one sampling cycle of opsgate's own monitor.

Rules: host CPU, memory and disk, and `service_down` for N services running as real units on
a booted systemd sandbox (bot/dev/harness/systemd.py), each with an HTTP health check against
its own small server. CPU is opsgate's process time plus its children's (systemctl runs as a
child through the sandbox's nsenter prefix), per cycle. Baseline, in the same run: the bare
reads a cron script would do for the same rules: one `systemctl show` per service, one GET
per health URL, psutil's memory and CPU and a statvfs. Needs root. Run by hand:

    .venv/bin/python bench/monitor.py [--cycles 50] [--services 3]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil

from bot.dev import demo_web
from bot.dev.harness.systemd import SystemdSandbox, booted, unavailable_reason
from config.opsfile import parse_ops_text
from services.alerts.engine import AlertEngine
from services.alerts.monitor import Monitor
from services.control.controller import ServiceController
from services.control.metrics import MetricsSampler
from services.control.systemd import quote_exec
from services.hosts.registry import hosts_from_config
from services.records.audit import AuditLog
from services.records.storage import Storage

REPO = Path(__file__).resolve().parents[1]


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


async def measure(
    work: Callable[[], Awaitable[object]], cycles: int
) -> tuple[list[float], list[float]]:
    cpu, wall = [], []
    for _ in range(cycles):
        c0, w0 = cpu_seconds(), time.perf_counter()
        await work()
        cpu.append(cpu_seconds() - c0)
        wall.append(time.perf_counter() - w0)
    return cpu, wall


def ops_text(sandbox: SystemdSandbox, ports: list[int]) -> str:
    lines = ["[environments.staging]", "[hosts.sandbox]"]
    lines.append(f'prefix = ["nsenter", "-t", "{sandbox.pid}", "-m", "-p"]')
    for n, port in enumerate(ports):
        lines += [
            f"[services.s{n}]",
            'environment = "staging"',
            'host = "sandbox"',
            f'unit = "b-mon{n}.service"',
            f'health = {{ url = "http://127.0.0.1:{port}/health", attempts = 1 }}',
        ]
    for name, metric in (
        ("Cpu", "cpu_percent"),
        ("Mem", "memory_percent"),
        ("Disk", "disk_percent"),
    ):
        lines += ["[[alerts.rules]]", f'name = "{name}"', f'metric = "{metric}"', "above = 99.9"]
    lines += ["[[alerts.rules]]", 'name = "Down"', 'metric = "service_down"', "for_s = 30"]
    return "\n".join(lines) + "\n"


async def run(sandbox: SystemdSandbox, cycles: int, count: int) -> None:
    ports = [demo_web.free_port() for _ in range(count)]
    for n, port in enumerate(ports):
        argv = [sys.executable, "-m", "bot.dev.demo_web", "--port", str(port)]
        unit = f"[Service]\nWorkingDirectory={REPO}\nExecStart={quote_exec(argv)}\n"
        (sandbox.unit_dir / f"b-mon{n}.service").write_text(unit)
    await sandbox.host.run(["systemctl", "daemon-reload"])
    for n in range(count):
        await sandbox.host.run(["systemctl", "start", f"b-mon{n}.service"])
    await asyncio.sleep(1.0)  # the servers bind their ports
    ops = parse_ops_text(ops_text(sandbox, ports))
    hosts = hosts_from_config(ops.hosts)
    with tempfile.TemporaryDirectory() as tmp:
        async with Storage(Path(tmp) / "bench.db") as storage, httpx.AsyncClient() as http:
            engine = AlertEngine(storage, AuditLog(storage), lambda: ops)
            controller = ServiceController(ops, hosts, http)
            monitor = Monitor(
                engine, lambda: ops, lambda: controller, MetricsSampler(), lambda: datetime.now(UTC)
            )

            async def bare() -> None:
                for n in range(count):
                    await sandbox.host.run(["systemctl", "show", f"b-mon{n}.service"])
                for port in ports:
                    await http.get(f"http://127.0.0.1:{port}/health")
                psutil.virtual_memory()
                psutil.cpu_times()
                psutil.disk_usage("/")

            await monitor.cycle()  # warm-up: the sampler's first CPU reading is a baseline
            await bare()
            cpu_m, wall_m = await measure(monitor.cycle, cycles)
            cpu_b, wall_b = await measure(bare, cycles)
    await hosts.aclose()
    for n in range(count):
        await sandbox.host.run(["systemctl", "stop", f"b-mon{n}.service"])
    med = statistics.median
    print(f"{cycles} cycles; rules: cpu, memory, disk, service_down x {count} services")
    for label, cpu, wall in (("monitor cycle", cpu_m, wall_m), ("bare reads   ", cpu_b, wall_b)):
        print(
            f"{label}: CPU {med(cpu) * 1000:.1f} ms (incl. children),"
            f" wall {med(wall) * 1000:.1f} ms"
        )
    print(f"ratio (CPU): {med(cpu_m) / med(cpu_b):.2f}")
    print(f"at monitor_interval_s = 15: {med(cpu_m) / 15 * 100:.3f}% of one core")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--services", type=int, default=3)
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason is not None:
        sys.exit(f"cannot boot the systemd sandbox: {reason}")
    with booted() as sandbox:
        asyncio.run(run(sandbox, args.cycles, args.services))


if __name__ == "__main__":
    main()
