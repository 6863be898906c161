"""Health checks against real servers, sockets and processes on loopback."""

from __future__ import annotations

import asyncio
import shlex
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import httpx
import pytest

from services.control.health import (
    CommandCheck,
    HealthCheck,
    HttpCheck,
    RetryPolicy,
    TcpCheck,
    UnitCheck,
    check_with_retry,
    wait_until_healthy,
)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b'{"status": "healthy", "version": "1.2.3"}'
    delay_s: float = 0.0


BAD = Reply(500, b'{"status": "down"}')


class Script:
    """Answers each HTTP request with the next reply; the last one repeats."""

    def __init__(self, replies: Sequence[Reply]) -> None:
        self.replies, self.requests, self.url = replies, 0, ""
        self.handlers: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            await reader.readuntil(b"\r\n\r\n")
            reply = self.replies[min(self.requests, len(self.replies) - 1)]
            self.requests += 1
            await asyncio.sleep(reply.delay_s)
            head = (
                f"HTTP/1.1 {reply.status} Scripted\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(reply.body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + reply.body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client gave up first, as the timeout tests make it
        finally:
            writer.close()
            self.handlers.discard(task)


Serve = Callable[..., Awaitable[Script]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Starts real HTTP/1.1 servers on 127.0.0.1 that answer from a script."""
    started: list[tuple[asyncio.Server, Script]] = []

    async def start(*replies: Reply) -> Script:
        script = Script(replies)
        server = await asyncio.start_server(script.handle, "127.0.0.1", 0)
        script.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/health"
        started.append((server, script))
        return script

    yield start
    for server, script in started:
        server.close()
        for task in script.handlers:  # a slow reply may still be sleeping
            task.cancel()
        await asyncio.gather(*script.handlers, return_exceptions=True)
        await server.wait_closed()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as shared:  # no proxy from the environment
        yield shared


async def test_http_healthy(serve: Serve, client: httpx.AsyncClient) -> None:
    server = await serve(Reply())
    check = HttpCheck(client, server.url, expect_json={"status": "healthy"}, latency_limit_s=5)
    result = await check.run()
    assert result.ok and result.reason == "ok"
    assert result.kind == "http" and result.target == server.url
    assert result.latency_s > 0 and result.attempts == 1 and server.requests == 1
    other = await HttpCheck(client, server.url, expect_status=204).run()
    assert (other.ok, other.reason) == (False, "HTTP 200, expected 204")
    secret = HttpCheck(client, "https://ops:s3cret@example.test:8443/health?deep=1")
    assert secret.target == "https://example.test:8443/health?deep=1"  # no password in chat


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (BAD, "HTTP 500, expected 200"),
        (Reply(body=b'{"status": "degraded"}'), 'status is "degraded", expected "healthy"'),
        (Reply(body=b'{"version": "1"}'), "status missing from body"),
        (Reply(body=b"<html>OK</html>"), "body is not JSON"),
        (Reply(body=b'["healthy"]'), "body is not a JSON object"),
    ],
)
async def test_http_unhealthy_answers(
    serve: Serve, client: httpx.AsyncClient, reply: Reply, reason: str
) -> None:
    server = await serve(reply)
    result = await HttpCheck(client, server.url, expect_json={"status": "healthy"}).run()
    assert (result.ok, result.reason) == (False, reason)


async def test_http_slow_answer_beyond_latency_limit(
    serve: Serve, client: httpx.AsyncClient
) -> None:
    server = await serve(Reply(delay_s=0.3))
    result = await HttpCheck(client, server.url, latency_limit_s=0.1).run()
    assert not result.ok
    assert result.reason.startswith("slow: 0.") and result.reason.endswith(" s > 0.1 s")
    assert result.latency_s >= 0.3


async def test_http_no_answer_within_timeout(serve: Serve, client: httpx.AsyncClient) -> None:
    server = await serve(Reply(delay_s=30))
    result = await HttpCheck(client, server.url, timeout_s=0.2).run()
    assert (result.ok, result.reason) == (False, "no answer within 0.2 s")


async def test_tcp_listener_and_closed_port(client: httpx.AsyncClient) -> None:
    with socket.socket() as sock:  # bound, then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        closed_port = int(sock.getsockname()[1])
    listener = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = int(listener.sockets[0].getsockname()[1])
    async with listener:
        result = await TcpCheck("127.0.0.1", port).run()
    assert (result.ok, result.kind, result.target) == (True, "tcp", f"127.0.0.1:{port}")
    http = HttpCheck(client, f"http://127.0.0.1:{closed_port}/")
    for refused in (await TcpCheck("127.0.0.1", closed_port).run(), await http.run()):
        assert (refused.ok, refused.reason) == (False, "connection refused")


async def test_tcp_no_connection_within_timeout() -> None:
    with socket.socket() as listener:  # never accepts; once its backlog is full, connects hang
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        held: list[asyncio.StreamWriter] = []
        for _ in range(8):  # Linux queues backlog + 1; fill it until a connect hangs
            try:
                async with asyncio.timeout(0.2):
                    held.append((await asyncio.open_connection("127.0.0.1", port))[1])
            except TimeoutError:
                break
        result = await TcpCheck("127.0.0.1", port, timeout_s=0.2).run()
        for writer in held:
            writer.close()
    assert (result.ok, result.reason) == (False, "no answer within 0.2 s")


@dataclass(frozen=True)
class Outcome:
    exit_status: int
    stderr: str
    timed_out: bool


class LocalRunner:
    """The smallest host runner: an asyncio subprocess from argv, killed on timeout."""

    name = "testbox"

    async def run(self, argv: Sequence[str], *, timeout: float = 30.0) -> Outcome:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        try:
            _, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            _, err = await proc.communicate()
            return Outcome(-9, err.decode(), timed_out=True)
        assert proc.returncode is not None
        return Outcome(proc.returncode, err.decode(), timed_out=False)


@pytest.mark.parametrize(
    ("argv", "ok", "reason"),
    [
        (["true"], True, "ok"),
        (["false"], False, "exit 1"),
        (["sh", "-c", "echo first >&2; echo oops >&2; echo; exit 3"], False, "exit 3: oops"),
        ([sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"], False, "killed by signal 9"),
        (["sleep", "30"], False, "timed out after 0.3 s"),
        (["/nonexistent/opsgate-probe"], False, "cannot run: No such file or directory"),
    ],
)
async def test_command_exit_status(argv: list[str], ok: bool, reason: str) -> None:
    # Only `sleep` is meant to time out: a loaded machine may take over 0.3 s to start Python.
    timeout_s = 0.3 if argv[0] == "sleep" else 10.0
    result = await CommandCheck(LocalRunner(), argv, timeout_s=timeout_s).run()
    assert (result.ok, result.kind, result.reason) == (ok, "command", reason)
    assert result.target == "testbox: " + shlex.join(argv)


@pytest.mark.parametrize("argv", ["true", []])
async def test_command_argv_must_be_a_list(argv: str | list[str]) -> None:
    with pytest.raises(ValueError, match="non-empty list"):
        CommandCheck(LocalRunner(), argv)


def answers(state: bool | str, delay_s: float = 0.0) -> Callable[[], Awaitable[bool | str]]:
    async def probe() -> bool | str:
        await asyncio.sleep(delay_s)
        return state

    return probe


@pytest.mark.parametrize(
    ("state", "ok", "reason"),
    [
        (True, True, "ok"),
        ("active", True, "ok"),
        ("RUNNING", True, "ok"),
        (False, False, "not active"),
        ("failed", False, "state is failed"),
        ("", False, "state is unknown"),
    ],
)
async def test_unit_state(state: bool | str, ok: bool, reason: str) -> None:
    result = await UnitCheck("web.service", answers(state)).run()
    assert (result.ok, result.reason) == (ok, reason)
    assert (result.kind, result.target) == ("unit", "web.service")


async def test_unit_probe_that_hangs() -> None:
    result = await UnitCheck("web.service", answers(True, delay_s=30), timeout_s=0.1).run()
    assert (result.ok, result.reason) == (False, "no answer within 0.1 s")


async def test_retry_succeeds_on_third_attempt(serve: Serve, client: httpx.AsyncClient) -> None:
    server = await serve(BAD, BAD, Reply())
    result = await check_with_retry(HttpCheck(client, server.url), RetryPolicy(5, 0.01))
    assert (result.ok, result.attempts, server.requests) == (True, 3, 3)


async def test_retry_gives_up_with_the_last_result(serve: Serve, client: httpx.AsyncClient) -> None:
    server = await serve(BAD, Reply(503))
    result = await check_with_retry(HttpCheck(client, server.url), RetryPolicy(3, 0.01, 2))
    assert (result.ok, result.attempts, result.reason) == (False, 3, "HTTP 503, expected 200")
    assert server.requests == 3


def test_retry_policy_backoff_and_validation() -> None:
    assert [RetryPolicy(4, 0.5, 2).delay(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    for attempts, interval_s, backoff in ((0, 1, 1), (3, -1, 1), (3, 1, 0.5)):
        with pytest.raises(ValueError, match="invalid retry policy"):
            RetryPolicy(attempts, interval_s, backoff)


async def test_wait_needs_an_unbroken_streak(serve: Serve, client: httpx.AsyncClient) -> None:
    ok, bad = Reply(), BAD
    server = await serve(ok, bad, ok, ok, bad, ok, ok, ok, bad)
    check: HealthCheck = HttpCheck(client, server.url)
    wait = await wait_until_healthy(check, consecutive=3, within_s=10, interval_s=0.01)
    assert (wait.ok, wait.checks, wait.streak, server.requests) == (True, 8, 3, 8)
    assert [r.ok for r in wait.results] == [True, False, True, True, False, True, True, True]
    assert len(wait.latencies) == 8 and all(latency > 0 for latency in wait.latencies)
    assert wait.last is not None and wait.last.ok and wait.elapsed_s > 0


async def test_wait_runs_out_of_time(serve: Serve, client: httpx.AsyncClient) -> None:
    server = await serve(Reply(), BAD)
    wait = await wait_until_healthy(HttpCheck(client, server.url), 3, within_s=0.4, interval_s=0.05)
    assert (wait.ok, wait.streak) == (False, 0)
    assert server.requests >= wait.checks >= 2 and wait.elapsed_s >= 0.39
    assert wait.last is not None and wait.last.reason == "HTTP 500, expected 200"


async def test_wait_cancels_a_check_still_running_at_the_deadline(
    serve: Serve, client: httpx.AsyncClient
) -> None:
    server = await serve(Reply(delay_s=30))
    wait = await wait_until_healthy(HttpCheck(client, server.url, timeout_s=20), 1, 0.2, 0.01)
    assert (wait.ok, wait.checks, wait.last, wait.latencies) == (False, 0, None, ())
