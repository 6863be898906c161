"""Who was served what: evaluations per flag, variant and reason since start (for /metrics),
and per flag and variant over the last hour, with how many distinct users (for /flag KEY).

Kept in memory on the OFREP hot path, so each count is a few dictionary operations. The hour
is six ten-minute slots; a slot remembers at most CAP distinct users per flag and variant (a
count that reached it is shown as "at least"), so a flood of new keys costs bounded memory.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from services.flags.types import Evaluation

SLOT_S = 600
SLOTS = 6  # the last hour
CAP = 20_000  # distinct users remembered per flag, variant and slot


@dataclass(frozen=True)
class VariantUse:
    variant: str
    evaluations: int
    users: int
    capped: bool  # `users` is a floor: a slot stopped remembering new ones


class _Slot:
    __slots__ = ("evaluations", "users")

    def __init__(self) -> None:
        self.evaluations: dict[tuple[str, str], int] = {}
        self.users: dict[tuple[str, str], set[str]] = {}


class EvaluationTally:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._totals: dict[tuple[str, str, str], int] = {}
        self._slots: dict[int, _Slot] = {}
        self._slot = _Slot()
        self._slot_ends = -float("inf")  # when the current slot is over

    def count(self, evaluation: Evaluation, targeting_key: str | None) -> None:
        # On every OFREP answer: plain dict operations only.
        key, variant = evaluation.key, evaluation.variant or "none"
        total = (key, variant, evaluation.reason)  # a StrEnum: equal to its text
        self._totals[total] = self._totals.get(total, 0) + 1
        now = self._clock()
        if now >= self._slot_ends:
            self._roll(now)
        slot, which = self._slot, (key, variant)
        slot.evaluations[which] = slot.evaluations.get(which, 0) + 1
        if targeting_key:
            users = slot.users.get(which)
            if users is None:
                users = slot.users[which] = set()
            if len(users) < CAP:
                users.add(targeting_key)

    def _roll(self, now: float) -> None:
        index = int(now // SLOT_S)
        slot = self._slots.get(index)
        if slot is None:
            slot = self._slots[index] = _Slot()
            for old in [i for i in self._slots if i <= index - SLOTS]:
                del self._slots[old]
        self._slot, self._slot_ends = slot, (index + 1) * SLOT_S

    def flag_total(self, flag: str) -> int:
        """Evaluations of `flag` served since start, whatever the variant."""
        return sum(count for (key, _, _), count in self._totals.items() if key == flag)

    def totals(self) -> dict[tuple[str, str, str], int]:
        """(flag, variant, reason) -> evaluations since start."""
        return dict(self._totals)

    def last_hour(self, flag: str) -> list[VariantUse]:
        """Per variant of `flag`: evaluations and distinct users over the last hour."""
        now = int(self._clock() // SLOT_S)
        slots = [slot for index, slot in self._slots.items() if index > now - SLOTS]
        evaluations: Counter[str] = Counter()
        users: dict[str, set[str]] = {}
        capped: set[str] = set()
        for slot in slots:
            for (key, variant), count in slot.evaluations.items():
                if key == flag:
                    evaluations[variant] += count
            for (key, variant), seen in slot.users.items():
                if key == flag:
                    users.setdefault(variant, set()).update(seen)
                    if len(seen) >= CAP:
                        capped.add(variant)
        return [
            VariantUse(variant, count, len(users.get(variant, ())), variant in capped)
            for variant, count in sorted(evaluations.items())
        ]
