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
quiet_hours = { start = 22:00:00, end = 08:00:00, timezone = "Europe/Kyiv" }

[[alerts.rules]]                       # opsgate's own monitor
name = "HostMemoryHigh"
metric = "memory_percent"              # cpu_percent, memory_percent, disk_percent,
above = 90                             # service_down, service_restarts
for_s = 60
severity = "warning"
"""

from __future__ import annotations

from datetime import time
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from config.inventory import ChatId, FilePath, Name, _Strict
from config.schedule import TimeZoneName

LabelName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$")]
LabelValue = Annotated[str, StringConstraints(max_length=256)]
MonitorMetric = Literal[
    "cpu_percent", "memory_percent", "disk_percent", "service_down", "service_restarts"
]


class QuietHours(_Strict):
    """Between start and end (local time) messages go out without a sound; never criticals."""

    start: time
    end: time
    timezone: TimeZoneName = "UTC"


class AlertRoute(_Strict):
    match: dict[LabelName, LabelValue] = Field(default_factory=dict)
    chat: ChatId
    mention_role: Name | None = None
    digest_every_s: float | None = Field(default=None, ge=10, le=86400)
    quiet_hours: QuietHours | None = None


class MonitorRule(_Strict):
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")]
    metric: MonitorMetric
    above: float = 0
    for_s: float = Field(default=60, ge=0, le=86400)
    severity: Literal["critical", "warning", "info"] = "warning"
    services: list[Name] = Field(default_factory=list)  # service rules: these (empty: all)
    path: FilePath = "/"  # disk_percent: the filesystem holding this path


class AlertOptions(_Strict):
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
