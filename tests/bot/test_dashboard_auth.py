"""The dashboard's sign-in: Telegram's initData check, the session cookie, CSRF, rate limit."""

import hashlib
import hmac
import json
from urllib.parse import urlencode

import pytest

from bot.http.dashboard.auth import (
    InitDataRefused,
    RateLimit,
    SessionSigner,
    validate_init_data,
)

# A public example of initData signed with its bot token (Telegram Mini Apps' documentation).
EXAMPLE_TOKEN = "5768337691:AAH5YkoiEuPk8-FZa32hStHTqXiLPtAEhx8"
EXAMPLE = (
    "query_id=AAHdF6IQAAAAAN0XohDhrOrc&user=%7B%22id%22%3A279058397%2C%22first_name%22%3A"
    "%22Vladislav%22%2C%22last_name%22%3A%22Kibenko%22%2C%22username%22%3A%22vdkfrost%22%2C"
    "%22language_code%22%3A%22ru%22%2C%22is_premium%22%3Atrue%7D&auth_date=1662771648"
    "&hash=c501b71e775f74ce10e377dea85a7ea24ecd640b223ea86dfe453e0eaed2e2b2"
)
SIGNED_AT = 1662771648
TOKEN = "7100000001:AAE2E-test-token-never-logged-anywhere"


def signed(fields: dict[str, str], token: str = TOKEN) -> str:
    """initData as Telegram makes it, written here from the documentation."""
    check = "\n".join(f"{k}={v}" for k, v in sorted(fields.items()))
    secret = hmac.new(b"WebAppData", token.encode(), hashlib.sha256).digest()
    digest = hmac.new(secret, check.encode(), hashlib.sha256).hexdigest()
    return urlencode({**fields, "hash": digest})


def fields(user_id: int = 1001, auth_date: int = 1_800_000_000) -> dict[str, str]:
    user = json.dumps({"id": user_id, "first_name": "Alice", "username": "alice"})
    return {"query_id": "AAE", "user": user, "auth_date": str(auth_date)}


def test_the_documented_example_is_accepted() -> None:
    user = validate_init_data(EXAMPLE, EXAMPLE_TOKEN, 3600, SIGNED_AT + 10)
    assert (user.id, user.first_name, user.username) == (279058397, "Vladislav", "vdkfrost")


def test_the_example_with_another_token_or_a_changed_field_is_refused() -> None:
    with pytest.raises(InitDataRefused, match="hash does not match"):
        validate_init_data(EXAMPLE, TOKEN, 3600, SIGNED_AT + 10)
    forged = EXAMPLE.replace("279058397", "279058398")
    with pytest.raises(InitDataRefused, match="hash does not match"):
        validate_init_data(forged, EXAMPLE_TOKEN, 3600, SIGNED_AT + 10)


def test_fields_beyond_the_usual_ones_are_signed_too() -> None:
    data = signed({**fields(), "signature": "abc", "chat_type": "sender"})
    assert validate_init_data(data, TOKEN, 3600, 1_800_000_001).id == 1001
    tampered = data.replace("chat_type=sender", "chat_type=group")
    with pytest.raises(InitDataRefused):
        validate_init_data(tampered, TOKEN, 3600, 1_800_000_001)


@pytest.mark.parametrize(
    ("now", "ok"),
    [(1_800_000_000 + 3600, True), (1_800_000_000 + 3601, False), (1_800_000_000 - 120, False)],
)
def test_auth_date_must_be_recent(now: int, ok: bool) -> None:
    data = signed(fields())
    if ok:
        assert validate_init_data(data, TOKEN, 3600, now).id == 1001
    else:
        with pytest.raises(InitDataRefused, match="stale"):
            validate_init_data(data, TOKEN, 3600, now)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "missing"),
        ("x" * 5000, "too long"),
        ("a=1&a=2", "repeats"),
        (signed({"user": json.dumps({"id": 5}), "query_id": "q"}), "no auth_date"),
        (signed({"auth_date": "1800000000"}), "no user"),
        (signed({**fields(), "user": json.dumps({"id": "5"})}), "no user"),
        (signed({**fields(), "user": "not json"}), "no user"),
    ],
)
def test_malformed_init_data_is_refused_with_its_reason(raw: str, why: str) -> None:
    with pytest.raises(InitDataRefused, match=why):
        validate_init_data(raw, TOKEN, 3600, 1_800_000_000)


def test_a_session_cookie_reads_back_and_resists_forgery_and_expiry() -> None:
    signer = SessionSigner(TOKEN)
    cookie, session = signer.issue(1001, 60, now=1000)
    assert signer.read(cookie, now=1059) == session
    assert signer.read(cookie, now=1060) is None  # expired
    person, expires, nonce, signature = cookie.split(".")
    assert signer.read(f"1002.{expires}.{nonce}.{signature}", now=1001) is None
    assert signer.read(f"{person}.9999999999.{nonce}.{signature}", now=1001) is None
    assert SessionSigner(TOKEN + "x").read(cookie, now=1001) is None  # another bot's key
    assert signer.read(None) is None and signer.read("garbage") is None


def test_csrf_is_tied_to_the_session() -> None:
    signer = SessionSigner(TOKEN)
    _, one = signer.issue(1001, 60)
    _, two = signer.issue(1001, 60)
    assert signer.csrf_ok(one, signer.csrf(one))
    assert not signer.csrf_ok(one, signer.csrf(two))
    assert not signer.csrf_ok(one, None) and not signer.csrf_ok(one, "")


def test_the_rate_limit_counts_per_address_and_forgets_after_its_window() -> None:
    limit = RateLimit(limit=3, per_s=60)
    assert [limit.retry_after("a", now=t) for t in (0, 1, 2)] == [0, 0, 0]
    assert limit.retry_after("a", now=3) == 58
    assert limit.retry_after("b", now=3) == 0
    assert limit.retry_after("a", now=60.5) == 0
