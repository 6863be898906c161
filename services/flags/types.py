"""The flag model and evaluation results, shared by the engine, the store and OFREP.

Reasons and error codes are the OpenFeature / OFREP ones, spelled as the spec spells them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

# Strict on purpose: the OFREP provider puts keys into URL paths without encoding them, so
# `a/b` or `../x` must never be a key. Lowercase, digits, `_`, `-` and `.` (not first).
FLAG_KEY_PATTERN = r"[a-z][a-z0-9_-]{0,62}(\.[a-z0-9_-]{1,62}){0,3}"
_FLAG_KEY_RE = re.compile(FLAG_KEY_PATTERN)

FlagValue = bool | str


def is_valid_flag_key(key: str) -> bool:
    return len(key) <= 128 and _FLAG_KEY_RE.fullmatch(key) is not None


class Reason(StrEnum):
    STATIC = "STATIC"
    DEFAULT = "DEFAULT"
    TARGETING_MATCH = "TARGETING_MATCH"
    SPLIT = "SPLIT"
    DISABLED = "DISABLED"
    ERROR = "ERROR"


class ErrorCode(StrEnum):
    PROVIDER_NOT_READY = "PROVIDER_NOT_READY"
    FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
    PARSE_ERROR = "PARSE_ERROR"
    TYPE_MISMATCH = "TYPE_MISMATCH"
    TARGETING_KEY_MISSING = "TARGETING_KEY_MISSING"
    INVALID_CONTEXT = "INVALID_CONTEXT"
    GENERAL = "GENERAL"


@dataclass(frozen=True)
class Targeting:
    """Who is always in, who is never in, and which chat types the flag applies to."""

    user_ids: frozenset[str] = frozenset()  # always on (unless excluded)
    segments: tuple[str, ...] = ()  # segment names from the ops file: always on
    chat_types: frozenset[str] = frozenset()  # empty: every chat type
    excluded_chats: frozenset[str] = frozenset()
    excluded_users: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Flag:
    key: str
    description: str = ""
    enabled: bool = False  # off: everyone gets the off variant, reason DISABLED
    rollout_percent: float = 0.0  # 0 to 100 in steps of 0.1
    targeting: Targeting = field(default_factory=Targeting)
    # Variant values; boolean flags use {"on": True, "off": False}.
    variants: Mapping[str, FlagValue] = field(default_factory=lambda: {"on": True, "off": False})
    on_variant: str = "on"
    off_variant: str = "off"
    killed: bool = False  # the emergency switch: off for everyone, whatever else says
    version: int = 0


@dataclass(frozen=True)
class EvaluationContext:
    targeting_key: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)  # e.g. chat_id, chat_type


@dataclass(frozen=True)
class Evaluation:
    key: str
    value: FlagValue | None
    variant: str | None
    reason: Reason
    error_code: ErrorCode | None = None
    error_message: str | None = None
    metadata: Mapping[str, str | int | float | bool] = field(default_factory=dict)


# Longest targeting key an evaluation accepts: ids and e-mail addresses fit with room to spare,
# and a bound keeps hashing and exclusion lookups cheap whatever a client sends.
MAX_TARGETING_KEY_LENGTH = 256


@dataclass(frozen=True)
class FlagChange:
    """One field of one flag changed by one write: who, when, from -> to, and why."""

    key: str
    at: datetime
    actor: str
    field: str
    from_value: str
    to_value: str
    note: str = ""
    version: int = 0  # the flag version this change produced


@dataclass(frozen=True)
class FlagSnapshot:
    """Every flag as of one moment, for evaluation without touching the database.

    `etag` is an opaque token (no quotes: the HTTP layer adds them) that changes whenever any
    flag's definition changes, so bulk answers can be revalidated with If-None-Match.
    """

    flags: Mapping[str, Flag]
    etag: str

    def get(self, key: str) -> Flag | None:
        return self.flags.get(key)
