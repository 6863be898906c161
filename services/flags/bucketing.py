"""Sticky percentage bucketing, computed exactly as flagd's `fractional` operator computes it.

Two schemes (BucketingScheme), which differ only in the bytes that are hashed:

- `flagd-v2` (the default): the UTF-8 of the flag key followed by the targeting key, no
  separator. flagd's "fractional v2": flagd (Go) flagd/v0.15.0 through flagd/v0.16.1
  (core/v0.15.0 to core/v0.16.1, PR #1909, commit 7190878f; core/pkg/evaluator/fractional.go
  unchanged since 670c91cd and still so on main at bbb05d4b, 2026-07-31), the Python
  openfeature-flagd-core 1.0.0 used by openfeature-provider-flagd 0.5.x, and the flagd-testbed
  `@fractional-v2` vectors. Per issue 16, flagd's JS evaluator (@openfeature/flagd-core 4.0.1)
  agrees on ASCII keys only: it hashes UTF-16 code units.
- `flagd-v3`: the canonical CBOR (RFC 8949 section 4.2.1, core deterministic encoding) of the
  two-element array `[flag key, targeting key]` of text strings. flagd's "fractional v3"
  (ADR docs/architecture-decisions/fractional-non-string-rand-units.md): the Python
  openfeature-flagd-core 2.0.0 used by openfeature-provider-flagd 0.6.x (`cbor2.dumps(...,
  canonical=True)`), flagd (Go) PR #2011 (head 5b3c62a8, not merged into main at bbb05d4b), and
  the flagd-testbed v3.9.0 (197a3c0) `@fractional-v3` vectors.

From those bytes both schemes go the same way:

1. h = MurmurHash3 x86 32-bit, seed 0, read as unsigned;
2. bucket = (h * total_weight) >> 32, a number in [0, total_weight);
3. walk the variants in order, summing weights; the first whose running sum exceeds the
   bucket wins.

A rollout of p percent (steps of 0.1) is two variants in thousandths,
`[["on", w], ["off", 1000 - w]]` with w = round(p * 10): total 1000, and a user is on exactly
when `bucket(flag, user) < w`. A user's bucket never depends on p, so raising p only adds users
and lowering it only removes them. The flagd export writes that same `fractional`, so flagd
and opsgate put exactly the same users in a rollout when they use the same scheme; the two
schemes pick different users (about half of them change sides at 50%).

Older flagd (before 0.15.0, "fractional v1") mapped the hash through floats onto [0, 100]
and picks different users again; no scheme here matches it.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from functools import lru_cache

import mmh3

# Weights in thousandths of the audience: 0.1 percentage-point steps, flagd-compatible.
TOTAL_WEIGHT = 1000
MAX_PERCENT = 100.0

# CBOR major types (RFC 8949 section 3.1) the v3 bucketing value uses.
_CBOR_TEXT = 3
_CBOR_ARRAY = 4


class BucketingScheme(StrEnum):
    """Which bytes flagd hashes for a flag key and a targeting key."""

    V2 = "flagd-v2"  # UTF-8 of flag key + targeting key
    V3 = "flagd-v3"  # canonical CBOR of [flag key, targeting key]


DEFAULT_SCHEME = BucketingScheme.V2
# Looked up once: on Python 3.11 each `BucketingScheme.V2` is a descriptor call, and the
# bucketing value is built once per OFREP request.
_V2, _V3 = BucketingScheme.V2, BucketingScheme.V3


def murmur3_32(data: bytes) -> int:
    """MurmurHash3 x86 32-bit with seed 0, as an unsigned integer."""
    # The bytes-only entry point on purpose: mmh3.hash() given a str with a lone surrogate
    # crashes the interpreter (seen with mmh3 5.3.1); encoding first raises a clean error.
    return mmh3.mmh3_32_uintdigest(data, 0)


def cbor_head(major_type: int, argument: int) -> bytes:
    """A CBOR data item's head in its shortest form (RFC 8949 sections 3 and 4.2.1)."""
    if not 0 <= major_type <= 7 or not 0 <= argument < 2**64:
        raise ValueError(f"no CBOR head for major type {major_type}, argument {argument}")
    initial = major_type << 5
    if argument < 24:
        return bytes((initial | argument,))
    for additional, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if argument < 1 << (8 * size):
            return bytes((initial | additional,)) + argument.to_bytes(size, "big")
    raise AssertionError("unreachable: argument < 2**64")


