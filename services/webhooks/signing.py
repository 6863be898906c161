"""Standard Webhooks signatures: `v1,` + base64 HMAC-SHA256 of "{id}.{timestamp}.{body}".

The secret is "whsec_" + base64; the HMAC key is the decoded part. Spec:
https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from services.errors import OpsgateError

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)


class WebhookError(OpsgateError):
    """A subscription that cannot be sent to as configured (e.g. its secret is missing)."""

    kind = "invalid"


def secret_key(secret: str) -> bytes:
    """The HMAC key of a "whsec_..." secret; the message never repeats the secret."""
    if not secret.startswith(SECRET_PREFIX):
        raise WebhookError("the secret does not start with whsec_")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise WebhookError("the secret after whsec_ is not base64") from None
    if len(key) < 16:
        raise WebhookError("the secret is shorter than 16 bytes")
    return key


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(key: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of one attempt (the timestamp is the attempt's, the id the event's)."""
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, message_id, timestamp, body),
    }
