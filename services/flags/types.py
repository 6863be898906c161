"""The flag model and evaluation results, shared by the engine, the store and OFREP.

Reasons and error codes are the OpenFeature / OFREP ones, spelled as the spec spells them.
Errors raised by flag operations (the store's, mostly):

    FlagError
    ├── UnknownFlag          no flag with that key
    ├── FlagExists           create() with a key already taken
    ├── StaleFlag            the flag moved past the version the caller saw
    ├── NotLoaded            a snapshot asked for before the store was loaded
    └── InvalidFlagInput     bad input (also a ValueError); the message is fit for chat
        ├── InvalidFlagKey
        ├── InvalidPercentage
        └── InvalidTargeting
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from services.errors import OpsgateError

# Strict on purpose: the OFREP provider puts keys into URL paths without encoding them, so
# `a/b` or `../x` must never be a key. Lowercase, digits, `_`, `-` and `.` (not first).
FLAG_KEY_PATTERN = r"[a-z][a-z0-9_-]{0,62}(\.[a-z0-9_-]{1,62}){0,3}"
_FLAG_KEY_RE = re.compile(FLAG_KEY_PATTERN)

# A variant's value: boolean flags have True/False; others a string, a number or JSON.
FlagValue = bool | str | int | float | dict[str, Any] | list[Any]


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
class AttributeRule:
    """A test on one context attribute, compared as text (a chat id's number or string)."""

    attribute: str
    op: str  # in, not_in, starts_with, ends_with
    values: tuple[str, ...]

    def matches(self, attributes: Mapping[str, Any]) -> bool:
        value = attributes.get(self.attribute)
        if isinstance(value, bool):
            text: str | None = "true" if value else "false"
        elif isinstance(value, int):
            text = str(value)
        elif isinstance(value, float):
            text = str(int(value)) if value.is_integer() else str(value)
        else:
            text = value if isinstance(value, str) else None
        if text is None:
            return self.op == "not_in"
        if self.op == "in":
            return text in self.values
        if self.op == "not_in":
            return text not in self.values
        if self.op == "starts_with":
            return any(text.startswith(v) for v in self.values)
        return any(text.endswith(v) for v in self.values)  # ends_with


@dataclass(frozen=True)
class Segment:
    """These targeting keys, or a context matching every rule (rules are ANDed)."""

    keys: frozenset[str] = frozenset()
    rules: tuple[AttributeRule, ...] = ()

    def matches(self, key: str | None, attributes: Mapping[str, Any]) -> bool:
        if key is not None and key in self.keys:
            return True
        return bool(self.rules) and all(rule.matches(attributes) for rule in self.rules)


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
    # A multi-variant flag's weighted split ((variant, weight), ...), sticky per user like the
    # boolean rollout; empty for a boolean flag, which rolls out by rollout_percent instead.
    split: tuple[tuple[str, int], ...] = ()

    @property
    def kind(self) -> str:
        """boolean, string, number or object: what OFREP serves and flagd declares."""
        values = list(self.variants.values())
        if all(isinstance(v, bool) for v in values):
            return "boolean"
        if all(isinstance(v, str) for v in values):
            return "string"
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return "number"
        return "object"


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


# Telegram's chat types: the values of a flag's chat-type targeting and of `chat_type`.
CHAT_TYPES = frozenset({"private", "group", "supergroup", "channel"})
_CHAT_ID_RE = re.compile(r"-?[0-9]{1,19}")

MAX_TEXT = 500  # descriptions, notes and kill reasons

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


class FlagError(OpsgateError):
    """A flag operation that cannot be carried out."""


class UnknownFlag(FlagError):
    pass


class FlagExists(FlagError):
    pass


class StaleFlag(FlagError):
    pass


class NotLoaded(FlagError):
    pass


class InvalidFlagInput(FlagError, ValueError):
    pass


class InvalidFlagKey(InvalidFlagInput):
    pass


class InvalidPercentage(InvalidFlagInput):
    pass


class BucketingChangeRefused(FlagError):
    """A new bucketing scheme would move users in or out of a partial rollout."""


class InvalidTargeting(InvalidFlagInput):
    pass


def check_percentage(value: float) -> float:
    """A rollout percentage as stored: 0 to 100, a multiple of 0.1, without float dust."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidPercentage(f"{value!r} is not a percentage")
    if not 0 <= value <= 100:
        raise InvalidPercentage(f"{value!r}: a percentage is between 0 and 100")
    tenths = round(value * 10)
    if abs(value * 10 - tenths) > 1e-6:
        raise InvalidPercentage(f"{value!r}: at most one decimal (steps of 0.1)")
    return tenths / 10


def format_percent(value: float) -> str:
    """25.0 -> "25", 2.5 -> "2.5"."""
    return f"{value:.1f}".removesuffix(".0")


def check_flag_key(key: str) -> str:
    if not isinstance(key, str) or not is_valid_flag_key(key):
        raise InvalidFlagKey(
            f"{str(key)[:40]!r} is not a flag key: lowercase letters, digits, '_' and '-',"
            " starting with a letter, optionally in dot-separated parts"
        )
    return key


def check_ident(kind: str, ident: str | int) -> str:
    """A chat id (one spelling per chat: "-01" is "-1") or a user id / targeting key, as text."""
    text = "\0" if isinstance(ident, bool) or not isinstance(ident, str | int) else str(ident)
    if kind == "chat":
        if _CHAT_ID_RE.fullmatch(text.strip()) is None:
            raise InvalidTargeting(f"{text[:30]!r} is not a chat id (e.g. -1001234567890)")
        return str(int(text))
    if kind != "user":
        raise InvalidTargeting(f"{str(kind)[:20]!r}: say 'chat' or 'user'")
    ok = 0 < len(text) <= MAX_TARGETING_KEY_LENGTH and text.isprintable()
    if not ok or text != text.strip():
        raise InvalidTargeting(f"{text[:30]!r} is not a user id or targeting key")
    return text


def check_text(text: str, what: str, required: bool = False) -> str:
    """One line of free text (a description, note or reason), stripped."""
    text = text.strip() if isinstance(text, str) else "\0"
    if required and not text:
        raise InvalidFlagInput(f"a {what} is required")
    if len(text) > MAX_TEXT or not text.isprintable():
        raise InvalidFlagInput(f"a {what} is one line of at most {MAX_TEXT} characters")
    return text
