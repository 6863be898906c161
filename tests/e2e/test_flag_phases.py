"""A flag's plan of phases, each with its own duration and criteria (seed 001), through the
real bot: evaluations served over OFREP let a phase go on, an error ratio read from the
service's metrics halts one, and a query asked of a real Prometheus halts another. The plan's
clock is the test's; the bot's own job checks every 0.1 s."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bot.dev.harness.prometheus import Prometheus, running_prometheus
from bot.dev.sandbox import SandboxClient
from bot.http.server import BackgroundHTTPServer
from tests.e2e.conftest import BOB, CAROL, DEPLOYS, OPS_TEXT, StartOpsgate
from tests.e2e.test_flags_chat import plan_message

API_TOKEN = "phases-e2e-token"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


class Counters:
    """The service's request counters, as its /metrics shows them."""

    def __init__(self) -> None:
        self.ok = 0
        self.errors = 0

    async def metrics(self, request: Request) -> PlainTextResponse:
        return PlainTextResponse(
            "# TYPE http_requests_total counter\n"
            f'http_requests_total{{code="200"}} {self.ok}\n'
            f'http_requests_total{{code="500"}} {self.errors}\n'
        )


@pytest.fixture
async def counters() -> AsyncIterator[tuple[Counters, str]]:
    served = Counters()
    server = BackgroundHTTPServer(
        Starlette(routes=[Route("/metrics", served.metrics)]), "127.0.0.1", 0
    )
    await server.start()
    yield served, f"http://127.0.0.1:{server.port}/metrics"
    await server.stop()


@pytest.fixture(scope="module")
def prometheus() -> Iterator[Prometheus]:
    with running_prometheus([]) as running:  # nothing scraped: the queries are constants
        yield running


async def test_each_phase_lasts_its_time_needs_its_evaluations_and_halts_on_its_criteria(
    start_opsgate: StartOpsgate,
    client: SandboxClient,
    ops_file: Path,
    counters: tuple[Counters, str],
    prometheus: Prometheus,
) -> None:
    service, metrics_url = counters
    ops_file.write_text(
        f"""
[bot]
plan_check_s = 0.1
[flags.checkout_v2]
[flags.checkout_v2.error_rate]
url = "{metrics_url}"
errors = "http_requests_total"
errors_match = {{ code = "5.." }}
total = "http_requests_total"
max_ratio = 0.5
[flags.checkout_v2.plan]
prometheus_url = "{prometheus.url}"
phases = [
  {{ percent = 5, duration = "10m", min_evaluations = 30 }},
  {{ percent = 25, duration = "2h", query = "vector(0.1)", query_max = 0.5 }},
  {{ percent = 50, duration = "4h", max_error_ratio = 0.02 }},
  {{ percent = 100 }},
]
[flags.search]
[flags.search.plan]
prometheus_url = "{prometheus.url}"
phases = [{{ percent = 10, duration = "1h", query = "vector(0.7)", query_max = 0.5 }},
          {{ percent = 100 }}]
"""
        + OPS_TEXT
    )
    clock = Clock()
    opsgate = await start_opsgate(api_token=API_TOKEN, clock=clock)
    started = await client.reply_after(CAROL, DEPLOYS, "/flag checkout_v2 plan")
    assert started.text == "🚩 checkout_v2 changed by carol:\n• rollout: 0% → 5%"
    shown = (await client.reply_after(BOB, DEPLOYS, "/flag checkout_v2")).text
    assert (
        "plan 5 (≥ 30 evaluations) 10m 0s → 25 (vector(0.1) ≤ 0.5) 2h 0m →"
        " 50 (errors ≤ 2.0%) 4h 0m → 100, active"
    ) in shown

    clock.now += timedelta(minutes=11)  # its time is up, but no one was served yet
    await client.wait_idle(quiet=1.0)
    flag = await opsgate.services.flags.get("checkout_v2")
    assert flag is not None and flag.rollout_percent == 5
    url = f"http://127.0.0.1:{opsgate.http_port}/ofrep/v1/evaluate/flags/checkout_v2"
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {API_TOKEN}"}) as http:
        for i in range(30):
            await http.post(url, json={"context": {"targetingKey": f"user-{i}"}})
    step = await client.wait_for(DEPLOYS, lambda ms: plan_message(ms, "step 2/4"))
    assert step.text == "📈 Plan for checkout_v2: step 2/4, now 25%."

    clock.now += timedelta(hours=2)  # vector(0.1) stays under 0.5: on to 50%
    step = await client.wait_for(DEPLOYS, lambda ms: plan_message(ms, "step 3/4"))
    assert step.text == "📈 Plan for checkout_v2: step 3/4, now 50%."

    service.ok, service.errors = 1000, 10  # 1% from here: within 2%
    await client.wait_idle(quiet=1.0)
    # 50 errors in 1,000 more: 5%, over the phase's 2% (and 3% if the 1% reading was missed)
    service.ok, service.errors = 1950, 60
    halted = await client.wait_for(
        DEPLOYS, lambda ms: plan_message(ms, "Plan for checkout_v2 halted")
    )
    assert "over 2%" in halted.text and "Rolled back to 25%." in halted.text

    await client.reply_after(CAROL, DEPLOYS, "/flag search plan")
    halted = await client.wait_for(DEPLOYS, lambda ms: plan_message(ms, "Plan for search halted"))
    assert "vector(0.7) = 0.7, over 0.5" in halted.text and "Rolled back to 0%." in halted.text


async def test_a_plan_the_ops_file_does_not_declare_is_said_so(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    ops_file.write_text("[flags.dark_mode]\n" + OPS_TEXT)
    await start_opsgate()
    reply = await client.reply_after(CAROL, DEPLOYS, "/flag dark_mode plan")
    assert reply.text == (
        "⚠️ dark_mode has no [flags.dark_mode.plan] in the ops file. Nothing was changed."
    )
    phased = await client.reply_after(CAROL, DEPLOYS, "/flag dark_mode plan 5:30m,25:2h,100")
    assert phased.text == "🚩 dark_mode changed by carol:\n• rollout: 0% → 5%"
    shown = (await client.reply_after(BOB, DEPLOYS, "/flag dark_mode")).text
    assert "plan 5 30m 0s → 25 2h 0m → 100, active" in shown
