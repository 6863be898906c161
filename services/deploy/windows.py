"""Whether an environment takes a deploy now: its weekly windows and its freezes."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from config.opsfile import Environment
from config.schedule import WEEKDAYS, DeployWindow


def _inside(window: DeployWindow, now: datetime) -> bool:
    local = now.astimezone(ZoneInfo(window.timezone))
    clock = local.time().replace(tzinfo=None)
    if window.start < window.end:
        return WEEKDAYS[local.weekday()] in window.days and window.start <= clock < window.end
    # Past midnight: the evening part counts for its own day, the morning for the day before.
    if clock >= window.start:
        return WEEKDAYS[local.weekday()] in window.days
    yesterday = (local - timedelta(days=1)).weekday()
    return clock < window.end and WEEKDAYS[yesterday] in window.days


def _describe(window: DeployWindow) -> str:
    days = ",".join(window.days) if len(window.days) < 7 else "daily"
    return f"{days} {window.start:%H:%M}-{window.end:%H:%M} {window.timezone}"


def deploy_refusal(name: str, environment: Environment, now: datetime) -> str | None:
    """Why a deploy into `name` may not start at `now` (aware), or None when it may."""
    for freeze in environment.freezes:
        if freeze.covers(now):
            until = freeze.end.astimezone(now.tzinfo).strftime("%Y-%m-%d %H:%M %Z")
            return f"{name} is frozen until {until}: {freeze.reason}"
    if environment.windows and not any(_inside(w, now) for w in environment.windows):
        windows = "; ".join(_describe(w) for w in environment.windows)
        return f"{name} takes deploys only in its window(s): {windows}"
    return None


def is_production(name: str, environment: Environment) -> bool:
    return environment.production or name in ("production", "prod")
