"""Health checks: HTTP, TCP connect, command exit status and unit state; retries and streaks.

A check never raises because its target is unhealthy: refusals, timeouts and wrong answers all
become a `CheckResult` whose `reason` is short text for a chat message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import ClassVar, Protocol

import httpx

ACTIVE_STATES = frozenset({"active", "running"})  # systemd ActiveState, supervisord RUNNING
_REASON_MAX = 200


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    kind: str
    target: str
    latency_s: float
    reason: str
    at: datetime
    attempts: int = 1


class CommandOutcome(Protocol):
    """The part of the host runner's CommandResult that a command check reads."""

    @property
    def exit_status(self) -> int: ...
    @property
    def stderr(self) -> str: ...
    @property
    def timed_out(self) -> bool: ...


class CommandRunner(Protocol):
    """What a command check needs of services.hosts.Host (which has more optional arguments)."""

    @property
    def name(self) -> str: ...
    async def run(self, argv: Sequence[str], *, timeout: float = 30.0) -> CommandOutcome: ...


def seconds(value: float) -> str:  # 6.2 s or 0.31 s: short, yet fine for sub-second limits
    return f"{value:.1f} s" if value >= 1 else f"{value:.2g} s"


class HealthCheck(ABC):
    """What a service's configured check becomes. Subclasses write `probe()`; `run()` times it
    and turns timeouts and socket errors into reasons."""

    kind: ClassVar[str]
    cannot: ClassVar[str] = "cannot connect"  # how an OSError reads: "cannot connect: ..."
    grace_s: ClassVar[float] = 0.0  # extra time when the probe enforces timeout_s itself
    timeout_s: float

    @property
    @abstractmethod
    def target(self) -> str: ...

    @abstractmethod
    async def probe(self) -> str | None:
        """None when healthy, else why not."""

    async def run(self) -> CheckResult:
        at, start = datetime.now(UTC), time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s + self.grace_s):
                reason = await self.probe()
        except TimeoutError:  # before OSError: TimeoutError is one of its subclasses
            reason = f"no answer within {self.timeout_s:g} s"
        except ConnectionRefusedError:
            reason = "connection refused"
        except OSError as exc:
            reason = f"{self.cannot}: {exc.strerror or exc}"
        latency = time.monotonic() - start
        text = (reason or "ok")[:_REASON_MAX]
        return CheckResult(reason is None, self.kind, self.target, latency, text, at)


@dataclass(frozen=True)
class HttpCheck(HealthCheck):
    """GET `url`; healthy on the expected status, top-level JSON fields and latency."""

    client: httpx.AsyncClient
    url: str
    expect_status: int = 200
    expect_json: Mapping[str, object] | None = None
    latency_limit_s: float | None = None
    timeout_s: float = 5.0
    kind: ClassVar[str] = "http"

    @property
    def target(self) -> str:
        url = httpx.URL(self.url)
        return str(url.copy_with(userinfo=b"")) if url.userinfo else self.url  # no passwords

    async def probe(self) -> str | None:
        start = time.monotonic()
        try:
            response = await self.client.get(self.url, timeout=self.timeout_s)
        except httpx.TimeoutException:
            return f"no answer within {self.timeout_s:g} s"
        except httpx.HTTPError as exc:
            return _transport_reason(exc)
        latency = time.monotonic() - start
        if response.status_code != self.expect_status:
            return f"HTTP {response.status_code}, expected {self.expect_status}"
        mismatch = self._json_mismatch(response)
        if mismatch is None and self.latency_limit_s is not None and latency > self.latency_limit_s:
            return f"slow: {seconds(latency)} > {self.latency_limit_s:g} s"
        return mismatch

    def _json_mismatch(self, response: httpx.Response) -> str | None:
        if not self.expect_json:
            return None
        try:
            body = response.json()
        except ValueError:  # covers JSONDecodeError and undecodable bytes
            return "body is not JSON"
        if not isinstance(body, dict):
            return "body is not a JSON object"
        for key, want in self.expect_json.items():
            if key not in body:
                return f"{key} missing from body"
            if body[key] != want:
                return f"{key} is {_short(body[key])}, expected {_short(want)}"
        return None


@dataclass(frozen=True)
class TcpCheck(HealthCheck):
    """Healthy when a TCP connection opens; it is closed again at once."""

    host: str
    port: int
    timeout_s: float = 5.0
    kind: ClassVar[str] = "tcp"

    @property
    def target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def probe(self) -> str | None:
        _, writer = await asyncio.open_connection(self.host, self.port)
        writer.close()
        with contextlib.suppress(OSError):  # a reset after connecting still means it listens
            await writer.wait_closed()
        return None


