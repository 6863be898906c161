"""The plan gate against a real metrics endpoint on loopback and a real (missing) unit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bot.http.server import BackgroundHTTPServer
from config.opsfile import OpsConfig, parse_ops_text
from services.control.controller import ServiceController
from services.flags.gates import FlagGate, sum_samples
from services.hosts.registry import Hosts

METRICS = """# TYPE http_requests_total counter
http_requests_total{{code="200"}} {ok}
http_requests_total{{code="500"}} {err5}
http_requests_total{{code="404"}} 7
"""


class Counters:
    def __init__(self) -> None:
        self.ok, self.err5 = 0, 0

    def text(self) -> str:
        return METRICS.format(ok=self.ok, err5=self.err5)


@pytest.fixture
async def metrics() -> AsyncIterator[tuple[Counters, int]]:
    counters = Counters()

    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse(counters.text())

    server = BackgroundHTTPServer(Starlette(routes=[Route("/metrics", endpoint)]), "127.0.0.1", 0)
    await server.start()
    yield counters, server.port
    await server.stop()


def ops_with(port: int) -> OpsConfig:
    return parse_ops_text(
        f"""
[environments.production]
[services.web]
environment = "production"
unit = "t-gate-missing.service"
[flags.checkout]
[flags.checkout.error_rate]
url = "http://127.0.0.1:{port}/metrics"
errors = "http_requests_total"
errors_match = {{ code = "5.." }}
total = "http_requests_total"
max_ratio = 0.05
[flags.guarded]
service = "web"
[flags.free]
"""
    )


def test_sum_samples_with_label_regex() -> None:
    text = METRICS.format(ok=90, err5=10)
    assert sum_samples(text, "http_requests_total") == 107
    assert sum_samples(text, "http_requests_total", {"code": "5.."}) == 10
    assert sum_samples(text, "nope") == 0


async def test_error_rate_gate_uses_the_change_between_checks(
    metrics: tuple[Counters, int],
) -> None:
    counters, port = metrics
    ops = ops_with(port)
    async with httpx.AsyncClient() as http:
        controller = ServiceController(ops, Hosts(), http)
        gate = FlagGate(lambda: ops, lambda: controller, http)
        counters.ok, counters.err5 = 1000, 500  # history before the plan: not held against it
        assert (await gate("checkout")).ok
        counters.ok, counters.err5 = 1096, 504  # 4 of 100 new requests failed: under 5%
        assert (await gate("checkout")).ok
        counters.ok, counters.err5 = 1186, 514  # 10 of 100: over
        verdict = await gate("checkout")
        assert not verdict.ok
        assert verdict.reason == "error rate 10.0% over 5% (10/100)"
        assert (await gate("free")).ok
        guarded = await gate("guarded")  # its unit does not exist here
        assert not guarded.ok and guarded.reason.startswith("web")


async def test_unreadable_metrics_hold_the_plan() -> None:
    ops = ops_with(1)  # nothing listens on port 1
    async with httpx.AsyncClient() as http:
        gate = FlagGate(lambda: ops, lambda: ServiceController(ops, Hosts(), http), http)
        verdict = await gate("checkout")
    assert not verdict.ok and verdict.reason.startswith("metrics unreadable")
