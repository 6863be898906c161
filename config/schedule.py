"""When an environment may be deployed to: weekly deployment windows and dated freezes."""

from __future__ import annotations

from datetime import datetime, time
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, AwareDatetime, Field, StringConstraints, model_validator

from config.strict import StrictModel

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc
    return name


TimeZoneName = Annotated[str, StringConstraints(max_length=64), AfterValidator(_zone)]


class DeployWindow(StrictModel):
    """Deploys may start on these days between `start` and `end` (local time in `timezone`);
    an `end` before `start` runs past midnight."""

    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1)
    start: time
    end: time
    timezone: TimeZoneName = "UTC"

    @model_validator(mode="after")
    def _not_empty(self) -> DeployWindow:
        if self.start == self.end:
            raise ValueError("start and end are the same: the window would be empty")
        return self


class Freeze(StrictModel):
    """No deploys from `start` to `end` (e.g. a release freeze, a holiday, an audit)."""

    start: AwareDatetime
    end: AwareDatetime
    reason: Annotated[str, StringConstraints(min_length=1, max_length=200)]

    @model_validator(mode="after")
    def _ordered(self) -> Freeze:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self

    def covers(self, now: datetime) -> bool:
        return self.start <= now < self.end
