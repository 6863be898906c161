"""What an alert group links to and how a route's template opens its message, as plain data.

Links come from annotations (`runbook_url`, `dashboard` / `dashboard_url`), the alert's
`generatorURL` (kept by the intake as an annotation of that name) and, when Alertmanager is
configured, its "new silence" page for the group's labels. Only http(s) URLs with a plain host
are kept; anything else (javascript:, data:, a user:password@ host, spaces) is dropped,
never shown as a link. Templates (config/alerts.py parses them) fill only `{status}`,
`{severity}`, `{labels.NAME}` and `{annotations.NAME}`; the chat side escapes the result.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from config.alerts import parse_template
from services.alerts.model import Alert, AlertGroup

MAX_URL = 1024
MAX_LINKS = 6  # besides the silence link
MAX_OPENING = 1000  # a filled template, in characters
MAX_DETAILS = 600  # a description shown under the alerts
HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\]")
UNSAFE = re.compile(r"[\x00-\x20\x7f<>\"'`\\]")
# Annotation -> button label, in the order shown.
LINK_ANNOTATIONS = (
    ("runbook_url", "📖 Runbook"),
    ("dashboard_url", "📊 Dashboard"),
    ("dashboard", "📊 Dashboard"),
    ("generatorURL", "📈 Source"),
)


@dataclass(frozen=True)
class Link:
    label: str
    url: str


def safe_url(value: str) -> str | None:
    """The URL when it is http(s) with a plain host (and port), else None."""
    url = value.strip()
    if not url or len(url) > MAX_URL or UNSAFE.search(url):
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        return None
    host = parts.netloc.rsplit(":", 1)[0] if not parts.netloc.endswith("]") else parts.netloc
    if parts.scheme.lower() not in ("http", "https") or "@" in parts.netloc:
        return None
    return url if HOST.fullmatch(host) else None


def shown_alerts(group: AlertGroup) -> tuple[Alert, ...]:
    """The alerts a group's message is about: the firing ones, else all."""
    return group.firing or group.alerts


def common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """The entries every map shares (Alertmanager's CommonLabels / CommonAnnotations)."""
    if not maps:
        return {}
    return {k: v for k, v in maps[0].items() if all(m.get(k) == v for m in maps[1:])}


def alert_links(group: AlertGroup) -> list[Link]:
    """The group's distinct, valid links: runbooks, dashboards, sources; at most MAX_LINKS."""
    links: list[Link] = []
    seen: set[str] = set()
    for key, label in LINK_ANNOTATIONS:
        for alert in shown_alerts(group):
            url = safe_url(alert.annotations.get(key, ""))
            if url is None or url in seen or len(links) >= MAX_LINKS:
                continue
            seen.add(url)
            links.append(Link(label, url))
    return links


def matcher_value(value: str) -> str:
    """A label value quoted as in Alertmanager's matcher syntax."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def silence_link(group: AlertGroup, alertmanager_url: str) -> Link | None:
    """Alertmanager's new-silence page, filled with the labels the firing alerts share."""
    firing = group.firing
    if not firing or not any(a.source == "alertmanager" for a in firing):
        return None
    labels = common([a.labels for a in firing])
    if not labels:
        return None
    matchers = ", ".join(f"{k}={matcher_value(v)}" for k, v in sorted(labels.items()))
    base = safe_url(alertmanager_url.rstrip("/"))
    if base is None:
        return None
    url = f"{base}/#/silences/new?filter={quote('{' + matchers + '}', safe='')}"
    return Link("🔕 Silence in Alertmanager", url) if len(url) <= MAX_URL else None


def fill_template(template: str, group: AlertGroup) -> str:
    """The route's template filled for the group, as plain text (the chat side escapes it);
    labels and annotations are those all its shown alerts share, a missing one is empty."""
    alerts = shown_alerts(group)
    labels = {**common([a.labels for a in alerts]), **group.labels}
    annotations = common([a.annotations for a in alerts])
    values = {"status": "firing" if group.firing else "resolved", "severity": group.severity}
    out = []
    for kind, text in parse_template(template):
        if kind == "text":
            out.append(text)
        elif text.startswith("labels."):
            out.append(labels.get(text.removeprefix("labels."), ""))
        elif text.startswith("annotations."):
            out.append(annotations.get(text.removeprefix("annotations."), ""))
        else:
            out.append(values[text])
    return "".join(out).strip()[:MAX_OPENING]


def details(group: AlertGroup) -> str:
    """The description the shown alerts share, when each line shows their summary instead."""
    alerts = shown_alerts(group)
    description = common([a.annotations for a in alerts]).get("description", "").strip()
    if not description or not all(a.annotations.get("summary") for a in alerts):
        return ""  # an alert without a summary already shows its description in its line
    return description[:MAX_DETAILS]
