"""Telegram Mini App initData as a Telegram client hands it to a page, signed from Telegram's
own spec (https://core.telegram.org/bots/webapps#validating-data-received-via-the-mini-app),
for the dashboard's tests and bench. Written apart from opsgate's checking code on purpose: a
test that signs with the code it checks proves nothing.

    data = init_data(TOKEN, user_id=1001, first_name="Alice", username="alice")
    url = f"http://127.0.0.1:{port}/app/{fragment(data)}"

data_check_string = every field but `hash`, as `key=value`, sorted by key, joined by "\\n";
secret_key = HMAC_SHA256(key=b"WebAppData", msg=bot_token);
hash = hex(HMAC_SHA256(key=secret_key, msg=data_check_string)).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from urllib.parse import quote, urlencode

WEB_APP_VERSION = "8.0"


def data_check_string(fields: Mapping[str, str]) -> str:
    return "\n".join(f"{key}={value}" for key, value in sorted(fields.items()) if key != "hash")


def signature(fields: Mapping[str, str], bot_token: str) -> str:
    """The `hash` Telegram puts beside `fields` for the bot with `bot_token`."""
    secret_key = hmac.new(b"WebAppData", bot_token.encode(), hashlib.sha256).digest()
    check = data_check_string(fields).encode()
    return hmac.new(secret_key, check, hashlib.sha256).hexdigest()


def encode(fields: Mapping[str, str]) -> str:
    """A query string as Telegram's clients write it (percent-encoding, `%20` for a space)."""
    return urlencode(fields, quote_via=quote)


def user_json(user_id: int, first_name: str, username: str | None = None) -> str:
    user: dict[str, object] = {"id": user_id, "first_name": first_name, "language_code": "en"}
    if username is not None:
        user["username"] = username
    user["allows_write_to_pm"] = True
    return json.dumps(user, separators=(",", ":"), ensure_ascii=False)


def init_fields(
    user_id: int,
    first_name: str,
    username: str | None = None,
    auth_date: int | None = None,
) -> dict[str, str]:
    """The unsigned fields of a fresh initData (auth_date now unless given)."""
    return {
        "query_id": "AAH" + secrets.token_urlsafe(18),
        "user": user_json(user_id, first_name, username),
        "auth_date": str(int(time.time()) if auth_date is None else auth_date),
    }


def sign(fields: Mapping[str, str], bot_token: str) -> str:
    """`fields` with their `hash`, as a raw initData query string."""
    return encode({**fields, "hash": signature(fields, bot_token)})


def init_data(
    bot_token: str,
    user_id: int,
    first_name: str,
    username: str | None = None,
    auth_date: int | None = None,
) -> str:
    """A valid initData for this user, signed for the bot with `bot_token`."""
    return sign(init_fields(user_id, first_name, username, auth_date), bot_token)


def fragment(raw_init_data: str, platform: str = "web") -> str:
    """The URL fragment a Telegram client opens a Mini App with (initData percent-encoded)."""
    params = {
        "tgWebAppData": raw_init_data,
        "tgWebAppVersion": WEB_APP_VERSION,
        "tgWebAppPlatform": platform,
    }
    return "#" + urlencode(params, quote_via=quote)
