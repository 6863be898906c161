import base64

import pytest

from services.webhooks.signing import WebhookError, secret_key, signature, signed_headers

# The Standard Webhooks reference libraries' test vector.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
STAMP = 1614265330
BODY = b'{"test": 2432232314}'


def test_signature_matches_the_reference_vector() -> None:
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert signature(secret_key(SECRET), MSG_ID, STAMP, BODY) == expected


def test_headers_carry_id_timestamp_and_signature() -> None:
    headers = signed_headers(secret_key(SECRET), MSG_ID, STAMP, BODY)
    assert headers["webhook-id"] == MSG_ID and headers["webhook-timestamp"] == str(STAMP)
    assert headers["webhook-signature"].startswith("v1,")
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "bad",
    [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_not base64!",
        "whsec_" + base64.b64encode(b"short").decode(),
    ],
)
def test_unusable_secrets_are_refused_without_repeating_them(bad: str) -> None:
    with pytest.raises(WebhookError) as raised:
        secret_key(bad)
    assert bad not in str(raised.value)
