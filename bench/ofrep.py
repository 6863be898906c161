"""OFREP throughput: single-flag evaluations over HTTP on one server core, with p50 and p99.

The server runs in a child process pinned to one CPU: uvicorn (bot/http/server.py) serving a
LiveFlagSource, the class opsgate serves OFREP from (a real FlagStore on SQLite in a temporary
directory, the evaluation counting included), with one flag `half` at 50 %. The load generator
runs pinned to the other CPU, so the server's core is not shared with it. Loopback only.

Generator: `wrk` (Debian's package) when installed, run as `taskset -c <cpu> wrk -t1 -c<N>
-d<s>s --latency -s <script>`; the script posts `{"context":{"targetingKey":"user-<n>"}}` with
n counting up (a SPLIT answer each time, bucketing included) and counts every answer that is not
a 200 with "SPLIT" in it; a run with any such answer fails. Without wrk, a minimal asyncio
HTTP/1.1 client on keep-alive connections (the same requests, checked the same way), pinned to
the other CPU with sched_setaffinity; it is slower than wrk, so its figures are lower bounds.

Server stacks:
- routes: Starlette(routes=ofrep_routes(...)) on uvicorn, with each of its HTTP/1.1 parsers
  (h11, pure Python; httptools, the C parser uvicorn uses when it is installed): every request
  through an ASGI cycle and Starlette's middleware, router and request/response wrappers
  (opsgate before the fast path);
- fast:   the same app served with the fast path's protocol (bot/http/ofrep_fast.py), as
  bot/runner.py serves it: single-flag POSTs answered by the HTTP parser, no ASGI cycle;
- empty:  uvicorn (httptools) with an ASGI app that reads the request and writes a fixed
  answer: the ceiling of any ASGI app on uvicorn on the asyncio loop;
- asyncio: a minimal asyncio server writing the same fixed answer per request, no HTTP parsing
  (MinimalServer): what the machine's loopback and one core allow at all.
Machines differ a lot (a shared VM's core ran the same Python 2 to 3x slower from one hour to
the next), so compare the stacks with these references and with each other in the same run.

Rounds are interleaved: each round runs every stack once for `--seconds`, after one warm-up
run each; the table gives medians over the rounds of requests/s, p50 and p99 latency, and how
busy the server's core was (its requests per CPU-second: its rate were it the bottleneck).
Run by hand:

    .venv/bin/python bench/ofrep.py [--seconds 5] [--rounds 3] [--connections 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from bot.http.ofrep import PREFIX, ofrep_routes
from bot.http.ofrep_fast import ofrep_protocol
from bot.http.server import BackgroundHTTPServer
from config.opsfile import parse_ops_text
from services.flags.serving import LiveFlagSource
from services.flags.store import FlagStore
from services.records.audit import AuditLog
from services.records.storage import Storage

TOKEN = "bench-token-0123456789"
STACKS = [("routes", "h11"), ("routes", "httptools"), ("fast", "httptools")]
STACKS += [("empty", "httptools"), ("asyncio", "-")]  # references: see serve()

WRK_SCRIPT = """
local n = 0
bad = 0
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer %(token)s"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  local body = '{"context":{"targetingKey":"user-' .. n .. '"}}'
  return wrk.format(nil, "%(path)s", nil, body)
end
response = function(status, headers, body)
  if status ~= 200 or not string.find(body, '"SPLIT"', 1, true) then bad = bad + 1 end
