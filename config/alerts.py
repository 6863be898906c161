"""Alert routing, grouping, delivery limits and opsgate's own monitor rules.

[alerts]
group_by = ["alertname", "service"]   # alerts sharing these labels share one message
group_wait_s = 5                       # wait this long for more of a new group
group_interval_s = 60                  # changes to a group are sent at most this often
repeat_interval_s = 14400              # a group still firing is sent again after this
chat_per_minute = 20                   # Telegram's group limit; beyond it: one digest
default_chat = -1001234567802          # alerts no route matches (default: the warning
                                       # chat, else the deploys chat): never dropped
global_per_second = 30
escalate_after_s = 600                 # an unacknowledged critical: DM the on-call...
backup_after_s = 1200                  # ...then mention the backup role
oncall_role = "oncall"
backup_role = "sre"

[[alerts.routes]]                      # the first route whose matchers all match wins
match = { severity = "critical" }
chat = -1001234567803
mention_role = "oncall"
[[alerts.routes]]
match = { severity = "info" }
chat = -1001234567804
digest_every_s = 600                   # info: one digest every 10 minutes
template = "{labels.service}: {annotations.summary} ({status})"   # the message's first line
quiet_hours = { start = 22:00:00, end = 08:00:00, timezone = "Europe/Kyiv" }

[[alerts.rules]]                       # opsgate's own monitor
name = "HostMemoryHigh"
metric = "memory_percent"              # cpu_percent, memory_percent, disk_percent,
above = 90                             # service_down, service_restarts
for_s = 60
severity = "warning"
"""

from __future__ import annotations

import re
from datetime import time
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator

from config.inventory import ChatId, FilePath, Name
from config.schedule import TimeZoneName
from config.strict import StrictModel

LabelName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}\Z")]
LabelValue = Annotated[str, StringConstraints(max_length=256)]
MonitorMetric = Literal[
    "cpu_percent", "memory_percent", "disk_percent", "service_down", "service_restarts"
]


class QuietHours(StrictModel):
    """Between start and end (local time) messages go out without a sound; never criticals."""

    start: time
    end: time
    timezone: TimeZoneName = "UTC"


# A route's message template: plain text with {status}, {severity}, {labels.NAME} and
# {annotations.NAME}; {{ and }} are literal braces. Nothing else is looked up or run.
TEMPLATE_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
TEMPLATE_FIELD = re.compile(r"status|severity|(?:labels|annotations)\.[a-zA-Z_][a-zA-Z0-9_]{0,63}")
TemplatePart = tuple[str, str]  # ("text", literal) or ("field", placeholder)


def parse_template(text: str) -> list[TemplatePart]:
    """The template as literal text and placeholders; ValueError names the first bad one."""
    parts: list[TemplatePart] = []
    at = 0
    for token in TEMPLATE_TOKEN.finditer(text):
        parts.append(("text", text[at : token.start()]))
        at = token.end()
        if token[0] in ("{{", "}}"):
            parts.append(("text", token[0][0]))
        elif token[1] is None:
            raise ValueError(f"a lone {token[0]!r} at {token.start()} (write {token[0] * 2})")
        elif TEMPLATE_FIELD.fullmatch(token[1].strip()):
            parts.append(("field", token[1].strip()))
        else:
            raise ValueError(
                f"unknown placeholder {token[0][:70]!r} (known: {{status}}, {{severity}},"
                " {labels.NAME}, {annotations.NAME})"
            )
    parts.append(("text", text[at:]))
    return [p for p in parts if p[1]]


class AlertRoute(StrictModel):
    match: dict[LabelName, LabelValue] = Field(default_factory=dict)
    chat: ChatId
    mention_role: Name | None = None
    digest_every_s: float | None = Field(default=None, ge=10, le=86400)
    quiet_hours: QuietHours | None = None
    # Plain text opening the route's group messages; every substituted value is escaped.
    template: Annotated[str, StringConstraints(min_length=1, max_length=1000)] | None = None

    @field_validator("template")
    @classmethod
    def _known_placeholders(cls, value: str | None) -> str | None:
        if value is not None:
            parse_template(value)
        return value


class MonitorRule(StrictModel):
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}\Z")]
    metric: MonitorMetric
    above: float = 0
    for_s: float = Field(default=60, ge=0, le=86400)
    severity: Literal["critical", "warning", "info"] = "warning"
    services: list[Name] = Field(default_factory=list)  # service rules: these (empty: all)
    path: FilePath = "/"  # disk_percent: the filesystem holding this path


class AlertOptions(StrictModel):
    group_by: list[LabelName] = Field(default_factory=lambda: ["alertname", "service"])
    group_wait_s: float = Field(default=5, ge=0, le=600)
    group_interval_s: float = Field(default=60, ge=0, le=86400)
    repeat_interval_s: float = Field(default=4 * 3600, ge=60, le=7 * 86400)
    chat_per_minute: int = Field(default=20, ge=1, le=60)
    global_per_second: int = Field(default=30, ge=1, le=30)
    escalate_after_s: float = Field(default=600, gt=0)
    backup_after_s: float = Field(default=1200, gt=0)
    oncall_role: Name | None = None
    backup_role: Name | None = None
    monitor_interval_s: float = Field(default=15, ge=0.05, le=3600)
    tick_s: float = Field(default=1.0, ge=0.05, le=60)  # how often the outbox is worked
    # The generic webhook's cap; Alertmanager's groups are taken whole, however large.
    max_alerts_per_request: int = Field(default=1000, ge=1, le=10000)
    # Where an alert no route matches goes; None: the warning chat, else the deploys chat.
    default_chat: ChatId | None = None
    routes: list[AlertRoute] = Field(default_factory=list)
    rules: list[MonitorRule] = Field(default_factory=list)
