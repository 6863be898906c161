"""callback_data codec: `ns:action:id`, a short tag plus an opaque row id, within 64 bytes.

The id points at a database row; every press is re-validated against that row and the
presser's roles, so nothing in the button is trusted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_CALLBACK_BYTES = 64  # Telegram's limit
_PART = r"[a-z][a-z0-9_]{0,15}"
# 18 digits: always below SQLite's largest integer (2^63 - 1), so an id never overflows.
_CALLBACK_RE = re.compile(rf"({_PART}):({_PART}):([0-9]{{1,18}})")


class InvalidCallback(ValueError):
    """callback_data that opsgate did not make (forged, from an old version, or garbage)."""


@dataclass(frozen=True)
class CallbackData:
    namespace: str
    action: str
    row_id: int

    def encode(self) -> str:
        text = f"{self.namespace}:{self.action}:{self.row_id}"
        if not _CALLBACK_RE.fullmatch(text) or len(text.encode()) > MAX_CALLBACK_BYTES:
            raise ValueError(f"cannot encode callback data {text!r}")
        return text

    @classmethod
    def decode(cls, data: str | None) -> CallbackData:
        match = _CALLBACK_RE.fullmatch(data or "")
        if match is None:
            raise InvalidCallback(f"unrecognised callback data {data!r}")
        return cls(match.group(1), match.group(2), int(match.group(3)))


def pattern_for(namespace: str) -> str:
    """An anchored regex for CallbackQueryHandler: only this namespace's well-formed data."""
    return rf"^{re.escape(namespace)}:{_PART}:[0-9]{{1,18}}\Z"
