"""Who is looking at the dashboard: Telegram's Mini App initData, session cookies, CSRF.

initData (https://core.telegram.org/bots/webapps#validating-data-received-via-the-mini-app):
    data_check_string = every field but `hash`, "key=value", sorted by key, joined by "\\n"
    secret_key        = HMAC_SHA256(key="WebAppData", msg=bot_token)
    hash              = hex(HMAC_SHA256(key=secret_key, msg=data_check_string))

A session is a signed cookie (person, expiry, nonce; HMAC with a key derived from the bot
token), so it survives a restart and needs no table; the person is checked against [people]
on every request, so removing someone from the ops file ends their sessions. The CSRF token
is derived from the session's nonce and sent back in a header on every write.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import parse_qsl

MAX_INIT_DATA = 4096  # Telegram's initData is well under this
FUTURE_SKEW_S = 60  # an auth_date this far ahead of our clock is still believed
COOKIE = "opsgate_session"


class InitDataRefused(Exception):
    """initData that does not prove a Telegram user: the message says what was wrong."""


@dataclass(frozen=True)
class TelegramUser:
    id: int
    first_name: str
    username: str | None


def webapp_secret(bot_token: str) -> bytes:
    return hmac.new(b"WebAppData", bot_token.encode(), hashlib.sha256).digest()


def validate_init_data(raw: str, bot_token: str, max_age_s: int, now: float) -> TelegramUser:
    """The user initData names, once its hash proves Telegram signed it for this bot and its
    auth_date is recent; InitDataRefused otherwise."""
    if not raw or len(raw) > MAX_INIT_DATA:
        raise InitDataRefused("initData is missing or too long")
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise InitDataRefused("initData is not a query string") from None
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise InitDataRefused("initData repeats a field")
    given = fields.pop("hash", "")
    check = "\n".join(f"{key}={value}" for key, value in sorted(fields.items()))
    expected = hmac.new(webapp_secret(bot_token), check.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise InitDataRefused("initData's hash does not match: not signed by Telegram for this bot")
    auth_date = fields.get("auth_date", "")
    if not auth_date.isdigit():
        raise InitDataRefused("initData has no auth_date")
    age = now - int(auth_date)
    if age > max_age_s or age < -FUTURE_SKEW_S:
        raise InitDataRefused(f"initData is stale (signed {age:.0f} s ago); open the app again")
    try:
        user = json.loads(fields.get("user", ""))
        user_id = user["id"]
    except (ValueError, TypeError, KeyError):
        raise InitDataRefused("initData names no user") from None
    if not isinstance(user_id, int) or isinstance(user_id, bool) or user_id <= 0:
        raise InitDataRefused("initData names no user")
    username = user.get("username")
    return TelegramUser(
        user_id,
        str(user.get("first_name", "")),
        username if isinstance(username, str) else None,
    )


@dataclass(frozen=True)
class Session:
    person: int
    expires: int  # unix seconds
    nonce: str


class SessionSigner:
    """Makes and reads the session cookie and its CSRF token."""

    def __init__(self, bot_token: str) -> None:
        # Derived, so the cookie key is not the token itself and changes when the token does.
        self._key = hmac.new(b"opsgate dashboard sessions", bot_token.encode(), "sha256").digest()

    def _sign(self, text: str) -> str:
        digest = hmac.new(self._key, text.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def issue(self, person: int, ttl_s: int, now: float | None = None) -> tuple[str, Session]:
        now = time.time() if now is None else now
        session = Session(person, int(now) + ttl_s, secrets.token_urlsafe(12))
        body = f"{session.person}.{session.expires}.{session.nonce}"
        return f"{body}.{self._sign(body)}", session

    def read(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie holds, if its signature is ours and it has not expired."""
        if not cookie or len(cookie) > 200:
            return None
        body, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
            return None
        person, expires, nonce = [*body.split(".", 2), "", ""][:3]
        if not person.isdigit() or not expires.isdigit() or not nonce:
            return None
        if int(expires) <= (time.time() if now is None else now):
            return None
        return Session(int(person), int(expires), nonce)

    def csrf(self, session: Session) -> str:
        return self._sign(f"csrf.{session.nonce}")[:32]

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(
            given.encode(), self.csrf(session).encode()
        )


class RateLimit:
    """At most `limit` attempts per `per_s` seconds per client address (sign-in endpoints)."""

    def __init__(self, limit: int = 20, per_s: float = 60.0) -> None:
        self._limit = limit
        self._per_s = per_s
        self._seen: dict[str, deque[float]] = {}

    def retry_after(self, client: str, now: float | None = None) -> int:
        """0 when this attempt may go ahead (and counts it), else the seconds to wait."""
        now = time.monotonic() if now is None else now
        if len(self._seen) > 10_000:  # many addresses: forget the idle ones
            self._seen = {k: v for k, v in self._seen.items() if v and v[-1] > now - self._per_s}
        seen = self._seen.setdefault(client, deque())
        while seen and seen[0] <= now - self._per_s:
            seen.popleft()
        if len(seen) >= self._limit:
            return max(1, int(seen[0] + self._per_s - now) + 1)
        seen.append(now)
        return 0