end
local threads = {}
setup = function(thread) table.insert(threads, thread) end
done = function(summary, latency, requests)
  local wrong = 0
  for _, thread in ipairs(threads) do wrong = wrong + thread:get("bad") end
  io.write(string.format("RESULT %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), wrong + summary.errors.status))
end
"""


@dataclass
class Run:
    per_second: float
    p50_ms: float
    p99_ms: float
    busy: float  # share of the server's core used
    per_cpu_second: float


class MinimalServer(asyncio.Protocol):
    """The reference: a fixed 200 SPLIT answer per request head, no parsing, no evaluation.
    What one core of this machine can answer over loopback; no Python server does better."""

    ANSWER = (
        b"HTTP/1.1 200 OK\r\ncontent-length: 73\r\ncontent-type: application/json\r\n\r\n"
        b'{"key":"half","value":true,"reason":"SPLIT","variant":"on","metadata":{}}'
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(self.ANSWER * data.count(b"\r\n\r\n"))


async def empty_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The reference ASGI app: reads the request, answers MinimalServer's fixed answer."""
    if scope["type"] == "http":
        await receive()
        head, _, body = MinimalServer.ANSWER.partition(b"\r\n\r\n")
        headers = [tuple(line.split(b": ")) for line in head.split(b"\r\n")[1:]]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def serve(stack: str, http: str) -> None:
    """Child process: serve until stdin closes; the port goes to stdout."""
    if stack == "empty":
        server = BackgroundHTTPServer(empty_app, "127.0.0.1", 0, http=http)  # type: ignore[arg-type]
        await server.start()
        print(server.port, flush=True)
        await asyncio.to_thread(sys.stdin.read)
        await server.stop()
        return
    if stack == "asyncio":
        server = await asyncio.get_running_loop().create_server(MinimalServer, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.to_thread(sys.stdin.read)
        server.close()
        return
    with tempfile.TemporaryDirectory() as tmp:
        async with Storage(Path(tmp) / "flags.db") as storage:
            store = FlagStore(storage, AuditLog(storage))
            await store.load()
            await store.create("half", "bench", "bench")
            await store.set_enabled("half", True, "bench")
            await store.set_rollout("half", 50.0, "bench")
            ops = parse_ops_text("")
            source = LiveFlagSource(store, lambda: ops)
            app = Starlette(routes=ofrep_routes(source, TOKEN))
            protocol = ofrep_protocol(source, TOKEN) if stack == "fast" else http
            server = BackgroundHTTPServer(app, "127.0.0.1", 0, http=protocol)  # type: ignore[arg-type]
            await server.start()
            print(server.port, flush=True)
            await asyncio.to_thread(sys.stdin.read)
            await server.stop()


def over_wrk(port: int, seconds: float, connections: int, cpu: int, script: Path) -> Run:
    command = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s"]
    command += ["--latency", "-s", str(script), f"http://127.0.0.1:{port}"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    fields = next(line for line in out.splitlines() if line.startswith("RESULT")).split()
    requests, duration_us, p50_us, p99_us, wrong = (int(f) for f in fields[1:])
    assert wrong == 0, f"{wrong} answers were not a 200 SPLIT:\n{out}"
    return Run(requests / (duration_us / 1e6), p50_us / 1000, p99_us / 1000, 0, 0)


async def over_raw(port: int, seconds: float, connections: int) -> Run:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams, each answer checked."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(first: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = first
        try:
            while time.perf_counter() < deadline:
                body = b'{"context":{"targetingKey":"user-%d"}}' % i
                i += connections
                sent = time.perf_counter()
                writer.write(
                    b"POST %s/half HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer %s\r\n"
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (PREFIX.encode(), TOKEN.encode(), len(body), body)
                )
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                answer = await reader.readexactly(length)
                latencies.append(time.perf_counter() - sent)
                assert head.startswith(b"HTTP/1.1 200") and b'"SPLIT"' in answer, head
        finally:
            writer.close()
            await writer.wait_closed()

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    return Run(len(latencies) / elapsed, p50 * 1000, p99 * 1000, 0, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--raw", action="store_true", help="the asyncio client even with wrk")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)  # cpu, stack, http
    args = parser.parse_args()
    if args.serve is not None:
        os.sched_setaffinity(0, {int(args.serve[0])})
        asyncio.run(serve(args.serve[1], args.serve[2]))
        return
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = cpus[0], cpus[-1]
    use_wrk = shutil.which("wrk") is not None and not args.raw
    generator = "wrk -t1" if use_wrk else "asyncio raw client"
    c, seconds = args.connections, args.seconds
    print(f"server on CPU {server_cpu}, {generator} on CPU {client_cpu}, {c} connections")
    print(f"{args.rounds} interleaved rounds of {seconds:g} s per stack; medians\n")
    children: dict[tuple[str, str], subprocess.Popen[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "ofrep.lua"
        script.write_text(WRK_SCRIPT % {"token": TOKEN, "path": f"{PREFIX}/half"})
        try:
            for stack, http in STACKS:
                children[(stack, http)] = subprocess.Popen(
                    [sys.executable, __file__, "--serve", str(server_cpu), stack, http],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            ports = {}
            for key, child in children.items():
                assert child.stdout is not None
                ports[key] = int(child.stdout.readline())
            os.sched_setaffinity(0, {client_cpu})

            def one(key: tuple[str, str], length: float) -> Run:
                server = psutil.Process(children[key].pid)
                cpu_before, started = sum(server.cpu_times()[:2]), time.perf_counter()
                if use_wrk:
                    run = over_wrk(ports[key], length, c, client_cpu, script)
                else:
                    run = asyncio.run(over_raw(ports[key], length, c))
                elapsed = time.perf_counter() - started
                cpu = sum(server.cpu_times()[:2]) - cpu_before
                run.busy = cpu / elapsed
                run.per_cpu_second = run.per_second * elapsed / cpu if cpu else 0.0
                return run

            for key in STACKS:
                one(key, 1.0)  # warm-up
            runs: dict[tuple[str, str], list[Run]] = {key: [] for key in STACKS}
            for r in range(args.rounds):
                order = STACKS[r % len(STACKS) :] + STACKS[: r % len(STACKS)]
                for key in order:
                    runs[key].append(one(key, seconds))
        finally:
            for child in children.values():
                assert child.stdin is not None
                child.stdin.close()
            for child in children.values():
                child.wait(timeout=30)

    header = f"{'stack':<8}{'parser':<11}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
    print(f"{header}{'core busy':>11}{'req/CPU-s':>11}{'  req/s per round'}")
    for stack, http in STACKS:
        got = runs[(stack, http)]

        def median(field: str, got: list[Run] = got) -> float:
            return statistics.median(getattr(run, field) for run in got)

        rounds = " ".join(f"{run.per_second:,.0f}" for run in got)
        print(
            f"{stack:<8}{http:<11}{median('per_second'):>9,.0f}{median('p50_ms'):>9.2f}"
            f"{median('p99_ms'):>9.2f}{median('busy'):>11.0%}{median('per_cpu_second'):>11,.0f}"
            f"  {rounds}"
        )


if __name__ == "__main__":
    main()
