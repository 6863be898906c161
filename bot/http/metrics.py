"""GET /metrics in Prometheus' text format: deployments and their durations, approval waits,
alerts, the outbox, outgoing webhooks, chat API errors, and the DORA figures, all read from
the database at scrape time (prometheus-client renders them); flag evaluations served over
OFREP, counted in memory by the flag source; the process' own memory, CPU and file
descriptors (`process_*`), the Python version, and `opsgate_build_info`.

prometheus_client is imported on the first scrape, not at start-up: a bot nobody scrapes
does not carry it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from starlette.responses import Response

from services.container import VERSION, Services
from services.reports.dora import DoraReport

if TYPE_CHECKING:
    from prometheus_client.core import Metric

DORA_WINDOW_DAYS = 30
# prometheus_client's CONTENT_TYPE_LATEST (a test checks they agree), without importing it.
CONTENT_TYPE = "text/plain; version=1.0.0; charset=utf-8"


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


async def collect(services: Services) -> list[Metric]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

    db = services.storage.db
    metrics: list[Metric] = []
    total = CounterMetricFamily(
        "opsgate_deployments", "Finished deployments", labels=["service", "kind", "result"]
    )
    for service, kind, state, count in await db.execute_fetchall(
        "SELECT service, kind, state, count(*) FROM deployments WHERE dry_run = 0"
        " AND finished_at IS NOT NULL GROUP BY service, kind, state"
    ):
        total.add_metric([service, kind, state], count)
    metrics.append(total)
    for kind, name in (("deploy", "deploy"), ("rollback", "rollback")):
        summary = SummaryMetricFamily(
            f"opsgate_{name}_duration_seconds",
            f"Request to the end of a {name}",
            labels=["service"],
        )
        by_service: dict[str, list[float]] = {}
        for service, created, finished in await db.execute_fetchall(
            "SELECT service, created_at, finished_at FROM deployments WHERE kind = ?"
            " AND dry_run = 0 AND finished_at IS NOT NULL AND state != 'cancelled'",
            (kind,),
        ):
            by_service.setdefault(service, []).append(_seconds(created, finished))
        for service, values in sorted(by_service.items()):
            summary.add_metric([service], len(values), sum(values))
        metrics.append(summary)
    waits = [
        _seconds(created, ended)
        for created, ended in await db.execute_fetchall(
            "SELECT created_at, ended_at FROM approval_requests WHERE status = 'approved'"
        )
    ]
    approval = SummaryMetricFamily("opsgate_approval_wait_seconds", "Sign-off request to approval")
    approval.add_metric([], len(waits), sum(waits))
    metrics.append(approval)
    alerts = GaugeMetricFamily(
        "opsgate_alerts", "Alerts known, by severity and state", labels=["severity", "status"]
    )
    for severity, status, count in await db.execute_fetchall(
        "SELECT coalesce(json_extract(labels, '$.severity'), 'warning'), status, count(*)"
        " FROM alerts GROUP BY 1, 2"
    ):
        alerts.add_metric([severity, status], count)
    metrics.append(alerts)
    outbox = GaugeMetricFamily(
        "opsgate_outbox_messages", "Alert outbox rows by state", labels=["state"]
    )
    for state, count in await db.execute_fetchall(
        "SELECT state, count(*) FROM alert_outbox GROUP BY state"
    ):
        outbox.add_metric([state], count)
    metrics.append(outbox)
    metrics += await _webhooks(services)
    errors = CounterMetricFamily("opsgate_telegram_api_errors", "Failed Bot API calls")
    errors.add_metric([], services.runtime.chat_api_errors)
    metrics.append(errors)
    metrics += await _dora(services)
    served = CounterMetricFamily(
        "opsgate_flag_evaluations",
        "Flag evaluations served over OFREP since start, by flag, variant and reason",
        labels=["flag", "variant", "reason"],
    )
    for (flag, variant, reason), count in sorted(services.flag_source.tally.totals().items()):
        served.add_metric([flag, variant, reason], count)
    metrics.append(served)
    build = GaugeMetricFamily(
        "opsgate_build_info",
        "The running opsgate's version, and its Python optimization level; always 1",
        labels=["version", "python_optimize"],
    )
    # 2 when `opsgate run` restarted itself on the precompiled optimized bytecode (bot/launch.py)
    build.add_metric([VERSION, str(sys.flags.optimize)], 1)
    metrics.append(build)
    return metrics


async def _webhooks(services: Services) -> list[Metric]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    deliveries = CounterMetricFamily(
        "opsgate_webhook_deliveries",
        "Outgoing webhook attempts by result: delivered, failed (retried or not), gave_up",
        labels=["subscription", "result"],
    )
    pending = GaugeMetricFamily(
        "opsgate_webhook_pending",
        "Outgoing webhook events not yet delivered",
        labels=["subscription"],
    )
    failing = GaugeMetricFamily(
        "opsgate_webhook_failing", "1 when the last attempt failed", labels=["subscription"]
    )
    for hook in await services.webhooks.status():
        deliveries.add_metric([hook.name, "delivered"], hook.delivered)
        deliveries.add_metric([hook.name, "failed"], hook.failed)
        deliveries.add_metric([hook.name, "gave_up"], hook.gave_up_total)
        pending.add_metric([hook.name], hook.pending)
        failing.add_metric([hook.name], int(hook.failing))
    return [deliveries, pending, failing]


async def _dora(services: Services) -> list[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    figures = await DoraReport(services.storage, services.clock).figures(DORA_WINDOW_DAYS)
    families = {
        "deployments_per_day": GaugeMetricFamily(
            "opsgate_dora_deployments_per_day",
            f"Successful deploys per day over {DORA_WINDOW_DAYS} days",
            labels=["service"],
        ),
        "lead_time_s": GaugeMetricFamily(
            "opsgate_dora_lead_time_seconds", "Median request -> success", labels=["service"]
        ),
        "change_failure_rate": GaugeMetricFamily(
            "opsgate_dora_change_failure_rate", "Failed changes / changes", labels=["service"]
        ),
        "time_to_restore_s": GaugeMetricFamily(
            "opsgate_dora_time_to_restore_seconds",
            "Median failure -> healthy again",
            labels=["service"],
        ),
    }
    for figure in figures:
        for field, family in families.items():
            value = getattr(figure, field)
            if value is not None:
                family.add_metric([figure.service], float(value))
    return list(families.values())


async def metrics_endpoint(services: Services) -> bytes:
    from prometheus_client import (
        CollectorRegistry,
        PlatformCollector,
        ProcessCollector,
        generate_latest,
    )
    from prometheus_client.registry import Collector

    metrics = await collect(services)

    class Snapshot(Collector):  # the figures read above, rendered with the rest
        def collect(self) -> Iterator[Metric]:
            yield from metrics

    registry = CollectorRegistry()
    registry.register(Snapshot())
    ProcessCollector(registry=registry)  # process_*: memory, CPU, open fds, start time
    PlatformCollector(registry=registry)  # python_info
    return generate_latest(registry)


def metrics_response(body: bytes) -> Response:
    return Response(body, media_type=CONTENT_TYPE)
