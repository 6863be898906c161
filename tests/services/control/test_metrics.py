"""Metrics read from this machine and from real child processes."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import psutil
import pytest

from services.control.metrics import MetricsSampler, busy_percent

MB = 1024 * 1024
# Every helper prints one line when ready and lives until its stdin closes (or it is killed);
# a grandchild shares that stdin, so nothing outlives the test.
HOLD_50_MB = "b = b'x' * (50 * 2**20); print('ready', flush=True); import sys; sys.stdin.read()"
SPIN = "print('ready', flush=True)\nwhile True: pass"
PARENT_OF = "import subprocess, sys; subprocess.run([sys.executable, '-c', sys.argv[1]])"
PARENT_OF_ZOMBIE = (
    "import subprocess, sys; child = subprocess.Popen(['true']); print(child.pid, flush=True);"
    " sys.stdin.read()"
)

Spawn = Callable[..., Awaitable[tuple[int, str]]]


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    """Starts `python -c CODE ARGS...`; returns its PID and first line of output."""
    started: list[asyncio.subprocess.Process] = []

    async def start(code: str, *args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-c", code, *args),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        started.append(proc)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        return proc.pid, line.decode().strip()

    yield start
    for proc in started:
        assert proc.stdin is not None
        proc.stdin.close()
        with contextlib.suppress(ProcessLookupError):  # some tests end it themselves
            proc.kill()
        await proc.wait()


async def test_system_sample_is_sane_and_has_rates_from_the_second(tmp_path: Path) -> None:
    missing = str(tmp_path / "not-mounted")
    sampler = MetricsSampler(["/", missing])
    first = await sampler.sample_system()
    assert first.interval_s is None and first.cpu_percent is None
    assert first.net_sent_per_s is None and first.net_recv_per_s is None
    assert 0 < first.memory_available_bytes <= first.memory_total_bytes
    assert 0 <= first.memory_percent <= 100 and 0 <= first.swap_percent <= 100
    assert min(first.load_1, first.load_5, first.load_15) >= 0
    root = first.disks["/"]
    assert root is not None and 0 < root.used_bytes < root.total_bytes
    assert 0 < root.percent <= 100
    assert first.disks[missing] is None
    await asyncio.sleep(0.05)
    second = await sampler.sample_system()
    assert second.interval_s is not None and second.interval_s > 0
    assert second.cpu_percent is not None and 0 <= second.cpu_percent <= 100
    assert second.net_sent_per_s is not None and second.net_sent_per_s >= 0
    assert second.net_recv_per_s is not None and second.net_recv_per_s >= 0
    assert second.at > first.at


async def test_cpu_is_seen_busy_while_a_process_spins(spawn: Spawn) -> None:
    pid, _ = await spawn(SPIN)
    sampler = MetricsSampler()
    await sampler.sample_system()
    first = await sampler.sample_process(pid)
    assert first is not None and first.cpu_percent is None  # no baseline yet
    await asyncio.sleep(0.3)
    system = await sampler.sample_system()
    process = await sampler.sample_process(pid)
    assert system.cpu_percent is not None and system.cpu_percent > 0
    assert process is not None and process.cpu_percent is not None and process.cpu_percent > 0


async def test_rss_of_a_process_holding_50_mb(spawn: Spawn) -> None:
    pid, ready = await spawn(HOLD_50_MB)
    assert ready == "ready"
    sampler = MetricsSampler()
    sample = await sampler.sample_process(pid)
    assert sample is not None and sample.pid == pid
    assert sample.rss_bytes > 40 * MB
    assert sample.num_threads >= 1 and sample.num_processes == 1
    again = await sampler.sample_process(pid)
    assert again is not None and again.cpu_percent is not None and again.cpu_percent >= 0


async def test_children_are_summed_when_asked(spawn: Spawn) -> None:
    pid, ready = await spawn(PARENT_OF, HOLD_50_MB)  # the grandchild says ready
    assert ready == "ready"
    sampler = MetricsSampler()
    alone = await sampler.sample_process(pid)
    family = await sampler.sample_process(pid, include_children=True)
    assert alone is not None and alone.rss_bytes < 40 * MB and alone.num_processes == 1
    assert family is not None and family.rss_bytes > alone.rss_bytes + 40 * MB
    assert family.num_processes == 2 and family.num_threads >= 2
    assert family.cpu_percent is not None  # the parent had its baseline from `alone`


async def test_gone_zombie_and_zero_pids_are_none(spawn: Spawn) -> None:
    sampler = MetricsSampler()
    assert await sampler.sample_process(0) is None  # systemd's MainPID of a stopped unit
    assert await sampler.sample_process(-1) is None
    done = await asyncio.create_subprocess_exec("true")
    await done.wait()
    assert await sampler.sample_process(done.pid) is None
    _, line = await spawn(PARENT_OF_ZOMBIE)
    zombie = psutil.Process(int(line))
    for _ in range(500):  # `true` exits at once; its parent never reaps it
        if zombie.status() == psutil.STATUS_ZOMBIE:
            break
        await asyncio.sleep(0.01)
    assert zombie.status() == psutil.STATUS_ZOMBIE
    assert await sampler.sample_process(zombie.pid) is None
    assert await sampler.sample_process(zombie.pid, include_children=True) is None


async def test_a_sampled_process_that_dies_becomes_none(spawn: Spawn) -> None:
    pid, _ = await spawn(HOLD_50_MB)
    sampler = MetricsSampler()
    assert await sampler.sample_process(pid) is not None
    psutil.Process(pid).kill()
    for _ in range(500):  # killed, then reaped by asyncio's child watcher
        if not psutil.pid_exists(pid):
            break
        await asyncio.sleep(0.01)
    assert await sampler.sample_process(pid) is None


async def test_forgotten_processes_start_a_new_baseline(spawn: Spawn) -> None:
    pid, _ = await spawn(HOLD_50_MB)
    remembering, forgetful = MetricsSampler(), MetricsSampler(forget_after_s=0)
    for sampler in remembering, forgetful:
        await sampler.sample_process(pid)
    kept, lost = await remembering.sample_process(pid), await forgetful.sample_process(pid)
    assert kept is not None and kept.cpu_percent is not None
    assert lost is not None and lost.cpu_percent is None


def test_busy_percent_arithmetic() -> None:
    before = psutil.cpu_times()
    three_of_four = before._replace(user=before.user + 3, idle=before.idle + 1)
    assert busy_percent(before, three_of_four) == pytest.approx(75)
    counter_went_back = before._replace(user=before.user + 1, idle=before.idle - 5)
    assert busy_percent(before, counter_went_back) == pytest.approx(100)
    assert busy_percent(before, before) == 0
    if "guest" in before._fields:  # Linux: guest time is already inside user time
        guest = before._replace(user=before.user + 2, guest=before.guest + 2, idle=before.idle + 2)
        assert busy_percent(before, guest) == pytest.approx(50)


async def test_loopback_traffic_is_not_network_use() -> None:
    size = 32 * MB
    received = asyncio.get_running_loop().create_future()

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.set_result(len(await reader.read()))
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    sampler = MetricsSampler()
    async with server:
        await sampler.sample_system()
        _, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        writer.write(b"x" * size)
        writer.write_eof()
        assert await received == size
        writer.close()
        after = await sampler.sample_system()
    assert after.net_sent_per_s is not None and after.interval_s is not None
    assert after.net_sent_per_s * after.interval_s < size  # what this machine sent elsewhere
