"""Alerts as data: what arrives, how it is identified, silences and their matchers."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from services.errors import OpsgateError

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,63}")
MAX_LABELS = 40
MAX_VALUE = 1024


class AlertStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class IncomingAlert:
    """One alert as a source reported it, already validated."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    status: AlertStatus
    starts_at: datetime
    ends_at: datetime | None
    source: str  # alertmanager | generic | monitor

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.labels)


def fingerprint(labels: Mapping[str, str]) -> str:
    """The same labels, the same alert: a hash of the sorted label set (like Alertmanager's,
    though not its exact value)."""
    text = json.dumps(sorted(labels.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def severity_of(labels: Mapping[str, str]) -> str:
    return labels.get("severity", "warning")


@dataclass(frozen=True)
class Alert:
    fingerprint: str
    group_id: int
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    source: str
    status: AlertStatus
    starts_at: datetime
    ends_at: datetime | None
    first_seen: datetime
    last_seen: datetime

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "alert")

    @property
    def severity(self) -> str:
        return severity_of(self.labels)

    @property
    def summary(self) -> str:
        return self.annotations.get("summary") or self.annotations.get("description") or ""


@dataclass(frozen=True)
class AlertGroup:
    id: int
    key: str
    labels: Mapping[str, str]
    chat_id: int
    route: int
    message_id: int | None
    notified_at: datetime | None
    firing_since: datetime | None  # first sent in this firing spell: escalation counts from it
    escalation: int
    acked_by: str | None
    acked_at: datetime | None
    alerts: tuple[Alert, ...]

    @property
    def firing(self) -> tuple[Alert, ...]:
        return tuple(a for a in self.alerts if a.status is AlertStatus.FIRING)

    @property
    def severity(self) -> str:
        severities = [a.severity for a in self.firing] or [a.severity for a in self.alerts]
        return min(severities, key=lambda s: SEVERITY_ORDER.get(s, 9), default="warning")


@dataclass(frozen=True)
class Matcher:
    """label=value (equality) or label=~regex (full match), as in Alertmanager."""

    name: str
    value: str
    regex: bool = False

    def matches(self, labels: Mapping[str, str]) -> bool:
        given = labels.get(self.name, "")
        if self.regex:
            return re.fullmatch(self.value, given) is not None
        return given == self.value

    def __str__(self) -> str:
        return f"{self.name}{'=~' if self.regex else '='}{self.value}"


class AlertError(OpsgateError):
    """Base of the alert capability's errors."""


class MatcherError(AlertError, ValueError):
    kind = "invalid"

    pass


def parse_matchers(text: str) -> tuple[Matcher, ...]:
    """`alertname=DiskFull service=~api|web` -> matchers; at least one, all valid."""
    matchers = []
    for word in text.split():
        name, op, value = re.split(r"(=~|=)", word, maxsplit=1) if "=" in word else (word, "", "")
        if not op or not LABEL_NAME.fullmatch(name) or not value or len(value) > 200:
            raise MatcherError(f"not a matcher: {word[:60]!r} (use label=value or label=~regex)")
        if op == "=~":
            try:
                re.compile(value)
            except re.error as exc:
                raise MatcherError(f"bad regex in {word[:60]!r}: {exc}") from None
        matchers.append(Matcher(name, value, op == "=~"))
    if not matchers:
        raise MatcherError("give at least one matcher, e.g. alertname=DiskFull")
    return tuple(matchers)


@dataclass(frozen=True)
class Silence:
    id: int
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    ended_by: str | None

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def active(self, now: datetime) -> bool:
        return self.ended_by is None and self.starts_at <= now < self.ends_at
