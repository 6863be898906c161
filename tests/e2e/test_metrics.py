"""/metrics scraped by a real Prometheus, and /health, on a running opsgate whose deployment
history the test writes through its own services with a clock it moves: each DORA gauge read back
through Prometheus' HTTP API equals the figure worked out by hand below."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bot.dev.harness.prometheus import query, running_prometheus, value, wait_for_value
from bot.runner import Opsgate
from services.deploy.deployments import DeploymentState
from tests.e2e.conftest import StartOpsgate
from tests.services.reports.test_dora import Clock, History

S = DeploymentState
HOUR = 3600


async def write_history(opsgate: Opsgate, clock: Clock) -> None:
    """web: 3 changes (v3 rolled back by opsgate, v4 undone by /rollback), worker: 4 changes
    (v2's rollback failed too); plus what is not a change, and one deploy still in flight."""
    h = History(opsgate.services.deployments, clock)
    await h.deploy("web", "v2", lead=1800)
    await h.deploy("worker", "v1", lead=240)
    clock.tick(HOUR)
    await h.failed("web", "v3", fail_after=600, restore=300)  # request -> end: 900 s
    await h.failed("worker", "v2", fail_after=60, restore=100, end=S.ROLLBACK_FAILED)
    clock.tick(HOUR)
    await h.deploy("web", "v4", lead=600)
    await h.deploy("worker", "v3", lead=360)
    clock.tick(HOUR)
    await h.rollback("web", to="v2", leaving="v4", duration=120)
    await h.deploy("worker", "v4", lead=480)
    await h.not_changes("web")  # two dry runs, two drills, a cancel, a 60 s early failure
    await h.in_flight("web", "v5")
    clock.tick(HOUR)


# Worked out by hand from write_history (DORA over the 30-day window).
DORA = {
    "opsgate_dora_deployments_per_day": {"web": 2 / 30, "worker": 3 / 30, "all": 5 / 30},
    # web: 1800, 600; worker: 240, 360, 480; all five.
    "opsgate_dora_lead_time_seconds": {"web": 1200.0, "worker": 360.0, "all": 480.0},
    # web: v3 and v4 of 3; worker: v2 of 4; all: 3 of 7.
    "opsgate_dora_change_failure_rate": {"web": 2 / 3, "worker": 1 / 4, "all": 3 / 7},
    # web: 300 (v3's failure -> rolled back), 120 (the /rollback); worker: none restored.
    "opsgate_dora_time_to_restore_seconds": {"web": 210.0, "all": 210.0},
}
FINISHED = {
    ("web", "deploy", "succeeded"): 2,
    ("web", "deploy", "rolled_back"): 1,
    ("web", "deploy", "cancelled"): 1,
    ("web", "deploy", "failed"): 1,  # before switching: finished at once
    ("web", "rollback", "succeeded"): 1,
    ("web", "drill", "succeeded"): 1,
    ("web", "drill", "rolled_back"): 1,
    ("worker", "deploy", "succeeded"): 3,
    ("worker", "deploy", "rollback_failed"): 1,
}
DURATIONS = {  # (count, sum) of request -> end; cancelled and dry runs left out
    ("opsgate_deploy_duration_seconds", "web"): (4, 1800 + 900 + 600 + 60),
    ("opsgate_deploy_duration_seconds", "worker"): (4, 240 + 160 + 360 + 480),
    ("opsgate_rollback_duration_seconds", "web"): (1, 120),
}


def settled(promql: str) -> str:
    """The last scraped value of a selector: with a 1 s scrape interval (and so a 1 s scrape
    timeout) one slow /metrics on a loaded machine marks every series stale for a moment; the
    figures themselves do not change."""
    return f"last_over_time({promql}[1m])"


async def by_service(url: str, promql: str) -> dict[str, float]:
    return {s["metric"]["service"]: value(s) for s in await query(url, settled(promql))}


async def single(url: str, promql: str) -> float:
    samples = await query(url, settled(promql))
    assert len(samples) == 1, (promql, samples)
    return value(samples[0])


async def test_prometheus_scrapes_the_dora_figures_of_a_history(
    start_opsgate: StartOpsgate,
) -> None:
    clock = Clock(datetime.now(UTC) - timedelta(days=2))
    started = clock()
    opsgate = await start_opsgate(clock=clock)
    await write_history(opsgate, clock)
    target = f"127.0.0.1:{opsgate.http_port}"

    async with httpx.AsyncClient(base_url=f"http://{target}", timeout=10) as http:
        for _ in range(100):  # the first getMe runs 0.5 s after start
            health = await http.get("/health")
            if health.json()["telegram"]["reachable"] is not None:
                break
            await asyncio.sleep(0.05)
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "healthy" and body["database_writable"] is True
    assert isinstance(body["uptime"], float) and 0 < body["uptime"] < 600
    assert body["open_deployments"] == 1  # web's v5
    assert body["plans_active"] == []
    telegram = body["telegram"]
    assert set(telegram) == {"reachable", "checked_at", "api_errors", "calls_pending"}
    assert telegram["reachable"] is True and telegram["api_errors"] == 0
    assert started <= datetime.fromisoformat(telegram["checked_at"]) <= clock()

    with running_prometheus([target]) as prometheus:
        up = await wait_for_value(prometheus.url, 'up{job="opsgate"} == 1')
        assert [s["metric"]["instance"] for s in up] == [target]
        await wait_for_value(prometheus.url, "opsgate_dora_lead_time_seconds")
        for name, expected in DORA.items():
            assert await by_service(prometheus.url, name) == expected, name
        totals = {
            (s["metric"]["service"], s["metric"]["kind"], s["metric"]["result"]): value(s)
            for s in await query(prometheus.url, settled("opsgate_deployments_total"))
        }
        assert totals == FINISHED
        for (name, service), (count, total) in DURATIONS.items():
            selector = f'{{service="{service}"}}'
            assert await single(prometheus.url, f"{name}_count{selector}") == count
            assert await single(prometheus.url, f"{name}_sum{selector}") == total
        assert await single(prometheus.url, "opsgate_telegram_api_errors_total") == 0


async def test_time_to_restore_with_the_clock_opsgate_is_given(
    start_opsgate: StartOpsgate,
) -> None:
    clock = Clock(datetime.now(UTC) - timedelta(days=1))
    opsgate = await start_opsgate(clock=clock)
    await History(opsgate.services.deployments, clock).failed(
        "web", "v3", fail_after=600, restore=300
    )
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"http://127.0.0.1:{opsgate.http_port}/metrics")).text
    restore = {
        sample.labels["service"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "opsgate_dora_time_to_restore_seconds"
        for sample in family.samples
    }
    assert restore == {"web": 300.0, "all": 300.0}
