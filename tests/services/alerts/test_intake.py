"""Webhook bodies into IncomingAlerts: Alertmanager's version 4 payload as Alertmanager 0.25
sends it, the generic shape, the refusals (each naming where the body went wrong), the
fingerprint and silence matchers."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.alerts.intake import PayloadError, parse_alertmanager, parse_generic
from services.alerts.model import (
    MAX_LABELS,
    MAX_VALUE,
    AlertStatus,
    Matcher,
    MatcherError,
    fingerprint,
    parse_matchers,
)

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
ZERO = "0001-01-01T00:00:00Z"
MAX_ALERTS = 1000

API_DOWN = {"alertname": "ApiDown", "severity": "critical", "service": "web"}
DISK_FULL = {"alertname": "DiskFull", "severity": "warning", "service": "worker", "host": "a"}


def am_alert(
    labels: dict[str, str],
    status: str = "firing",
    starts: str = "2026-03-02T09:58:01.123456789Z",  # Go's RFC3339Nano, as Alertmanager sends
    ends: str = ZERO,
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": dict(labels),
        "annotations": {"summary": f"{labels['alertname']} summary"},
        "startsAt": starts,
        "endsAt": ends,
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0",
        "fingerprint": "c2fbd6a1a4b3e1f0",
    }


def am_body(alerts: list[dict[str, Any]], status: str = "firing") -> dict[str, Any]:
    """The whole webhook body (version 4) with every field Alertmanager 0.25 sends."""
    return {
        "version": "4",
        "status": status,
        "receiver": "hook",
        "groupKey": '{}:{alertname="ApiDown"}',
        "truncatedAlerts": 0,
        "groupLabels": {"alertname": "ApiDown"},
        "commonLabels": {"alertname": "ApiDown"},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": alerts,
    }


def four_alerts() -> dict[str, Any]:
    names = ("A", "B", "C", "D")
    return am_body([am_alert({"alertname": n, "service": "web"}) for n in names])


# -- Alertmanager ----------------------------------------------------------------------------


def test_alertmanager_firing_and_resolved_alerts_are_parsed() -> None:
    body = am_body(
        [
            am_alert(API_DOWN),
            am_alert(
                DISK_FULL,
                status="resolved",
                starts="2026-03-02T09:00:00Z",
                ends="2026-03-02T11:30:00+02:00",  # an offset: turned into UTC
            ),
        ]
    )
    # Through JSON and back, so the body is exactly what the HTTP side would hand over.
    firing, resolved = parse_alertmanager(json.loads(json.dumps(body)), NOW, MAX_ALERTS)

    assert dict(firing.labels) == API_DOWN
    assert dict(firing.annotations) == {  # generatorURL is kept as an annotation
        "summary": "ApiDown summary",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0",
    }
    assert firing.status is AlertStatus.FIRING
    assert firing.starts_at == datetime(2026, 3, 2, 9, 58, 1, 123456, tzinfo=UTC)
    assert firing.ends_at is None  # the zero time while firing means "no end"
    assert firing.source == "alertmanager"

    assert dict(resolved.labels) == DISK_FULL
    assert resolved.status is AlertStatus.RESOLVED
    assert resolved.starts_at == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert resolved.ends_at == datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    assert resolved.ends_at.tzinfo is not None and resolved.ends_at.utcoffset() == timedelta(0)


def test_alertmanager_without_annotations_or_times_is_accepted() -> None:
    raw = am_alert(API_DOWN)
    del raw["annotations"], raw["startsAt"], raw["endsAt"], raw["generatorURL"]
    [alert] = parse_alertmanager(am_body([raw]), NOW, MAX_ALERTS)
    assert dict(alert.annotations) == {}
    assert alert.starts_at == NOW  # no start given: when it arrived
    assert alert.ends_at is None


def test_alertmanager_empty_alert_list_is_nothing() -> None:
    assert parse_alertmanager(am_body([]), NOW, MAX_ALERTS) == []


def test_alertmanager_limits_are_inclusive() -> None:
    labels = {"alertname": "Many", **{f"l{i}": "v" for i in range(MAX_LABELS - 1)}}
    raw = am_alert(labels)
    raw["annotations"] = {"summary": "x" * MAX_VALUE}
    [alert] = parse_alertmanager(am_body([raw]), NOW, MAX_ALERTS)
    assert len(alert.labels) == MAX_LABELS
    body = four_alerts()
    assert len(parse_alertmanager(body, NOW, 4)) == 4


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    """A change to one field of four_alerts(): `alerts.2.startsAt` style paths."""

    def change(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = body
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value

    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = body
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        del target[last]

    return change


TOO_MANY_LABELS = {"alertname": "X", **{f"l{i}": "v" for i in range(MAX_LABELS)}}

REFUSALS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("version 3", _set("version", "3"), "unsupported webhook version '3'"),
    ("version as a number", _set("version", 4), "unsupported webhook version '4'"),
    ("no version", _drop("version"), "unsupported webhook version 'None'"),
    ("alerts an object", _set("alerts", {"0": {}}), "alerts: expected a list"),
    ("alerts missing", _drop("alerts"), "alerts: expected a list"),
    ("an alert is a string", _set("alerts.1", "ApiDown"), "alerts[1]: expected an object"),
    (
        "no alertname",
        _set("alerts.3.labels", {"service": "web"}),
        "alerts[3].labels: an alert needs an alertname label",
    ),
    ("labels missing", _drop("alerts.2.labels"), "alerts[2].labels: expected an object"),
    ("labels a list", _set("alerts.0.labels", ["alertname"]), "alerts[0].labels: expected"),
    (
        "a number as a label value",
        _set("alerts.1.labels.severity", 2),
        "alerts[1].labels.severity: expected a string",
    ),
    (
        "null as a label value",
        _set("alerts.0.labels.service", None),
        "alerts[0].labels.service: expected a string",
    ),
    (
        "a label name with a dash",
        _set("alerts.2.labels.bad-name", "x"),
        "alerts[2].labels: 'bad-name' is not a label name",
    ),
    (
        "a label name starting with a digit",
        _set("alerts.0.labels.1abc", "x"),
        "alerts[0].labels: '1abc' is not a label name",
    ),
    (
        "too many labels",
        _set("alerts.3.labels", TOO_MANY_LABELS),
        f"alerts[3].labels: more than {MAX_LABELS} entries",
    ),
    (
        "a label value too long",
        _set("alerts.0.labels.service", "w" * (MAX_VALUE + 1)),
        f"alerts[0].labels.service: expected a string of at most {MAX_VALUE}",
    ),
    (
        "an annotation that is not a string",
        _set("alerts.1.annotations", {"summary": ["a"]}),
        "alerts[1].annotations.summary: expected a string",
    ),
    (
        "a naive start",
        _set("alerts.2.startsAt", "2026-03-02T09:58:01"),
        "alerts[2].startsAt: a time needs its offset",
    ),
    (
        "a naive end",
        _set("alerts.1.endsAt", "2026-03-02T09:58:01.5"),
        "alerts[1].endsAt: a time needs its offset",
    ),
    (
        "not a time",
        _set("alerts.0.endsAt", "yesterday"),
        "alerts[0].endsAt: 'yesterday' is not an RFC 3339 time",
    ),
    (
        "a number as a time",
        _set("alerts.0.startsAt", 1700000000),
        "alerts[0].startsAt: expected an RFC 3339 time",
    ),
    (
        "an unknown status",
        _set("alerts.3.status", "pending"),
        "alerts[3].status: expected firing or resolved",
    ),
]


@pytest.mark.parametrize(
    ("change", "reason"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_alertmanager_refusals_name_the_path(
    change: Callable[[dict[str, Any]], None], reason: str
) -> None:
    body = four_alerts()
    assert len(parse_alertmanager(copy.deepcopy(body), NOW, MAX_ALERTS)) == 4  # valid before
    change(body)
    with pytest.raises(PayloadError) as refused:
        parse_alertmanager(body, NOW, MAX_ALERTS)
    assert reason in str(refused.value)


@pytest.mark.parametrize("body", [[], "alerts", None, 4], ids=["list", "str", "null", "int"])
def test_alertmanager_body_must_be_an_object(body: object) -> None:
    with pytest.raises(PayloadError, match="expected Alertmanager's webhook object"):
        parse_alertmanager(body, NOW, MAX_ALERTS)


def test_alertmanager_groups_are_taken_whole_whatever_the_generic_cap() -> None:
    # Alertmanager sends a group in one request and takes a refusal as final.
    assert len(parse_alertmanager(four_alerts(), NOW, 3)) == 4


# -- generic ---------------------------------------------------------------------------------


def test_generic_one_alert_object_is_the_whole_body() -> None:
    [alert] = parse_generic(
        {"labels": DISK_FULL, "annotations": {"summary": "92%"}}, NOW, MAX_ALERTS
    )
    assert dict(alert.labels) == DISK_FULL
    assert dict(alert.annotations) == {"summary": "92%"}
    assert alert.status is AlertStatus.FIRING  # the default
    assert alert.starts_at == NOW
    assert alert.ends_at is None
    assert alert.source == "generic"


def test_generic_alert_list() -> None:
    body = {
        "alerts": [
            {"labels": API_DOWN, "startsAt": "2026-03-02T09:00:00Z"},
            {"labels": DISK_FULL, "status": "resolved", "endsAt": "2026-03-02T09:59:00Z"},
        ]
    }
    firing, resolved = parse_generic(body, NOW, MAX_ALERTS)
    assert (firing.status, firing.starts_at) == (
        AlertStatus.FIRING,
        datetime(2026, 3, 2, 9, tzinfo=UTC),
    )
    assert resolved.status is AlertStatus.RESOLVED
    assert resolved.ends_at == datetime(2026, 3, 2, 9, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    ("ends_in", "status"),
    [(-60.0, AlertStatus.RESOLVED), (0.0, AlertStatus.RESOLVED), (60.0, AlertStatus.FIRING)],
    ids=["past", "now", "future"],
)
def test_generic_end_in_the_past_is_a_resolution(ends_in: float, status: AlertStatus) -> None:
    ends = NOW + timedelta(seconds=ends_in)
    [alert] = parse_generic({"labels": API_DOWN, "endsAt": ends.isoformat()}, NOW, MAX_ALERTS)
    assert alert.status is status
    assert alert.ends_at == ends  # a future end is kept as the expected end


GENERIC_REFUSALS: list[tuple[str, object, str]] = [
    ("empty list", {"alerts": []}, "alerts: expected a non-empty list"),
    ("alerts a string", {"alerts": "ApiDown"}, "alerts: expected a non-empty list"),
    ("alerts null", {"alerts": None}, "alerts: expected a non-empty list"),
    ("a JSON array", [{"labels": API_DOWN}], "alerts[0]: expected an object"),
    ("a string", "ApiDown", "alerts[0]: expected an object"),
    ("no labels", {"annotations": {"summary": "x"}}, "alerts[0].labels: expected an object"),
    ("no alertname", {"labels": {"service": "web"}}, "alerts[0].labels: an alert needs"),
    (
        "second alert bad",
        {"alerts": [{"labels": API_DOWN}, {"labels": {"alertname": 7}}]},
        "alerts[1].labels.alertname: expected a string",
    ),
    (
        "naive end",
        {"labels": API_DOWN, "endsAt": "2026-03-02T09:00:00"},
        "alerts[0].endsAt: a time needs its offset",
    ),
    ("status a bool", {"labels": API_DOWN, "status": True}, "alerts[0].status: expected"),
]


@pytest.mark.parametrize(
    ("body", "reason"), [r[1:] for r in GENERIC_REFUSALS], ids=[r[0] for r in GENERIC_REFUSALS]
)
def test_generic_refusals_name_the_path(body: object, reason: str) -> None:
    with pytest.raises(PayloadError) as refused:
        parse_generic(body, NOW, MAX_ALERTS)
    assert reason in str(refused.value)


def test_generic_too_many_alerts() -> None:
    body = {"alerts": [{"labels": {"alertname": f"A{i}"}} for i in range(6)]}
    assert len(parse_generic(body, NOW, 6)) == 6
    with pytest.raises(PayloadError, match="alerts: more than 5 in one request"):
        parse_generic(body, NOW, 5)


# -- fingerprint -----------------------------------------------------------------------------


def test_fingerprint_is_stable_across_label_order() -> None:
    reordered = dict(reversed(list(DISK_FULL.items())))
    assert list(reordered) != list(DISK_FULL)
    assert fingerprint(reordered) == fingerprint(DISK_FULL)
    assert len(fingerprint(DISK_FULL)) == 16
    int(fingerprint(DISK_FULL), 16)  # hex


def test_fingerprint_differs_for_different_label_sets() -> None:
    seen = {
        fingerprint(DISK_FULL),
        fingerprint({**DISK_FULL, "host": "b"}),
        fingerprint({**DISK_FULL, "extra": ""}),
        fingerprint({k: v for k, v in DISK_FULL.items() if k != "host"}),
        fingerprint({"alertname": "DiskFull", "hostservice": "worker"}),
        fingerprint({"alertname": "DiskFullhost", "service": "worker"}),
    }
    assert len(seen) == 6


def test_incoming_fingerprint_ignores_annotations_and_source() -> None:
    from_am = parse_alertmanager(am_body([am_alert(DISK_FULL)]), NOW, MAX_ALERTS)[0]
    reordered = dict(reversed(list(DISK_FULL.items())))
    from_generic = parse_generic(
        {"labels": reordered, "annotations": {"summary": "other"}}, NOW, MAX_ALERTS
    )[0]
    assert from_am.fingerprint == from_generic.fingerprint == fingerprint(DISK_FULL)


# -- matchers --------------------------------------------------------------------------------


def test_parse_matchers_equality_and_regex() -> None:
    matchers = parse_matchers("alertname=DiskFull  service=~api|web")
    assert matchers == (Matcher("alertname", "DiskFull"), Matcher("service", "api|web", True))
    assert [str(m) for m in matchers] == ["alertname=DiskFull", "service=~api|web"]
    equal, regex = matchers
    assert equal.matches(DISK_FULL)
    assert not equal.matches({"alertname": "DiskFullSoon"})
    assert regex.matches({"service": "web"}) and regex.matches({"service": "api"})
    assert not regex.matches({"service": "web2"})  # the whole value, as in Alertmanager
    assert not regex.matches({})


def test_parse_matchers_value_may_hold_an_equals_sign() -> None:
    assert parse_matchers("query=a=b") == (Matcher("query", "a=b"),)
    assert parse_matchers("host=~a=~b") == (Matcher("host", "a=~b", True),)


def test_regex_matcher_can_match_a_missing_label() -> None:
    # An absent label is the empty string, so ".*" matches everything (as in Alertmanager).
    [matcher] = parse_matchers("team=~.*")
    assert matcher.matches({"alertname": "X"})


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "give at least one matcher"),
        ("   ", "give at least one matcher"),
        ("alertname", "not a matcher: 'alertname'"),
        ("alertname=", "not a matcher: 'alertname='"),
        ("service=~", "not a matcher: 'service=~'"),
        ("=DiskFull", "not a matcher: '=DiskFull'"),
        ("bad-name=x", "not a matcher: 'bad-name=x'"),
        ("1abc=x", "not a matcher: '1abc=x'"),
        ("alertname=DiskFull host", "not a matcher: 'host'"),
        ("service=~(", "bad regex in 'service=~('"),
        ("service=~a[", "bad regex in 'service=~a['"),
        (f"x={'v' * 201}", "not a matcher"),
    ],
)
def test_parse_matchers_refusals(text: str, reason: str) -> None:
    with pytest.raises(MatcherError) as refused:
        parse_matchers(text)
    assert reason in str(refused.value)
