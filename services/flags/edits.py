"""Targeting changes in words, one vocabulary for the chat, the CLI and the API.

    exclude chat|user ID       never on there
    unexclude chat|user ID     the exclusion lifted
    allow ID                   always on for this user (the allow list)
    disallow ID                off the allow list
    segment add|remove NAME    members of an ops-file segment always on
    chats TYPE[,TYPE...]|all   only chats of these types (private, group, supergroup, channel)

`parse_targeting` reads the words (None when they are no targeting change), `apply_targeting`
makes the change through the store, and `describe` says what moved, field by field.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from services.flags.store import FlagStore, changed_fields
from services.flags.types import CHAT_TYPES, Flag, InvalidTargeting

Verb = Literal[
    "exclude", "unexclude", "allow", "disallow", "segment_add", "segment_remove", "chats"
]
VERBS = ("exclude", "unexclude", "allow", "disallow", "segment", "chats")
USAGE = (
    "exclude|unexclude chat|user ID · allow|disallow USER_ID · segment add|remove NAME ·"
    " chats group,supergroup|all"
)
_ID_RE = re.compile(r"-?[0-9]{1,19}")
_TARGETING_KEY_RE = re.compile(r"[^\s,]{1,256}")  # a user id, or another targeting key
FIELD_NAMES = {
    "user_ids": "always on",
    "segments": "segments",
    "chat_types": "chat types",
    "excluded_chats": "excluded chats",
    "excluded_users": "excluded users",
    "enabled": "state",
    "killed": "kill switch",
    "rollout_percent": "rollout",
}


@dataclass(frozen=True)
class TargetingEdit:
    verb: Verb
    kind: Literal["chat", "user"] | None = None
    ident: str | None = None
    segment: str | None = None
    chat_types: frozenset[str] | None = None  # empty: every chat type

    def to_json(self) -> dict[str, Any]:
        """The API's body for this change (POST /api/flags/{key})."""
        body: dict[str, Any] = {"action": self.verb}
        if self.kind is not None:
            body["target"] = {"kind": self.kind, "id": self.ident}
        if self.segment is not None:
            body["segment"] = self.segment
        if self.chat_types is not None:
            body["chat_types"] = sorted(self.chat_types)
        return body


def parse_targeting(words: Sequence[str]) -> TargetingEdit | None:
    """The change these words ask for; None when the first word is no targeting verb.
    InvalidTargeting (its text fit for chat) when they are one, wrongly put."""
    if not words or words[0].lower() not in VERBS:
        return None
    verb, rest = words[0].lower(), list(words[1:])
    if verb in ("exclude", "unexclude"):
        if len(rest) != 2 or rest[0].lower() not in ("chat", "user"):
            raise InvalidTargeting(f"usage: {verb} chat|user ID")
        kind: Literal["chat", "user"] = "chat" if rest[0].lower() == "chat" else "user"
        out: Verb = "exclude" if verb == "exclude" else "unexclude"
        return TargetingEdit(out, kind, _ident(kind, rest[1]))
    if verb in ("allow", "disallow"):
        if len(rest) != 1:
            raise InvalidTargeting(f"usage: {verb} USER_ID")
        listed: Verb = "allow" if verb == "allow" else "disallow"
        return TargetingEdit(listed, "user", _ident("user", rest[0]))
    if verb == "segment":
        if len(rest) != 2 or rest[0].lower() not in ("add", "remove"):
            raise InvalidTargeting("usage: segment add|remove NAME")
        which: Verb = "segment_add" if rest[0].lower() == "add" else "segment_remove"
        return TargetingEdit(which, segment=rest[1])
    if len(rest) != 1:
        raise InvalidTargeting("usage: chats group,supergroup (or all)")
    return TargetingEdit("chats", chat_types=chat_types_of(rest[0]))


def chat_types_of(text: str) -> frozenset[str]:
    if text.lower() == "all":
        return frozenset()
    wanted = frozenset(part.strip().lower() for part in text.split(",") if part.strip())
    if not wanted or not wanted <= CHAT_TYPES:
        bad = ", ".join(sorted(wanted - CHAT_TYPES)) or text[:40]
        raise InvalidTargeting(f"unknown chat type {bad} (known: {', '.join(sorted(CHAT_TYPES))})")
    return wanted


def _ident(kind: str, text: str) -> str:
    if kind == "chat" and not _ID_RE.fullmatch(text):
        raise InvalidTargeting(f"not a Telegram chat id: {text[:20]!r}")
    if kind == "user" and not _TARGETING_KEY_RE.fullmatch(text):
        raise InvalidTargeting(f"not a user id or targeting key: {text[:20]!r}")
    return text


async def apply_targeting(
    store: FlagStore, known_segments: Collection[str], key: str, edit: TargetingEdit, actor: str
) -> Flag:
    """Make the change; a segment the ops file does not define is refused (adding one)."""
    match edit.verb:
        case "exclude" | "unexclude":
            assert edit.kind is not None and edit.ident is not None
            if edit.verb == "exclude":
                return await store.exclude(key, edit.kind, edit.ident, actor)
            return await store.unexclude(key, edit.kind, edit.ident, actor)
        case "allow" | "disallow":
            assert edit.ident is not None
            if edit.verb == "allow":
                return await store.allow(key, edit.ident, actor)
            return await store.disallow(key, edit.ident, actor)
        case "segment_add" | "segment_remove":
            assert edit.segment is not None
            if edit.verb == "segment_remove":
                return await store.remove_segment(key, edit.segment, actor)
            if edit.segment not in known_segments:
                known = ", ".join(sorted(known_segments)) or "none; define them under [segments]"
                raise InvalidTargeting(f"unknown segment {edit.segment[:40]!r} (known: {known}).")
            return await store.add_segment(key, edit.segment, actor)
        case "chats":
            assert edit.chat_types is not None
            return await store.set_chat_types(key, edit.chat_types, actor)


def describe(before: Flag, after: Flag) -> list[str]:
    """What a change moved, one line per field: "excluded users: + 42", "rollout: 5% → 25%"."""
    lines = []
    old_targeting, new_targeting = before.targeting, after.targeting
    for field, old, new in changed_fields(before, after):
        name = FIELD_NAMES.get(field, field)
        if hasattr(old_targeting, field):
            was = set(getattr(old_targeting, field))
            now = set(getattr(new_targeting, field))
            parts = [f"+ {v}" for v in sorted(now - was)] + [f"− {v}" for v in sorted(was - now)]
            if field == "chat_types" and not now:
                parts.append("(every chat type)")
            lines.append(f"{name}: {' '.join(parts)}")
        elif field == "rollout_percent":
            lines.append(f"{name}: {old}% → {new}%")
        else:
            lines.append(f"{name}: {old or '–'} → {new or '–'}")
    return lines
