"""Sticky percentage bucketing, computed exactly as flagd's `fractional` operator computes it.

The algorithm (flagd >= 0.15.0, "fractional v2", flagd PR #1909 and its high-precision
bucketing ADR; the flagd-testbed `@fractional-v2` vectors pin it):

1. bucketing value = flag key followed by targeting key, no separator (flagd's default:
   `{"cat": [{"var": "$flagd.flagKey"}, {"var": "targetingKey"}]}`);
2. h = MurmurHash3 x86 32-bit, seed 0, over its UTF-8 bytes, read as unsigned;
3. bucket = (h * total_weight) >> 32, a number in [0, total_weight);
4. walk the variants in order, summing weights; the first whose running sum exceeds the
   bucket wins.

A rollout of p percent (steps of 0.1) is two variants in thousandths,
`[["on", w], ["off", 1000 - w]]` with w = round(p * 10): total 1000, and a user is on exactly
when `bucket(flag, user) < w`. A user's bucket never depends on p, so raising p only adds users
and lowering it only removes them. The flagd export writes that same `fractional`, so flagd
and opsgate put exactly the same users in a rollout.

Older flagd (before 0.15.0, "fractional v1") mapped the hash through floats onto [0, 100]
and picks different users; flagd's pending CBOR hashing ("fractional v3", flagd PR #2011, not
merged when this was written) would too. The export is for flagd 0.15 and later.
"""

from __future__ import annotations

from collections.abc import Sequence

import mmh3

# Weights in thousandths of the audience: 0.1 percentage-point steps, flagd-compatible.
TOTAL_WEIGHT = 1000
MAX_PERCENT = 100.0


def murmur3_32(data: bytes) -> int:
    """MurmurHash3 x86 32-bit with seed 0, as an unsigned integer."""
    # The bytes-only entry point on purpose: mmh3.hash() given a str with a lone surrogate
    # crashes the interpreter (seen with mmh3 5.3.1); encoding first raises a clean error.
    return mmh3.mmh3_32_uintdigest(data, 0)


def bucketing_value(flag_key: str, targeting_key: str) -> bytes:
    """flagd's default bucketing value: the flag key then the targeting key, UTF-8."""
    return (flag_key + targeting_key).encode("utf-8")


def bucket(flag_key: str, targeting_key: str, total_weight: int = TOTAL_WEIGHT) -> int:
    """Where a targeting key falls for a flag, in [0, total_weight)."""
    return (murmur3_32(bucketing_value(flag_key, targeting_key)) * total_weight) >> 32


def rollout_weight(percent: float) -> int:
    """The `on` weight out of TOTAL_WEIGHT for a rollout percentage (0 to 100, steps of 0.1)."""
    if not 0.0 <= percent <= MAX_PERCENT:  # also false for NaN
        raise ValueError(f"rollout percentage out of range: {percent!r}")
    return round(percent * 10)


def in_rollout(flag_key: str, targeting_key: str, percent: float) -> bool:
    """True when the targeting key is among the first `percent` of the flag's audience."""
    return bucket(flag_key, targeting_key) < rollout_weight(percent)


def fractional_variant(value: bytes, distribution: Sequence[tuple[str, int]]) -> str | None:
    """flagd's variant choice for an already-built bucketing value and weighted variants.

    None when every weight is zero (flagd then falls back to the default variant). Negative
    weights count as zero, as in flagd.
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
