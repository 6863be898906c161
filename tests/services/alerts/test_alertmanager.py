"""AlertmanagerClient and the plan gate against a real Alertmanager on loopback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from bot.dev.harness.alertmanager import Alertmanager
from config.opsfile import parse_ops_text
from services.alerts.alertmanager import AlertmanagerClient, AlertmanagerUnavailable
from services.control.controller import ServiceController
from services.flags.gates import FlagGate
from services.hosts.registry import Hosts


async def post_alert(
    http: httpx.AsyncClient, am: Alertmanager, labels: dict[str, str], resolved: bool = False
) -> None:
    now = datetime.now(UTC)
    alert: dict[str, object] = {
        "labels": labels,
        "annotations": {"summary": "test"},
        "startsAt": (now - timedelta(minutes=1)).isoformat(),
    }
    if resolved:
        alert["endsAt"] = now.isoformat()
    response = await http.post(f"{am.url}/api/v2/alerts", json=[alert])
    response.raise_for_status()


async def test_firing_matches_labels_exactly(alertmanager: Alertmanager) -> None:
    tricky = 'we"b\\1'
    async with httpx.AsyncClient() as http:
        client = AlertmanagerClient(http, alertmanager.url)
        labels = {"alertname": "T1", "service": tricky, "severity": "critical"}
        await post_alert(http, alertmanager, labels)
        await post_alert(http, alertmanager, labels | {"alertname": "T2", "severity": "warning"})
        found = await client.firing({"service": tricky, "severity": "critical"})
        assert [a.name for a in found] == ["T1"]
        assert found[0].summary == "test"
        assert await client.firing({"service": "other", "severity": "critical"}) == []
        await post_alert(http, alertmanager, labels, resolved=True)
        assert await client.firing({"service": tricky, "severity": "critical"}) == []


async def test_unreachable_alertmanager_is_an_error() -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(AlertmanagerUnavailable, match="cannot ask Alertmanager"):
            await AlertmanagerClient(http, "http://127.0.0.1:9").firing({"a": "b"})


async def test_a_critical_alert_holds_the_plan(alertmanager: Alertmanager) -> None:
    ops = parse_ops_text(
        f"""
[alertmanager]
url = "{alertmanager.url}"
[environments.production]
[services.api]
environment = "production"
unit = "t-gate-missing.service"
[flags.checkout]
service = "api"
"""
    )
    async with httpx.AsyncClient() as http:
        gate = FlagGate(lambda: ops, lambda: ServiceController(ops, Hosts(), http), http)
        quiet = await gate("checkout")
        assert quiet.reason.startswith("api")  # no alert: the service check speaks instead
        labels = {"alertname": "ApiDown", "service": "api", "severity": "critical"}
        await post_alert(http, alertmanager, labels)
        held = await gate("checkout")
        assert not held.ok and held.reason == "critical alert firing for api: ApiDown"
        await post_alert(http, alertmanager, labels, resolved=True)