@dataclass(frozen=True)
class CommandCheck(HealthCheck):
    """Runs argv on a host; healthy on exit status 0 within the timeout."""

    runner: CommandRunner
    argv: Sequence[str]
    timeout_s: float = 30.0
    kind: ClassVar[str] = "command"
    cannot: ClassVar[str] = "cannot run"
    grace_s: ClassVar[float] = 10.0  # the runner stops the command at timeout_s and reaps it

    def __post_init__(self) -> None:
        if isinstance(self.argv, str) or not self.argv:  # a str would run letter by letter
            raise ValueError("argv must be a non-empty list of arguments")

    @property
    def target(self) -> str:
        return f"{self.runner.name}: {shlex.join(self.argv)}"  # display only, never run

    async def probe(self) -> str | None:
        outcome = await self.runner.run(self.argv, timeout=self.timeout_s)
        if outcome.timed_out:
            return f"timed out after {self.timeout_s:g} s"
        if (status := outcome.exit_status) == 0:
            return None
        reason = f"killed by signal {-status}" if status < 0 else f"exit {status}"
        last = next((s for s in map(str.strip, reversed(outcome.stderr.splitlines())) if s), "")
        return f"{reason}: {last}" if last else reason


@dataclass(frozen=True)
class UnitCheck(HealthCheck):
    """Asks the caller's systemd/supervisord layer: `state()` returns True/False or the state
    word it read ("active" and "RUNNING" are healthy, any other word is the reason)."""

    unit: str
    state: Callable[[], Awaitable[bool | str]]
    timeout_s: float = 10.0
    kind: ClassVar[str] = "unit"
    cannot: ClassVar[str] = "cannot query"

    @property
    def target(self) -> str:
        return self.unit

    async def probe(self) -> str | None:
        state = await self.state()
        if state is True or (isinstance(state, str) and state.lower() in ACTIVE_STATES):
            return None
        return "not active" if state is False else f"state is {state or 'unknown'}"


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    interval_s: float = 1.0
    backoff: float = 1.0  # each wait is the previous one times this

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.interval_s < 0 or self.backoff < 1:
            raise ValueError(f"invalid retry policy: {self}")

    def delay(self, failed_attempt: int) -> float:  # after the n-th failure, from 1
        return self.interval_s * self.backoff ** (failed_attempt - 1)


async def check_with_retry(check: HealthCheck, policy: RetryPolicy) -> CheckResult:
    """Runs until healthy or out of attempts; the last result says how many it took."""
    attempt = 1
    result = await check.run()
    while not result.ok and attempt < policy.attempts:
        await asyncio.sleep(policy.delay(attempt))
        attempt += 1
        result = await check.run()
    return replace(result, attempts=attempt)


@dataclass(frozen=True)
class HealthWait:
    ok: bool
    checks: int
    streak: int  # healthy results in a row at the end
    elapsed_s: float
    results: tuple[CheckResult, ...]

    @property
    def last(self) -> CheckResult | None:
        return self.results[-1] if self.results else None

    @property
    def latencies(self) -> tuple[float, ...]:
        return tuple(result.latency_s for result in self.results)


async def wait_until_healthy(
    check: HealthCheck, consecutive: int, within_s: float, interval_s: float
) -> HealthWait:
    """Healthy `consecutive` times in a row before `within_s` runs out; a failure resets the
    streak. A check still running at the deadline is cancelled: the streak must end in time."""
    if consecutive < 1 or within_s <= 0 or interval_s < 0:
        raise ValueError("consecutive >= 1, within_s > 0 and interval_s >= 0 are needed")
    loop = asyncio.get_running_loop()
    start = loop.time()
    results: list[CheckResult] = []
    streak = 0
    deadline = asyncio.timeout_at(start + within_s)
    try:
        async with deadline:
            while streak < consecutive:
                if results:
                    await asyncio.sleep(interval_s)
                results.append(await check.run())
                streak = streak + 1 if results[-1].ok else 0
    except TimeoutError:
        if not deadline.expired():
            raise
    ok = streak >= consecutive
    return HealthWait(ok, len(results), streak, loop.time() - start, tuple(results))


def _transport_reason(exc: httpx.HTTPError) -> str:
    """httpx wraps the socket error a few layers deep; the root cause is the useful part."""
    cause: BaseException | None = exc
    root: OSError | None = None
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        root = cause if isinstance(cause, OSError) else root
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect: {root.strerror or root if root else exc}"
    return f"request failed: {type(exc).__name__}"  # e.g. the server hung up mid-answer


def _short(value: object) -> str:
    return json.dumps(value, default=str)[:40]  # a long value would swamp the chat message
