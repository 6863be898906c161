"""Cost of one metrics round: a system sample plus five service-process samples.

Each row runs N rounds and reports wall time and CPU time (this process, all threads) per
round: mean and p95. The thread-hop row is the floor that `asyncio.to_thread` adds. Children
scans read every process in /proc, so their cost grows with the process count printed above
the table. Run by hand:

    .venv/bin/python bench/metrics_sampling.py [--rounds 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from services.control.metrics import MetricsSampler

REPO = Path(__file__).resolve().parents[1]

SERVICES = 5
# A stand-in service: a parent with two worker children, all asleep until stdin closes.
SERVICE = (
    "import subprocess, sys; kids = [subprocess.Popen([sys.executable, '-c',"
    " 'import sys; sys.stdin.read()']) for _ in range(2)]; print('ready', flush=True);"
    " sys.stdin.read()"
)

Round = Callable[[], Awaitable[object]]


async def measure(rounds: int, one_round: Round) -> tuple[list[float], list[float]]:
    await one_round()  # warm-up: first samples create the cached psutil objects
    walls, cpus = [], []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        await one_round()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return walls, cpus


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


async def start_services() -> list[asyncio.subprocess.Process]:
    procs = []
    for _ in range(SERVICES):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            SERVICE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        await proc.stdout.readline()
        procs.append(proc)
    return procs


async def main(rounds: int) -> None:
    procs = await start_services()
    pids = [proc.pid for proc in procs]
    sampler = MetricsSampler(["/", "/tmp"])

    async def processes(include_children: bool) -> None:
        for pid in pids:
            await sampler.sample_process(pid, include_children=include_children)

    async def system_and_processes() -> None:
        await sampler.sample_system()
        await processes(False)

    async def system_and_families() -> None:
        await sampler.sample_system()
        await processes(True)

    async def thread_hop() -> None:
        await asyncio.to_thread(lambda: None)

    rows: list[tuple[str, Round]] = [
        ("thread hop alone (floor)", thread_hop),
        ("system sample", sampler.sample_system),
        (f"{SERVICES} process samples", lambda: processes(False)),
        (f"{SERVICES} processes + children", lambda: processes(True)),
        (f"system + {SERVICES} processes", system_and_processes),
        (f"system + {SERVICES} proc + children", system_and_families),
    ]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, ", end="")
    print(f"{sum(1 for n in os.listdir('/proc') if n.isdigit())} processes, {rounds} rounds")
    print(f"{'per round':34} {'wall mean':>10} {'wall p95':>10} {'cpu mean':>10} {'cpu p95':>10}")
    try:
        for name, one_round in rows:
            walls, cpus = await measure(rounds, one_round)
            figures = [statistics.fmean(walls), p95(walls), statistics.fmean(cpus), p95(cpus)]
            print(f"{name:34}" + "".join(f"{value * 1e3:>8.3f}ms" for value in figures))
    finally:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()  # the workers read the same stdin and exit with their parent
            await proc.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=500)
    asyncio.run(main(parser.parse_args().rounds))
