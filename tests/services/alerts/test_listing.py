"""/alerts filters and pages: words read as severities, services or matchers; bad ones refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.alerts.listing import (
    FilterError,
    apply,
    filter_from_params,
    page_of,
    parse_filter,
)
from services.alerts.model import Alert, AlertGroup, AlertStatus, Matcher, MatcherError

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SERVICES = ["web", "worker"]


def group(group_id: int, *labels: dict[str, str]) -> AlertGroup:
    alerts = tuple(
        Alert(f"fp{group_id}-{i}", group_id, lab, {}, "generic", AlertStatus.FIRING, T0, None,
              T0, T0)
        for i, lab in enumerate(labels)
    )  # fmt: skip
    return AlertGroup(group_id, f"k{group_id}", {}, -1, 0, None, None, None, 0, None, None, alerts)


@pytest.mark.parametrize(
    ("text", "matchers"),
    [
        ("", ()),
        ("web", (Matcher("service", "web"),)),
        ("critical", (Matcher("severity", "critical"),)),
        (
            "service=web severity=~warn.*",
            (Matcher("service", "web"), Matcher("severity", "warn.*", regex=True)),
        ),
        ("worker info", (Matcher("service", "worker"), Matcher("severity", "info"))),
    ],
)
def test_words_become_matchers(text: str, matchers: tuple[Matcher, ...]) -> None:
    assert parse_filter(text, SERVICES).matchers == matchers


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("crtical", "neither a severity"),
        ("severity=urgent", "unknown severity"),
        ("service=~(", "bad regex"),
        ("=web", "not a matcher"),
        ("service=" + "x" * 400, "too long"),
    ],
)
def test_bad_filters_are_refused_with_a_reason(text: str, says: str) -> None:
    with pytest.raises(MatcherError, match=says):
        parse_filter(text, SERVICES)


def test_a_filter_keeps_matching_alerts_of_matching_groups() -> None:
    groups = [
        group(1, {"alertname": "A", "service": "web", "severity": "critical"}),
        group(2, {"alertname": "B", "service": "web", "severity": "warning"},
              {"alertname": "C", "service": "api", "severity": "warning"}),
    ]  # fmt: skip
    kept = apply(groups, parse_filter("severity=~warn.*", SERVICES))
    assert [g.id for g in kept] == [2] and len(kept[0].alerts) == 2
    kept = apply(groups, parse_filter("web warning", SERVICES))
    assert [(g.id, [a.name for a in g.alerts]) for g in kept] == [(2, ["B"])]
    assert apply(groups, filter_from_params("api", None))[0].id == 2
    with pytest.raises(FilterError):
        filter_from_params(None, "loud")


def test_pages() -> None:
    groups = [group(i, {"alertname": f"A{i}"}) for i in range(1, 24)]
    first = page_of(groups, 1, 10)
    assert first is not None and (first.number, first.pages, first.total) == (1, 3, 23)
    last = page_of(groups, 3, 10)
    assert last is not None and [g.id for g in last.groups] == [21, 22, 23]
    assert page_of(groups, 4, 10) is None and page_of(groups, 0, 10) is None
    empty = page_of([], 1, 10)
    assert empty is not None and empty.pages == 1 and empty.groups == ()
