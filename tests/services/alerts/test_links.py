"""Links and templates of an alert group: only http(s) URLs with a plain host; Alertmanager's
silence page with the shared labels as matchers; templates filled from the shared labels and
annotations, never evaluated."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from services.alerts.links import (
    Link,
    alert_links,
    details,
    fill_template,
    safe_url,
    silence_link,
)
from services.alerts.model import Alert, AlertGroup, AlertStatus

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
AM = "http://127.0.0.1:9093/"


def alert(
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
    *,
    source: str = "alertmanager",
    status: AlertStatus = AlertStatus.FIRING,
) -> Alert:
    return Alert(
        "fp-" + "-".join(sorted(labels.values())),
        1,
        {"alertname": "DiskFull", "severity": "warning", **labels},
        annotations or {},
        source,
        status,
        NOW,
        None,
        NOW,
        NOW,
    )


def group(*alerts: Alert, labels: Mapping[str, str] | None = None) -> AlertGroup:
    return AlertGroup(1, "k", labels or {}, -100, 0, None, None, None, 0, None, None, alerts)


@pytest.mark.parametrize(
    "url",
    [
        "https://wiki.example.com/runbooks/disk#full",
        "http://grafana:3000/d/abc?var-host=a&from=now-1h",
        "http://10.0.0.5:9090/graph?g0.expr=up%3D%3D0",
        "HTTPS://Example.com/",
        "http://[::1]:9093/#/alerts",
    ],
)
def test_http_urls_are_kept(url: str) -> None:
    assert safe_url(f" {url} ") == url


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript://example.com/%0aalert(1)",
        "data:text/html,<b>x</b>",
        "ftp://example.com/file",
        "//example.com/x",
        "/runbooks/disk",
        "http://",
        "http://user:pw@example.com/",
        "http://exa mple.com/",
        'http://example.com/"onmouseover="x',
        "http://example.com:99999/",
        "http://example.com:port/",
        "http://-bad-.com/",
        "http://example.com/a\nb",
        "https://example.com/" + "a" * 1100,
        "",
    ],
)
def test_other_urls_are_dropped(url: str) -> None:
    assert safe_url(url) is None


def test_links_come_from_annotations_deduplicated_and_only_valid() -> None:
    first = alert(
        {"host": "a"},
        {
            "runbook_url": "https://wiki/disk",
            "dashboard": "javascript:alert(1)",
            "generatorURL": "http://prometheus:9090/graph",
        },
    )
    second = alert(
        {"host": "b"},
        {"runbook_url": "https://wiki/disk", "dashboard_url": "https://grafana/d/1"},
    )
    assert alert_links(group(first, second)) == [
        Link("📖 Runbook", "https://wiki/disk"),
        Link("📊 Dashboard", "https://grafana/d/1"),
        Link("📈 Source", "http://prometheus:9090/graph"),
    ]


def test_a_resolved_group_keeps_its_links_from_all_alerts() -> None:
    done = alert({}, {"runbook_url": "https://wiki/disk"}, status=AlertStatus.RESOLVED)
    assert alert_links(group(done)) == [Link("📖 Runbook", "https://wiki/disk")]


def test_silence_link_has_the_shared_labels_as_matchers() -> None:
    a = alert({"service": "web", "host": "a", "note": 'say "hi"\\'})
    b = alert({"service": "web", "host": "b", "note": 'say "hi"\\'})
    link = silence_link(group(a, b), AM)
    assert link is not None and link.label == "🔕 Silence in Alertmanager"
    parts = urlsplit(link.url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "http://127.0.0.1:9093/"
    assert parts.fragment.startswith("/silences/new?filter=%7B")
    [matchers] = parse_qs(parts.fragment.split("?", 1)[1])["filter"]
    assert matchers == (
        '{alertname="DiskFull", note="say \\"hi\\"\\\\", service="web", severity="warning"}'
    )


def test_no_silence_link_for_other_sources_or_a_resolved_group() -> None:
    assert silence_link(group(alert({}, source="generic")), AM) is None
    assert silence_link(group(alert({}, status=AlertStatus.RESOLVED)), AM) is None
    assert silence_link(group(alert({})), "javascript:alert(1)") is None


def test_template_fills_shared_values_and_leaves_the_rest_empty() -> None:
    a = alert({"service": "<b>web</b>", "host": "a"}, {"summary": "disk 95%"})
    b = alert({"service": "<b>web</b>", "host": "b"}, {"summary": "disk 97%"})
    template = "{severity}/{status}: {labels.service} {labels.host}{annotations.summary} {{ok}}"
    # Plain text: the chat side escapes all of it (the <b> stays a literal).
    assert fill_template(template, group(a, b)) == "warning/firing: <b>web</b>  {ok}"
    assert fill_template("{status}", group(alert({}, status=AlertStatus.RESOLVED))) == "resolved"


def test_template_values_are_never_evaluated() -> None:
    evil = alert({"service": "{labels.alertname} {0.__class__}"})
    assert fill_template("{labels.service}", group(evil)) == "{labels.alertname} {0.__class__}"


def test_group_labels_fill_the_template_too() -> None:
    a = alert({"service": "web"})
    assert fill_template("{labels.team}", group(a, labels={"team": "core"})) == "core"


def test_details_is_the_shared_description_when_lines_show_summaries() -> None:
    both = {"summary": "disk full", "description": "/var is at 99%"}
    assert details(group(alert({}, both))) == "/var is at 99%"
    # Without a summary the alert's own line already shows the description.
    assert details(group(alert({}, {"description": "/var is at 99%"}))) == ""
