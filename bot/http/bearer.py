"""The one bearer-token check of the HTTP side (OFREP, the API, alert webhooks)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from starlette.requests import Request


def bearer_token(request: Request) -> bytes | None:
    """The token of `Authorization: Bearer <token>`, as bytes; None without one."""
    return bearer_of(request.headers.get("authorization", ""))


def bearer_of(authorization: str) -> bytes | None:
    """The token of an Authorization header's value (its first, if sent twice), or None."""
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return None
    # Headers arrive as latin-1 text; back to their bytes for a constant-time compare.
    return given.strip().encode("latin-1")


def bearer_ok(request: Request, expected: bytes) -> bool:
    """`Authorization: Bearer <expected>`, compared in constant time; no token, no entry."""
    return bearer_matches(bearer_token(request), expected)


def bearer_matches(given: bytes | None, expected: bytes) -> bool:
    if not expected or given is None:
        return False
    return hmac.compare_digest(given, expected)


def token_by_hash(given: bytes, hashes: Iterable[tuple[str, str]]) -> str | None:
    """The name whose sha256 (hex) is that of `given`, or None. Every hash is compared, each
    in constant time, so the answer's timing does not say how close a guess came."""
    digest = hashlib.sha256(given).hexdigest().encode()
    found = None
    for name, sha256 in hashes:
        if hmac.compare_digest(digest, sha256.encode()) and found is None:
            found = name
    return found
