"""Webhook bodies into IncomingAlerts: Alertmanager's version 4 payload, and a generic one.

Everything is checked before anything is stored: a body that is not what it claims to be is
refused whole with a reason (the HTTP side answers 4xx), never half-applied.

    generic:  {"alerts": [{"labels": {"alertname": "...", ...}, "annotations": {...},
               "status": "firing" | "resolved", "startsAt": "...", "endsAt": "...",
               "generatorURL": "..."}]}  (or one such alert as the whole body)

A `generatorURL` (Alertmanager sends one per alert) is kept as an annotation of that name.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from services.alerts.model import (
    LABEL_NAME,
    MAX_LABELS,
    MAX_VALUE,
    AlertError,
    AlertStatus,
    IncomingAlert,
)

ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt while an alert fires


class PayloadError(AlertError, ValueError):
    """`str()` is the reason the sender gets back."""

    kind = "invalid"


def _labels(value: object, where: str, *, required: bool) -> dict[str, str]:
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise PayloadError(f"{where}: expected an object of strings")
    if len(value) > MAX_LABELS:
        raise PayloadError(f"{where}: more than {MAX_LABELS} entries")
    labels = {}
    for key, item in value.items():
        if not isinstance(key, str) or not LABEL_NAME.fullmatch(key):
            raise PayloadError(f"{where}: {str(key)[:40]!r} is not a label name")
        if not isinstance(item, str) or len(item) > MAX_VALUE:
            raise PayloadError(f"{where}.{key}: expected a string of at most {MAX_VALUE}")
        labels[key] = item
    if required and "alertname" not in labels:
        raise PayloadError(f"{where}: an alert needs an alertname label")
    return labels


def _time(value: object, where: str, now: datetime) -> datetime | None:
    if value is None or value == "" or value == ZERO_TIME:
        return None
    if not isinstance(value, str):
        raise PayloadError(f"{where}: expected an RFC 3339 time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise PayloadError(f"{where}: {value[:40]!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise PayloadError(f"{where}: a time needs its offset (Z or +hh:mm)")
    if parsed.year < 2000:
        return None
    return parsed.astimezone(UTC)


def _alert(raw: object, where: str, source: str, now: datetime) -> IncomingAlert:
    if not isinstance(raw, Mapping):
        raise PayloadError(f"{where}: expected an object")
    status_text = raw.get("status", "firing")
    if status_text not in ("firing", "resolved"):
        raise PayloadError(f"{where}.status: expected firing or resolved")
    labels = _labels(raw.get("labels"), f"{where}.labels", required=True)
    annotations = _labels(raw.get("annotations"), f"{where}.annotations", required=False)
    generator = raw.get("generatorURL")
    if isinstance(generator, str) and 0 < len(generator) <= MAX_VALUE:
        # Kept as an annotation of that name (the alert's link back to its source); shown
        # only when it is a valid http(s) URL (services/alerts/links.py).
        annotations.setdefault("generatorURL", generator)
    starts = _time(raw.get("startsAt"), f"{where}.startsAt", now) or now
    ends = _time(raw.get("endsAt"), f"{where}.endsAt", now)
    status = AlertStatus(status_text)
    if status is AlertStatus.FIRING and ends is not None and ends <= now:
        status = AlertStatus.RESOLVED  # an end in the past is a resolution (generic senders)
    return IncomingAlert(labels, annotations, status, starts, ends, source)


def parse_alertmanager(body: object, now: datetime, max_alerts: int) -> list[IncomingAlert]:
    """Alertmanager's group, whole: it sends every alert of a group in one request (unless
    its receiver sets max_alerts) and takes a refusal as final, so no count is refused here;
    only the body size is bounded, by the HTTP side. `max_alerts` is the generic cap, unused."""
    if not isinstance(body, Mapping):
        raise PayloadError("expected Alertmanager's webhook object")
    if body.get("version") != "4":
        raise PayloadError(f"unsupported webhook version {str(body.get('version'))[:10]!r}")
    alerts = body.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("alerts: expected a list")
    return [_alert(a, f"alerts[{i}]", "alertmanager", now) for i, a in enumerate(alerts)]


def parse_generic(body: object, now: datetime, max_alerts: int) -> list[IncomingAlert]:
    alerts = body.get("alerts") if isinstance(body, Mapping) and "alerts" in body else [body]
    if not isinstance(alerts, list) or not alerts:
        raise PayloadError("alerts: expected a non-empty list")
    if len(alerts) > max_alerts:
        raise PayloadError(f"alerts: more than {max_alerts} in one request")
    return [_alert(a, f"alerts[{i}]", "generic", now) for i, a in enumerate(alerts)]
