"""System and per-service process metrics with psutil, cheap enough to sample every few seconds.

Rates (CPU busy share, network bytes per second, process CPU) need two readings, so the
sampler keeps the previous one: the first sample reports them as None rather than a
meaningless 0.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import psutil

_LOOPBACK = frozenset({"lo", "lo0"})  # our own health checks talk over it: not network use


@dataclass(frozen=True)
class DiskUsage:
    total_bytes: int
    used_bytes: int
    percent: float


@dataclass(frozen=True)
class SystemSample:
    at: datetime
    interval_s: float | None  # since the previous sample; None on the first
    cpu_percent: float | None  # busy share of all CPUs over the interval, 0..100
    load_1: float
    load_5: float
    load_15: float
    memory_total_bytes: int
    memory_available_bytes: int
    memory_percent: float
    swap_percent: float
    disks: Mapping[str, DiskUsage | None]  # per configured path; None when unreadable
    net_sent_per_s: float | None  # all interfaces but loopback
    net_recv_per_s: float | None


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    rss_bytes: int  # summed with children: pages they share count once per process
    cpu_percent: float | None  # since the previous sample of this PID; 100 = one core
    num_threads: int
    num_processes: int = 1  # the process plus the children counted


@dataclass(frozen=True)
class _Reading:
    """Raw counters from one pass over /proc."""

    monotonic: float
    cpu_times: Any  # psutil's scputimes
    load: tuple[float, float, float]
    memory: Any  # psutil's svmem
    swap_percent: float
    disks: dict[str, DiskUsage | None]
    net_sent: int
    net_recv: int


def _read_system(paths: Sequence[str]) -> _Reading:
    disks: dict[str, DiskUsage | None] = {}
    for path in paths:
        try:
            usage = psutil.disk_usage(path)
        except OSError:  # gone, unmounted or not ours to read: say so, do not fail the sample
            disks[path] = None
        else:
            disks[path] = DiskUsage(int(usage.total), int(usage.used), float(usage.percent))
    nics = psutil.net_io_counters(pernic=True)
    counters = [c for name, c in nics.items() if name not in _LOOPBACK]
    load_1, load_5, load_15 = psutil.getloadavg()
    return _Reading(
        monotonic=time.monotonic(),
        cpu_times=psutil.cpu_times(),
        load=(float(load_1), float(load_5), float(load_15)),
        memory=psutil.virtual_memory(),
        swap_percent=float(psutil.swap_memory().percent),
        disks=disks,
        net_sent=sum(int(c.bytes_sent) for c in counters),
        net_recv=sum(int(c.bytes_recv) for c in counters),
    )


def busy_percent(before: Any, after: Any) -> float:
    """psutil.cpu_percent's arithmetic on two cpu_times() readings.

    We keep our own baseline: psutil's is per thread and shared with every other caller.
    """
    deltas = {
        name: max(0.0, getattr(after, name) - getattr(before, name)) for name in after._fields
    }
    # Linux counts guest time inside user and nice, and iowait is idle time too.
    total = sum(deltas.values()) - deltas.get("guest", 0.0) - deltas.get("guest_nice", 0.0)
    idle = deltas["idle"] + deltas.get("iowait", 0.0)
    return min(100.0, max(0.0, 100.0 * (total - idle) / total)) if total > 0 else 0.0


class _ProcessReading(NamedTuple):
    rss_bytes: int
    cpu_percent: float | None  # None until this process has a baseline
    num_threads: int


@dataclass
class _Tracked:
    process: Any  # psutil.Process: it holds the CPU-time baseline for cpu_percent
    primed: bool = False
    last_used: float = 0.0


class MetricsSampler:
    """Samples the system and service processes; keep one per program and reuse it."""

    def __init__(self, paths: Sequence[str] = ("/",), *, forget_after_s: float = 600.0) -> None:
        self.paths = tuple(paths)
        self.forget_after_s = forget_after_s
        self._previous: _Reading | None = None
        self._lock = asyncio.Lock()
        self._tracked: dict[int, _Tracked] = {}

    async def sample_system(self) -> SystemSample:
        async with self._lock:  # readings must reach `_previous` in the order they were taken
            # A thread, as statvfs() on a hung network mount blocks; the rest is ~0.2 ms.
            now = await asyncio.to_thread(_read_system, self.paths)
            before, self._previous = self._previous, now
        interval = now.monotonic - before.monotonic if before is not None else None
        sent = recv = cpu = None
        if before is not None and interval:
            cpu = busy_percent(before.cpu_times, now.cpu_times)
            sent = max(0, now.net_sent - before.net_sent) / interval  # a NIC may have gone
            recv = max(0, now.net_recv - before.net_recv) / interval
        memory = now.memory
        return SystemSample(
            at=datetime.now(UTC),
            interval_s=interval,
            cpu_percent=cpu,
            load_1=now.load[0],
            load_5=now.load[1],
            load_15=now.load[2],
            memory_total_bytes=int(memory.total),
            memory_available_bytes=int(memory.available),
            memory_percent=float(memory.percent),
            swap_percent=now.swap_percent,
            disks=now.disks,
            net_sent_per_s=sent,
            net_recv_per_s=recv,
        )

    async def sample_process(
        self, pid: int, *, include_children: bool = False
    ) -> ProcessSample | None:
        """A service's main process (systemd MainPID, supervisord pid), optionally with its
        descendants summed in. None when it is gone, a zombie, not ours to read, or pid <= 0
        (systemd reports MainPID=0 for a stopped unit)."""
        self._forget_stale()
        main = self._track(pid) if pid > 0 else None
        first = self._read(main) if main is not None else None
        if main is None or first is None:
            return None
        readings = [first]
        if include_children:
            # A thread: finding children scans all of /proc (~1.5 ms per 100 processes here).
            try:
                pids = await asyncio.to_thread(_descendants, main.process)
            except psutil.Error:
                return None
            tracked = filter(None, map(self._track, pids))
            readings += filter(None, map(self._read, tracked))  # children may exit meanwhile
        # A child seen for the first time adds its CPU from the next sample on.
        cpus = [r.cpu_percent for r in readings if r.cpu_percent is not None]
        return ProcessSample(
            pid=pid,
            rss_bytes=sum(r.rss_bytes for r in readings),
            cpu_percent=None if first.cpu_percent is None else sum(cpus),
            num_threads=sum(r.num_threads for r in readings),
            num_processes=len(readings),
        )

    def _track(self, pid: int) -> _Tracked | None:
        tracked = self._tracked.get(pid)
        if tracked is not None and not tracked.process.is_running():  # gone, or PID reused
            del self._tracked[pid]
            tracked = None
        if tracked is None:
            try:
                tracked = self._tracked[pid] = _Tracked(psutil.Process(pid))
            except psutil.Error:
                return None
        tracked.last_used = time.monotonic()
        return tracked

    def _read(self, tracked: _Tracked) -> _ProcessReading | None:
        process = tracked.process
        try:
            with process.oneshot():  # one read of /proc/PID/stat for all of these
                if process.status() == psutil.STATUS_ZOMBIE:
                    raise psutil.ZombieProcess(process.pid)
                rss = int(process.memory_info().rss)
                cpu = float(process.cpu_percent(interval=None))
                threads = int(process.num_threads())
        except psutil.Error:  # NoSuchProcess, ZombieProcess, AccessDenied
            self._tracked.pop(process.pid, None)
            return None
        primed, tracked.primed = tracked.primed, True
        return _ProcessReading(rss, cpu if primed else None, threads)

    def _forget_stale(self) -> None:
        """Drops processes not asked about lately, such as children that have exited."""
        horizon = time.monotonic() - self.forget_after_s
        for pid in [pid for pid, t in self._tracked.items() if t.last_used < horizon]:
            del self._tracked[pid]


def _descendants(process: Any) -> list[int]:
    return [child.pid for child in process.children(recursive=True)]
