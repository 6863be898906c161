"""OFREP throughput: single-flag evaluations over HTTP, raw and through the real SDK + provider.

The server (bot/http/ofrep.py routes on uvicorn, the flags in
bot/dev/harness/ofrep_flags.py evaluated by the real engine) runs in a child process pinned to
one CPU; the clients run here, pinned
to another CPU when there is one, so the server's core is not shared with them. Loopback only.
Every run evaluates the 50 % rollout flag `half` for a different targeting key each request
(a SPLIT answer: bucketing included) and checks every answer, so errors are never measured.

Figures, from one run each; beside each HTTP figure, how busy the server's core was and the
requests per CPU-second it spent (its rate if it were the bottleneck):
- in-process: DictSource.evaluate() calls per second (no HTTP), for scale;
- httpx, 1 connection: sequential requests per second over one keep-alive connection;
- httpx, N connections: N keep-alive connections with a request each in flight;
- raw client, N connections: the same requests from a minimal asyncio HTTP/1.1 client, cheap
  enough to keep the server's core busy: the closest figure to the server's one-core rate;
- SDK + provider: OpenFeature client.get_boolean_details() per second (requests, one session).

Run by hand:

    .venv/bin/python bench/ofrep.py [--requests 2000] [--connections 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext as SdkContext
from starlette.applications import Starlette

from bot.dev.harness.ofrep_flags import FLAGS, DictSource
from bot.http.ofrep import PREFIX, ofrep_routes
from bot.http.server import BackgroundHTTPServer
from services.flags.types import EvaluationContext

REPO = Path(__file__).resolve().parents[1]

TOKEN = "bench-token-0123456789"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
WARM_UP = 200


async def serve() -> None:
    """Child process: serve until stdin closes; the port goes to stdout."""
    app = Starlette(routes=ofrep_routes(DictSource(FLAGS), TOKEN))
    server = BackgroundHTTPServer(app, "127.0.0.1", 0)
    await server.start()
    print(server.port, flush=True)
    await asyncio.to_thread(sys.stdin.read)
    await server.stop()


def in_process(count: int) -> float:
    source = DictSource(FLAGS)
    started = time.perf_counter()
    for i in range(count):
        assert source.evaluate("half", EvaluationContext(f"user-{i}")).error_code is None
    return count / (time.perf_counter() - started)


async def over_httpx(base: str, count: int, connections: int) -> None:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=base, headers=HEADERS, limits=limits) as http:

        async def worker(first: int) -> None:
            for i in range(first, count, connections):
                body = {"context": {"targetingKey": f"user-{i}"}}
                answer = await http.post(f"{PREFIX}/half", json=body)
                assert answer.status_code == 200 and answer.json()["reason"] == "SPLIT"

        await asyncio.gather(*(worker(c) for c in range(connections)))


async def over_raw(port: int, count: int, connections: int) -> None:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: cheap enough on the client
    side to keep the server's one core busy, which httpx alone does not."""

    async def worker(first: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in range(first, count, connections):
                body = b'{"context":{"targetingKey":"user-%d"}}' % i
                writer.write(
                    b"POST %s/half HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer %s\r\n"
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (PREFIX.encode(), TOKEN.encode(), len(body), body)
                )
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                answer = await reader.readexactly(length)
                assert head.startswith(b"HTTP/1.1 200") and b'"SPLIT"' in answer, head
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(worker(c) for c in range(connections)))


def over_sdk(base: str, count: int) -> None:
    provider = OFREPProvider(base, headers_factory=lambda: HEADERS)
    api.set_provider(provider, domain="bench")
    client = api.get_client(domain="bench")
    try:
        for i in range(count):
            details = client.get_boolean_details("half", False, SdkContext(f"user-{i}"))
            assert details.error_code is None and details.reason == "SPLIT", details
    finally:
        api.clear_providers()
        provider.session.close()


def measure(label: str, count: int, server: psutil.Process, run: Callable[[int], None]) -> None:
    """Warm up, then time `count` calls; the server's CPU seconds give its one-core rate."""
    run(WARM_UP)
    cpu_before, started = sum(server.cpu_times()[:2]), time.perf_counter()
    run(count)
    elapsed, cpu = time.perf_counter() - started, sum(server.cpu_times()[:2]) - cpu_before
    print(
        f"{label:<30}{count / elapsed:8.0f}/s   server core busy {cpu / elapsed:4.0%},"
        f" {count / cpu:6.0f} per server CPU-second"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--serve-on-cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_on_cpu is not None:
        os.sched_setaffinity(0, {args.serve_on_cpu})
        asyncio.run(serve())
        return
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpus = cpus[0], set(cpus[1:]) or {cpus[0]}
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve-on-cpu", str(server_cpu)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        base = f"http://127.0.0.1:{int(child.stdout.readline())}"
        server = psutil.Process(child.pid)
        os.sched_setaffinity(0, client_cpus)
        n, c = args.requests, args.connections
        print(f"server on CPU {server_cpu}, clients on CPUs {sorted(client_cpus)}; {n} per figure")
        print(f"{'in-process evaluations':<30}{in_process(n * 10):8.0f}/s")
        measure("httpx, 1 connection", n, server, lambda k: asyncio.run(over_httpx(base, k, 1)))
        measure(f"httpx, {c} connections", n, server, lambda k: asyncio.run(over_httpx(base, k, c)))
        port = int(base.rsplit(":", 1)[1])
        measure(
            f"raw client, {c} connections", n, server, lambda k: asyncio.run(over_raw(port, k, c))
        )
        measure("SDK + OFREP provider", n, server, lambda k: over_sdk(base, k))
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)


if __name__ == "__main__":
    main()
