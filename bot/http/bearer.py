"""The one bearer-token check of the HTTP side (OFREP, the API, alert webhooks)."""

from __future__ import annotations

import hmac

from starlette.requests import Request


def bearer_ok(request: Request, expected: bytes) -> bool:
    """`Authorization: Bearer <expected>`, compared in constant time; no token, no entry."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if not expected or scheme.lower() != "bearer":
        return False
    # Headers arrive as latin-1 text; back to their bytes for a constant-time compare.
    return hmac.compare_digest(given.strip().encode("latin-1"), expected)
