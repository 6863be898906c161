"""What is firing, filtered and paged: `/alerts web`, `/alerts critical`,
`/alerts service=web severity=~warn.*`, and the API's ?service=&severity=&limit=&offset=."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from services.alerts.model import SEVERITY_ORDER, AlertGroup, Matcher, MatcherError, parse_matchers

SEVERITIES = tuple(SEVERITY_ORDER)
MAX_FILTER = 300  # characters of filter text


class FilterError(MatcherError):
    """A filter opsgate cannot read: said to the person, nothing listed."""


@dataclass(frozen=True)
class AlertFilter:
    matchers: tuple[Matcher, ...] = ()

    def __str__(self) -> str:
        return " ".join(str(m) for m in self.matchers)

    def keep(self, group: AlertGroup) -> AlertGroup | None:
        """The group with only its firing alerts that match, None when none does."""
        firing = tuple(a for a in group.firing if all(m.matches(a.labels) for m in self.matchers))
        return dataclasses.replace(group, alerts=firing) if firing else None


def _severity_matcher(value: str) -> Matcher:
    if value not in SEVERITIES:
        raise FilterError(f"unknown severity {value[:40]!r} (use {', '.join(SEVERITIES)})")
    return Matcher("severity", value)


def parse_filter(text: str, services: Collection[str]) -> AlertFilter:
    """Words: a severity, a known service, or label matchers (label=value, label=~regex)."""
    if len(text) > MAX_FILTER:
        raise FilterError(f"the filter is too long (at most {MAX_FILTER} characters)")
    matchers: list[Matcher] = []
    for word in text.split():
        if "=" in word:
            [matcher] = parse_matchers(word)
            if matcher.name == "severity" and not matcher.regex:
                matcher = _severity_matcher(matcher.value)
            matchers.append(matcher)
        elif word in SEVERITIES:
            matchers.append(Matcher("severity", word))
        elif word in services:
            matchers.append(Matcher("service", word))
        else:
            raise FilterError(
                f"{word[:40]!r} is neither a severity ({', '.join(SEVERITIES)}) nor a service"
                " in the ops file (or use label=value)"
            )
    return AlertFilter(tuple(matchers))


def filter_from_params(service: str | None, severity: str | None) -> AlertFilter:
    """The API's ?service=&severity= (equality each; severity one of the known ones)."""
    matchers = []
    if service:
        [found] = parse_matchers(f"service={service}")
        matchers.append(found)
    if severity:
        matchers.append(_severity_matcher(severity))
    return AlertFilter(tuple(matchers))


def apply(groups: Sequence[AlertGroup], where: AlertFilter) -> list[AlertGroup]:
    kept = (where.keep(g) for g in groups)
    return [g for g in kept if g is not None]


@dataclass(frozen=True)
class Page:
    groups: tuple[AlertGroup, ...]
    number: int  # from 1
    pages: int
    total: int  # groups matching


def page_of(groups: Sequence[AlertGroup], number: int, size: int) -> Page | None:
    """Page `number` (from 1) of `size` groups, None when it is past the end."""
    pages = max(1, -(-len(groups) // size))
    if not 1 <= number <= pages:
        return None
    start = (number - 1) * size
    return Page(tuple(groups[start : start + size]), number, pages, len(groups))
