"""A flag's staged plan as the ops file declares it: phases, each with its percentage, how
long it lasts and what it must show before the next one (seed 001's 5/25/50/100 plan).

[flags.checkout_v2.plan]
prometheus_url = "http://127.0.0.1:9090"      # where the phases' queries are asked
phases = [
  { percent = 5, duration = "1h", max_error_ratio = 0.01, min_evaluations = 100 },
  { percent = 25, duration = "2h", query = 'histogram_quantile(0.95, ...)', query_max = 0.5 },
  { percent = 50, duration = "4h" },
  { percent = 100 },
]

`/flag KEY plan` starts it. `max_error_ratio` reads the flag's [flags.KEY.error_rate] source.
"""

from __future__ import annotations

import itertools
import re
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, Field, HttpUrl, StringConstraints

from config.strict import StrictModel

_DURATION_RE = re.compile(r"(?:(\d{1,3})d)?(?:(\d{1,3})h)?(?:(\d{1,4})m)?(?:(\d{1,5})s)?")
MIN_PHASE = timedelta(seconds=10)
MAX_PHASES = 20


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `1h`, `2h30m`, `1d`: at least 10 s. ValueError otherwise."""
    match = _DURATION_RE.fullmatch(text.strip().lower())
    if not text.strip() or match is None or not any(match.groups()):
        raise ValueError(f"not a duration: {text[:20]!r} (e.g. 30m, 1h, 2h30m)")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    value = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if value < MIN_PHASE:
        raise ValueError("a plan step lasts at least 10s")
    return value


def _duration(text: str) -> str:
    parse_duration(text)
    return text


class PhaseDecl(StrictModel):
    percent: float = Field(gt=0, le=100)
    duration: Annotated[str, StringConstraints(max_length=20), AfterValidator(_duration)] | None = (
        None  # the last phase needs none: it is where the plan ends
    )
    max_error_ratio: float | None = Field(default=None, gt=0, le=1)
    query: Annotated[str, StringConstraints(min_length=1, max_length=2000)] | None = None
    query_max: float | None = None
    min_evaluations: int = Field(default=0, ge=0, le=10_000_000)


class PlanDecl(StrictModel):
    prometheus_url: HttpUrl | None = None
    phases: list[PhaseDecl] = Field(min_length=1, max_length=MAX_PHASES)


def check_plan(path: str, plan: PlanDecl, has_error_source: bool) -> list[str]:
    """Problems a schema cannot see: order, durations, and what each criterion needs."""
    problems: list[str] = []
    percents = [phase.percent for phase in plan.phases]
    if any(b <= a for a, b in itertools.pairwise(percents)):
        problems.append(f"{path}.phases: the percentages must rise, e.g. 5, 25, 50, 100")
    for index, phase in enumerate(plan.phases):
        where = f"{path}.phases[{index}]"
        if round(phase.percent * 10) != phase.percent * 10:
            problems.append(f"{where}.percent: steps of 0.1")
        if phase.duration is None and index < len(plan.phases) - 1:
            problems.append(f"{where}.duration: every phase but the last says how long it lasts")
        if phase.max_error_ratio is not None and not has_error_source:
            problems.append(
                f"{where}.max_error_ratio: needs the flag's error_rate (where errors are read)"
            )
        if (phase.query is None) != (phase.query_max is None):
            problems.append(f"{where}: give query and query_max together")
        if phase.query is not None and plan.prometheus_url is None:
            problems.append(f"{where}.query: needs {path}.prometheus_url")
    return problems