def cbor_text(text: str) -> bytes:
    """A CBOR text string (major type 3): the UTF-8 length as the head, then the UTF-8."""
    data = text.encode("utf-8")
    return cbor_head(_CBOR_TEXT, len(data)) + data


def cbor_text_array(items: Sequence[str]) -> bytes:
    """A definite-length CBOR array (major type 4) of text strings, canonically encoded."""
    return cbor_head(_CBOR_ARRAY, len(items)) + b"".join(cbor_text(item) for item in items)


# The hot path's shortcuts for v3: each flag's prefix (array head, flag key) is built once, and
# text heads for the lengths targeting keys have are looked up. Equal to cbor_text_array().
_TEXT_HEADS = tuple(cbor_head(_CBOR_TEXT, n) for n in range(4096))


@lru_cache(maxsize=4096)
def _v3_prefix(flag_key: str) -> bytes:
    return cbor_head(_CBOR_ARRAY, 2) + cbor_text(flag_key)


def bucketing_value(
    flag_key: str, targeting_key: str, scheme: BucketingScheme = DEFAULT_SCHEME
) -> bytes:
    """The bytes flagd hashes for a flag and a targeting key under the scheme."""
    if scheme == _V2:
        return (flag_key + targeting_key).encode("utf-8")
    if scheme == _V3:
        data = targeting_key.encode("utf-8")
        size = len(data)
        head = _TEXT_HEADS[size] if size < len(_TEXT_HEADS) else cbor_head(_CBOR_TEXT, size)
        return _v3_prefix(flag_key) + head + data
    raise ValueError(f"unknown bucketing scheme: {scheme!r}")


def bucket(
    flag_key: str,
    targeting_key: str,
    total_weight: int = TOTAL_WEIGHT,
    scheme: BucketingScheme = DEFAULT_SCHEME,
) -> int:
    """Where a targeting key falls for a flag, in [0, total_weight)."""
    value = bucketing_value(flag_key, targeting_key, scheme)
    return (mmh3.mmh3_32_uintdigest(value, 0) * total_weight) >> 32  # murmur3_32(), inlined


def rollout_weight(percent: float) -> int:
    """The `on` weight out of TOTAL_WEIGHT for a rollout percentage (0 to 100, steps of 0.1)."""
    if not 0.0 <= percent <= MAX_PERCENT:  # also false for NaN
        raise ValueError(f"rollout percentage out of range: {percent!r}")
    return round(percent * 10)


def in_rollout(
    flag_key: str,
    targeting_key: str,
    percent: float,
    scheme: BucketingScheme = DEFAULT_SCHEME,
) -> bool:
    """True when the targeting key is among the first `percent` of the flag's audience."""
    weight = rollout_weight(percent)
    value = bucketing_value(flag_key, targeting_key, scheme)
    return (mmh3.mmh3_32_uintdigest(value, 0) * TOTAL_WEIGHT) >> 32 < weight  # bucket() < weight


def fractional_variant(value: bytes, distribution: Sequence[tuple[str, int]]) -> str | None:
    """flagd's variant choice for an already-built bucketing value and weighted variants.

    The same for both schemes once the value is built (see `bucketing_value`). None when every
    weight is zero (flagd then falls back to the default variant). Negative weights count as
    zero, as in flagd.
    """
    distribution = [(variant, max(weight, 0)) for variant, weight in distribution]
    total = sum(weight for _, weight in distribution)
    if total <= 0:
        return None
    point = (murmur3_32(value) * total) >> 32
    running = 0
    for variant, weight in distribution:
        running += weight
        if point < running:
            return variant
    return None  # unreachable: point < total


def split_variant(
    flag_key: str,
    targeting_key: str,
    distribution: Sequence[tuple[str, int]],
    scheme: BucketingScheme = DEFAULT_SCHEME,
) -> str | None:
    """flagd's `{"fractional": [[variant, weight], ...]}` without a bucketing value."""
    return fractional_variant(bucketing_value(flag_key, targeting_key, scheme), distribution)
