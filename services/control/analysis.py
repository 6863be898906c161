"""Canary analysis: the same window, both versions, side by side, against the limits.

    source = "prometheus"   four PromQL queries per side (requests, errors, p95, memory)
    source = "nginx"        the proxy's access log: which upstream answered, its status and
                            time (log_format opsgate_canary
                            '$msec|$upstream_addr|$status|$upstream_response_time'),
                            read incrementally

`judge` is pure: a verdict says which metric breached, its value and the limit, or that the
canary saw too little traffic to be judged (never a pass).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Protocol

import httpx

from config.canary import Analysis, RelativeLimit
from services.control.traffic import Color
from services.errors import OpsgateError


class QueryRejected(OpsgateError):
    """Prometheus refused a query (bad PromQL, unknown function): nothing can be judged."""


class SourceUnavailable(OpsgateError):
    """The numbers could not be read this time (Prometheus down, log unreadable)."""


@dataclass(frozen=True)
class SideSample:
    requests: float
    errors: float
    latency_p95_s: float | None
    memory_mib: float | None

    @property
    def error_ratio(self) -> float | None:
        return self.errors / self.requests if self.requests > 0 else None


@dataclass(frozen=True)
class Check:
    metric: str  # "errors", "p95", "memory"
    canary: float
    stable: float | None
    limit: float
    ok: bool

    def describe(self) -> str:
        value, limit = (
            format_metric(self.metric, self.canary),
            format_metric(self.metric, self.limit),
        )
        return f"{self.metric} {value} > limit {limit}"


@dataclass(frozen=True)
class Verdict:
    canary: SideSample
    stable: SideSample
    checks: tuple[Check, ...]
    enough_traffic: bool
    min_requests: int

    @property
    def breach(self) -> Check | None:
        return next((check for check in self.checks if not check.ok), None)

    @property
    def word(self) -> str:
        if self.breach is not None:
            return "breach"
        return "pass" if self.enough_traffic else "thin"

    def numbers(self) -> dict[str, object]:
        return {
            "canary": asdict(self.canary),
            "stable": asdict(self.stable),
            "checks": [asdict(check) for check in self.checks],
            "enough_traffic": self.enough_traffic,
        }


def format_metric(metric: str, value: float | None) -> str:
    if value is None:
        return "–"
    if metric == "errors":
        return f"{value * 100:.1f}%"
    if metric == "p95":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
    return f"{value:.0f} MiB"


def _limit(
    absolute: float | None, relative: RelativeLimit | None, stable: float | None
) -> float | None:
    limits = [absolute] if absolute is not None else []
    if relative is not None and stable is not None:
        limits.append(relative.limit(stable))
    return min(limits) if limits else None


def judge(canary: SideSample, stable: SideSample, analysis: Analysis) -> Verdict:
    """Every configured limit, on what the canary showed in the window. With fewer than
    min_requests on the canary, only memory (which needs no traffic) can breach: a ratio or a
    percentile of a handful of requests is noise, and a thin window is never a pass.

    A limit relative to stable needs stable's traffic too: with stable thin (its scrapes not
    yet in the window, say), only the absolute limits apply and the window is not a pass."""
    canary_enough = canary.requests >= analysis.min_requests
    stable_enough = stable.requests >= analysis.min_requests
    compares = analysis.errors_vs_stable is not None or analysis.latency_vs_stable is not None
    enough = canary_enough and (stable_enough or not compares)
    stable_errors, stable_p95 = (
        (stable.error_ratio, stable.latency_p95_s) if stable_enough else (None, None)
    )
    checks: list[Check] = []
    for metric, value, base, absolute, relative in (
        ("errors", canary.error_ratio, stable_errors, analysis.max_error_ratio,
         analysis.errors_vs_stable),
        ("p95", canary.latency_p95_s, stable_p95, analysis.max_latency_p95_s,
         analysis.latency_vs_stable),
        ("memory", canary.memory_mib, stable.memory_mib, analysis.max_memory_mib,
         analysis.memory_vs_stable),
    ):  # fmt: skip
        limit = _limit(absolute, relative, base)
        if value is None or limit is None:
            continue
        if metric != "memory" and not canary_enough:
            continue
        checks.append(Check(metric, value, base, limit, value <= limit))
    return Verdict(canary, stable, tuple(checks), enough, analysis.min_requests)


class Source(Protocol):
    async def sample(self, color: Color, port: int, window_s: float) -> SideSample:
        """The side's numbers over the last `window_s` seconds."""
        ...

    async def validate(self, color: Color, port: int) -> None:
        """Raise QueryRejected when the source cannot answer for this service at all."""
        ...


