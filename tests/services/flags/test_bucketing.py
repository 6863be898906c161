import math
import subprocess
import sys
from pathlib import Path

import pytest

from services.flags.bucketing import (
    TOTAL_WEIGHT,
    bucket,
    fractional_variant,
    in_rollout,
    murmur3_32,
    rollout_weight,
)

REPO = Path(__file__).resolve().parents[3]
KEYS = [f"user-{i}" for i in range(100_000)]
SUITS = [("clubs", 25), ("diamonds", 25), ("hearts", 25), ("spades", 25)]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # MurmurHash3_x86_32 verification values, seed 0 (SMHasher's well-known set).
        (b"", 0),
        (b"\xff\xff\xff\xff", 0x76293B50),
        (b"!Ce\x87", 0xF55B516B),
        (b"Hello, world!", 0xC0363E43),
        (b"The quick brown fox jumps over the lazy dog", 0x2E4FF723),
        # mmh3's README: hash("foo") == -156908512 signed, i.e. 2**32 - 156908512 unsigned.
        (b"foo", 2**32 - 156908512),
    ],
)
def test_murmur3_known_vectors(data: bytes, expected: int) -> None:
    assert murmur3_32(data) == expected


# flagd-testbed, evaluator/gherkin/fractional.feature, @fractional-v2 examples, with the flag
# definitions of evaluator/flags/testkit-flags.json: what every flagd >= 0.15 returns.
@pytest.mark.parametrize(
    ("bucket_by", "expected"),
    [
        ("fractional-flagjack", "hearts"),
        ("fractional-flagqueen", "spades"),
        ("fractional-flagten", "clubs"),
        ("fractional-flagnine", "diamonds"),
        ("fractional-flag3", "clubs"),
        ("shared-seedseven", "hearts"),
        ("shared-seedeight", "diamonds"),
        ("shared-seednine", "clubs"),
        ("shared-seedtwo", "spades"),
    ],
)
def test_flagd_testbed_fractional_vectors(bucket_by: str, expected: str) -> None:
    assert fractional_variant(bucket_by.encode(), SUITS) == expected


@pytest.mark.parametrize(
    ("targeting_key", "expected"),
    [("jon@company.com", "heads"), ("jane@company.com", "tails")],
)
def test_flagd_testbed_shorthand_uses_flag_key_then_targeting_key(
    targeting_key: str, expected: str
) -> None:
    # `{"fractional": [["heads"], ["tails", 1]]}`: no bucketing value, so flagd's default.
    variants = ["heads", "tails"]
    assert variants[bucket("fractional-flag-shorthand", targeting_key, 2)] == expected


@pytest.mark.parametrize(
    ("key", "hash_value", "expected"),
    [
        ("ejOoVL", 0, "lower"),
        ("bY9fO-", 1, "lower"),
        ("SI7p-", 0x7FFFFFFF, "lower"),
        ("6LvT0", 0x80000000, "upper"),
        ("ceQdGm", 0xFFFFFFFF, "upper"),
    ],
)
def test_flagd_testbed_hash_edges(key: str, hash_value: int, expected: str) -> None:
    assert murmur3_32(key.encode()) == hash_value  # read as unsigned, never negative
    assert fractional_variant(key.encode(), [("lower", 50), ("upper", 50)]) == expected


def test_flagd_testbed_bucket_values_out_of_100() -> None:
    # The testbed's comments: "jon@company.com bv(100)=36; user1 bv(100)=76".
    assert bucket("", "jon@company.com", 100) == 36
    assert bucket("", "user1", 100) == 76


def test_bucketing_value_is_utf8_of_flag_key_then_targeting_key() -> None:
    expected = (murmur3_32("flagпользователь".encode()) * TOTAL_WEIGHT) >> 32
    assert bucket("flag", "пользователь") == expected
    assert bucket("ab", "c") == bucket("a", "bc")  # no separator, as in flagd


@pytest.mark.parametrize(
    ("percent", "weight"), [(0, 0), (0.1, 1), (0.3, 3), (2.5, 25), (25, 250), (100, 1000)]
)
def test_rollout_weight_in_thousandths(percent: float, weight: int) -> None:
    assert rollout_weight(percent) == weight


@pytest.mark.parametrize("percent", [-0.1, 100.1, math.nan, math.inf])
def test_rollout_weight_refuses_out_of_range(percent: float) -> None:
    with pytest.raises(ValueError, match="out of range"):
        rollout_weight(percent)


def test_fractional_variant_edge_weights() -> None:
    assert fractional_variant(b"x", [("a", 0), ("b", 0)]) is None
    assert fractional_variant(b"x", [("a", -5), ("b", 1)]) == "b"  # negative counts as 0
    assert fractional_variant(b"x", [("only", 1)]) == "only"


def test_lone_surrogate_is_an_error_not_a_crash() -> None:
    # mmh3.hash() given such a str kills the interpreter; run in a child so a regression
    # fails this test instead of taking pytest down with it.
    code = (
        "from services.flags.bucketing import bucket\n"
        "try:\n    bucket('flag', 'x\\udcff')\n"
        "except UnicodeEncodeError:\n    print('refused')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout.strip()) == (0, "refused"), result.stderr


@pytest.fixture(scope="module")
def buckets() -> dict[str, list[int]]:
    return {flag: [bucket(flag, key) for key in KEYS] for flag in ("checkout_v2", "new_search")}


def share(values: list[int], percent: float) -> float:
    weight = rollout_weight(percent)
    return 100 * sum(1 for b in values if b < weight) / len(values)


@pytest.mark.parametrize("percent", [5, 25, 50, 100])
def test_share_enabled_is_within_half_a_point(
    buckets: dict[str, list[int]], percent: float
) -> None:
    for values in buckets.values():
        assert abs(share(values, percent) - percent) < 0.5


def test_raising_only_adds_and_lowering_only_removes(buckets: dict[str, list[int]]) -> None:
    values = buckets["checkout_v2"]
    on = {p: {i for i, b in enumerate(values) if b < rollout_weight(p)} for p in (5, 25, 50)}
    assert on[25] <= on[50]  # nobody enabled at 25 is disabled at 50
    assert on[5] <= on[25]  # lowering to 5 only removes
    assert len(on[5]) < len(on[25]) < len(on[50])
    sample = KEYS[:2000]
    assert all(
        in_rollout("checkout_v2", k, 25) <= in_rollout("checkout_v2", k, 25.1) for k in sample
    )


def test_two_flags_bucket_independently(buckets: dict[str, list[int]]) -> None:
    a, b = buckets["checkout_v2"], buckets["new_search"]
    half = rollout_weight(50)
    both = sum(1 for x, y in zip(a, b, strict=True) if x < half and y < half)
    assert abs(100 * both / len(KEYS) - 25) < 0.7
    # The same users would be picked if the flag key were left out of the bucketing value.
    assert sum(1 for x, y in zip(a, b, strict=True) if x == y) < len(KEYS) * 0.01
