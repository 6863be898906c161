"""`/flag` arguments -> a small command object. Pure: no Telegram, no I/O.

/flag KEY                               show
/flag KEY 25 | 2.5                      set the rollout percentage
/flag KEY on | off                      enable / disable
/flag KEY kill | unkill                 emergency switch
/flag KEY exclude|unexclude chat|user ID   never on there / lifted
/flag KEY allow|disallow USER_ID       the allow list (always on)
/flag KEY segment add|remove NAME      ops-file segments always on
/flag KEY chats group,supergroup|all   only chats of these types
/flag KEY plan 5,25,50,100 every 1h     staged plan, equal steps
/flag KEY plan 5:30m,25:2h,100         phases with their own durations
/flag KEY plan                         the ops file's plan ([flags.KEY.plan])
/flag KEY approve|reject ID            a change waiting for a second person (four eyes)
/flag KEY split a=50,b=30,c=20         a multi-variant flag's weights
/flag KEY pause | resume | abort        control the plan
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from config.flag_plans import MIN_PHASE
from services.flags.edits import TargetingEdit, parse_targeting
from services.flags.plans import Phase, PlanError, parse_duration
from services.flags.store import parse_percentage
from services.flags.types import InvalidPercentage, InvalidTargeting, is_valid_flag_key

WORDS = ("on", "off", "kill", "unkill", "pause", "resume", "abort")
USAGE = (
    "Usage: /flag KEY [25 | on | off | kill | unkill | exclude|unexclude chat|user ID |"
    " allow|disallow USER_ID | segment add|remove NAME | chats group,supergroup|all |"
    " split a=50,b=50 |"
    " plan 5,25,50,100 every 1h | pause | resume | abort]"
)


class FlagCommandError(ValueError):
    """Arguments that do not make a /flag command; the text is fit for chat (plain)."""


@dataclass(frozen=True)
class FlagCommand:
    key: str
    action: str  # show, percent, on, off, kill, unkill, targeting, plan, plan_declared, ...
    percent: float | None = None
    edit: TargetingEdit | None = None
    steps: tuple[float, ...] = ()
    every: timedelta | None = None
    phases: tuple[Phase, ...] = ()
    request_id: int | None = None  # approve / reject: the four-eyes request
    split: tuple[tuple[str, int], ...] = ()

    @property
    def changes_something(self) -> bool:
        return self.action != "show"


def parse_percent(text: str) -> float:
    """0 to 100 in steps of 0.1: `25`, `2.5`, `25%`; not -1, 101, abc or 25.55."""
    try:
        return parse_percentage(text)
    except InvalidPercentage as exc:
        raise FlagCommandError(str(exc)) from None


def parse_split(text: str) -> tuple[tuple[str, int], ...]:
    """`control=70,treatment=20,off=10`: each variant's whole weight."""
    split = []
    for part in (p for p in text.split(",") if p):
        name, _, weight = part.partition("=")
        if not name or not weight.isdigit() or len(weight) > 7:
            raise FlagCommandError(f"{part[:30]!r}: say variant=weight, e.g. control=50")
        split.append((name, int(weight)))
    return tuple(split)


def parse_phases(text: str) -> tuple[Phase, ...]:
    """`5:30m,25:2h,100`: each phase's percentage and how long it lasts (not the last)."""
    phases = []
    parts = [part for part in text.split(",") if part]
    for index, part in enumerate(parts):
        percent, _, duration = part.partition(":")
        if not duration and index < len(parts) - 1:
            raise FlagCommandError(f"{part[:20]!r}: say how long, e.g. 25:2h")
        try:
            every = parse_duration(duration) if duration else MIN_PHASE
        except PlanError as exc:
            raise FlagCommandError(str(exc)) from None
        phases.append(Phase(parse_percent(percent), every))
    return tuple(phases)


def parse_flag_command(args: str) -> FlagCommand:
    words = args.split()
    if not words:
        raise FlagCommandError(USAGE)
    key, rest = words[0], words[1:]
    if not is_valid_flag_key(key):
        raise FlagCommandError(
            f"not a flag key: {key[:40]!r} (lowercase letters, digits, _ - and dots)"
        )
    if not rest:
        return FlagCommand(key, "show")
    verb = rest[0].lower()
    if len(rest) == 1 and verb in WORDS:
        return FlagCommand(key, verb)
    try:
        edit = parse_targeting(rest)
    except InvalidTargeting as exc:
        raise FlagCommandError(str(exc)) from None
    if edit is not None:
        return FlagCommand(key, "targeting", edit=edit)
    if verb in ("approve", "reject") and len(rest) == 2:
        if not rest[1].lstrip("#").isdigit() or len(rest[1]) > 12:
            raise FlagCommandError(f"not a request number: {rest[1][:20]!r}")
        return FlagCommand(key, verb, request_id=int(rest[1].lstrip("#")))
    if verb == "split" and len(rest) == 2:
        return FlagCommand(key, "split", split=parse_split(rest[1]))
    if verb == "plan" and len(rest) == 1:
        return FlagCommand(key, "plan_declared")
    if len(rest) == 1:
        return FlagCommand(key, "percent", percent=parse_percent(verb))
    if verb == "plan" and len(rest) == 2 and ":" in rest[1]:
        return FlagCommand(key, "plan", phases=parse_phases(rest[1]))
    if verb == "plan" and len(rest) == 4 and rest[2].lower() == "every":
        steps = tuple(parse_percent(step) for step in rest[1].split(",") if step)
        try:
            every = parse_duration(rest[3])
        except PlanError as exc:
            raise FlagCommandError(str(exc)) from None
        return FlagCommand(key, "plan", steps=steps, every=every)
    raise FlagCommandError(USAGE)