def window_text(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"


class PrometheusSource:
    def __init__(self, http: httpx.AsyncClient, analysis: Analysis) -> None:
        assert analysis.prometheus_url is not None
        self._http = http
        self._analysis = analysis
        self._url = str(analysis.prometheus_url).rstrip("/") + "/api/v1/query"

    def expression(self, query: str, color: Color, port: int, window_s: float) -> str:
        instance = self._analysis.instance.replace("{port}", str(port)).replace("{color}", color)
        return (
            query.replace("{instance}", instance)
            .replace("{window}", window_text(window_s))
            .replace("{color}", color)
            .replace("{port}", str(port))
        )

    async def _value(self, query: str, color: Color, port: int, window_s: float) -> float | None:
        expression = self.expression(query, color, port, window_s)
        try:
            response = await self._http.get(
                self._url, params={"query": expression}, timeout=self._analysis.timeout_s
            )
        except httpx.HTTPError as exc:
            raise SourceUnavailable(f"Prometheus did not answer: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code in (400, 422):
            raise QueryRejected(
                f"Prometheus rejected {expression!r}: {body.get('error', response.text[:200])}"
            )
        if response.status_code != 200 or body.get("status") != "success":
            raise SourceUnavailable(f"Prometheus answered {response.status_code}")
        result = body["data"]["result"]
        if body["data"].get("resultType") == "scalar":
            value = float(result[1])
        elif not result:
            return None
        else:
            value = float(result[0]["value"][1])
        return None if math.isnan(value) or math.isinf(value) else value

    async def sample(self, color: Color, port: int, window_s: float) -> SideSample:
        queries = self._analysis.queries
        requests, errors, latency, memory = await asyncio.gather(
            self._value(queries.requests, color, port, window_s),
            self._value(queries.errors, color, port, window_s),
            self._value(queries.latency_p95_s, color, port, window_s),
            self._value(queries.memory_mib, color, port, window_s),
        )
        return SideSample(requests or 0.0, errors or 0.0, latency, memory)

    async def validate(self, color: Color, port: int) -> None:
        await self.sample(color, port, self._analysis.window_s)


@dataclass(frozen=True)
class _Line:
    at: float
    upstream: str
    status: int
    seconds: float


class NginxLogSource:
    """Reads the access log from where it stopped; keeps the last window's lines."""

    def __init__(self, analysis: Analysis) -> None:
        assert analysis.access_log is not None
        self._path = analysis.access_log
        self._analysis = analysis
        self._offset: int | None = None
        self._inode: int | None = None
        self._lines: deque[_Line] = deque()

    def _address(self, port: int, color: Color) -> str:
        return self._analysis.instance.replace("{port}", str(port)).replace("{color}", color)

    def _read(self) -> None:
        try:
            stat = os.stat(self._path)
        except OSError as exc:
            raise SourceUnavailable(f"cannot read {self._path}: {exc.strerror}") from exc
        if self._inode != stat.st_ino or (self._offset or 0) > stat.st_size:
            self._inode, self._offset = stat.st_ino, None  # rotated or new: from its start
        with open(self._path, "rb") as log:
            if self._offset is None:
                # The first read: only what is recent matters; older lines are skipped cheaply.
                log.seek(max(0, stat.st_size - 4_000_000))
                if log.tell() > 0:
                    log.readline()
            else:
                log.seek(self._offset)
            data = log.read()
            complete = data.rfind(b"\n") + 1  # a half-written last line waits for the next read
            self._offset = log.tell() - (len(data) - complete)
        for raw in data[:complete].splitlines():
            parsed = _parse(raw.decode(errors="replace"))
            if parsed is not None:
                self._lines.append(parsed)
        now = time.time()
        while self._lines and self._lines[0].at < now - self._analysis.window_s:
            self._lines.popleft()

    async def sample(self, color: Color, port: int, window_s: float) -> SideSample:
        self._read()
        address = self._address(port, color)
        since = time.time() - window_s
        mine = [line for line in self._lines if line.upstream == address and line.at >= since]
        seconds = sorted(line.seconds for line in mine)
        p95 = seconds[max(0, math.ceil(len(seconds) * 0.95) - 1)] if seconds else None
        errors = sum(1 for line in mine if line.status >= 500)
        return SideSample(float(len(mine)), float(errors), p95, None)

    async def validate(self, color: Color, port: int) -> None:
        try:
            self._read()
        except SourceUnavailable as exc:
            raise QueryRejected(str(exc)) from exc


def _parse(text: str) -> _Line | None:
    """'1700000000.123|127.0.0.1:8101|200|0.004'. A retried request lists every upstream it
    tried ("a, b") and their times: the last one answered."""
    parts = text.split("|")
    if len(parts) != 4:
        return None
    try:
        at, status = float(parts[0]), int(parts[2])
        seconds = float(parts[3].split(",")[-1].strip())
    except ValueError:
        return None
    return _Line(at, parts[1].split(",")[-1].strip(), status, seconds)


def source_for(analysis: Analysis, http: httpx.AsyncClient) -> Source:
    if analysis.source == "nginx":
        return NginxLogSource(analysis)
    return PrometheusSource(http, analysis)


def side_by_side(verdict: Verdict) -> Mapping[str, str]:
    """canary vs stable per metric, for the card."""
    rows: dict[str, str] = {}
    c, s = verdict.canary, verdict.stable
    rows["errors"] = (
        f"{format_metric('errors', c.error_ratio)} vs {format_metric('errors', s.error_ratio)}"
    )
    rows["p95"] = (
        f"{format_metric('p95', c.latency_p95_s)} vs {format_metric('p95', s.latency_p95_s)}"
    )
    if c.memory_mib is not None or s.memory_mib is not None:
        rows["memory"] = (
            f"{format_metric('memory', c.memory_mib)} vs {format_metric('memory', s.memory_mib)}"
        )
    return rows
