"""The two bucketing schemes: flagd's string hashing (v2) and CBOR hashing (v3), the CBOR
encoder v3 needs, and the flagd-testbed vectors each scheme must reproduce."""

import pytest

from services.flags.bucketing import (
    TOTAL_WEIGHT,
    BucketingScheme,
    bucket,
    bucketing_value,
    cbor_head,
    cbor_text,
    cbor_text_array,
    fractional_variant,
    in_rollout,
    murmur3_32,
    rollout_weight,
    split_variant,
)

V2, V3 = BucketingScheme.V2, BucketingScheme.V3
KEYS = [f"user-{i}" for i in range(100_000)]
SUITS = [("clubs", 25), ("diamonds", 25), ("hearts", 25), ("spades", 25)]
BUCKETS_OF_4 = [(f"bucket{i}", 4) for i in range(1, 26)]  # testbed's fractional-basic-flag


def test_issue_16_example() -> None:
    assert bucket("checkout_v2", "u2@example.com") == 621  # v2 stays the default
    assert bucket("checkout_v2", "u2@example.com", scheme=V2) == 621
    assert bucket("checkout_v2", "u2@example.com", scheme=V3) == 490
    assert bucket("checkout_v2", "u2@example.com", TOTAL_WEIGHT, V3) == 490


def test_scheme_names() -> None:
    assert [s.value for s in BucketingScheme] == ["flagd-v2", "flagd-v3"]
    assert BucketingScheme("flagd-v3") is V3
    assert str(V2) == "flagd-v2"
    assert bucket("f", "k", scheme=BucketingScheme("flagd-v3")) == bucket("f", "k", scheme=V3)


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown bucketing scheme"):
        bucketing_value("f", "k", "flagd-v1")  # type: ignore[arg-type]


def test_bucketing_values_byte_for_byte() -> None:
    assert bucketing_value("checkout_v2", "u2@example.com", V2) == b"checkout_v2u2@example.com"
    # array(2), text(11) "checkout_v2", text(14) "u2@example.com"
    assert bucketing_value("checkout_v2", "u2@example.com", V3) == (
        b"\x82" + b"\x6bcheckout_v2" + b"\x6eu2@example.com"
    )
    # The lengths are in the bytes, so moving a character across the boundary changes them.
    assert bucketing_value("ab", "c", V3) != bucketing_value("a", "bc", V3)
    assert bucket("ab", "c", scheme=V2) == bucket("a", "bc", scheme=V2)


# RFC 8949 Appendix A, the text strings, and heads of the lengths where their form changes.
@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("", "60"),
        ("a", "6161"),
        ("IETF", "6449455446"),
        ('"\\', "62225c"),
        ("\u00fc", "62c3bc"),
        ("\u6c34", "63e6b0b4"),
        ("\U00010151", "64f0908591"),  # "\ud800\udd51" in the RFC's JSON-style notation
    ],
)
def test_cbor_text_rfc8949_appendix_a(text: str, encoded: str) -> None:
    assert cbor_text(text) == bytes.fromhex(encoded)


@pytest.mark.parametrize(
    ("length", "head"),
    [
        (0, "60"),
        (23, "77"),
        (24, "7818"),
        (255, "78ff"),
        (256, "790100"),
        (65535, "79ffff"),
        (65536, "7a00010000"),
    ],
)
def test_cbor_text_length_heads(length: int, head: str) -> None:
    assert cbor_text("x" * length) == bytes.fromhex(head) + b"x" * length
    # The length counts UTF-8 bytes, not characters: "ж" is two bytes.
    if length % 2 == 0:
        assert cbor_text("ж" * (length // 2))[: len(head) // 2] == bytes.fromhex(head)


@pytest.mark.parametrize(
    ("count", "head"),
    [(0, "80"), (1, "81"), (2, "82"), (23, "97"), (24, "9818"), (255, "98ff"), (256, "990100")],
)
def test_cbor_array_heads(count: int, head: str) -> None:
    assert cbor_text_array(["a"] * count) == bytes.fromhex(head) + b"\x61a" * count


def test_cbor_array_of_text_rfc8949_appendix_a() -> None:
    # Appendix A: [] is 0x80, and [1, 2, ..., 25] starts 0x98 0x19 (the count in one byte).
    assert cbor_text_array([]) == bytes.fromhex("80")
    assert cbor_text_array(["a", "b"]) == bytes.fromhex("82") + bytes.fromhex("6161") + b"\x61b"
    assert cbor_text_array(["x"] * 25)[:2] == bytes.fromhex("9819")


@pytest.mark.parametrize("size", [0, 23, 24, 255, 256, 4095, 4096, 70_000])
@pytest.mark.parametrize("flag_key", ["f", "payments.retry-with-backoff_v3"])
def test_v3_value_is_the_cbor_of_the_pair(flag_key: str, size: int) -> None:
    # bucketing_value's v3 shortcuts (cached prefixes, looked-up heads) against the encoder.
    for key in ("x" * size, "ж" * (size // 2)):
        assert bucketing_value(flag_key, key, V3) == cbor_text_array([flag_key, key])


def test_cbor_head_widths_and_limits() -> None:
    assert cbor_head(4, 2**32 - 1) == bytes.fromhex("9affffffff")
    assert cbor_head(4, 2**32) == bytes.fromhex("9b0000000100000000")
    assert cbor_head(3, 2**64 - 1) == bytes.fromhex("7bffffffffffffffff")
    for major, argument in ((3, 2**64), (3, -1), (8, 0)):
        with pytest.raises(ValueError, match="no CBOR head"):
            cbor_head(major, argument)


@pytest.mark.parametrize(
    "targeting_key",
    [
        "пользователь",  # Cyrillic
        "用户一号",  # CJK
        "😀👩\u200d💻🏳️\u200d🌈",  # emoji, ZWJ sequences, a variation selector
        "e\u0301a\u0308",  # combining marks (NFD)
        "ж" * 150,  # 300 bytes: a two-byte length head
    ],
)
def test_non_ascii_keys_are_utf8_with_byte_lengths(targeting_key: str) -> None:
    data = targeting_key.encode("utf-8")
    assert bucketing_value("flag", targeting_key, V2) == b"flag" + data
    assert bucketing_value("flag", targeting_key, V3) == (
        b"\x82\x64flag" + cbor_head(3, len(data)) + data
    )
    expected = (murmur3_32(b"\x82\x64flag" + cbor_head(3, len(data)) + data) * 1000) >> 32
    assert bucket("flag", targeting_key, scheme=V3) == expected


def test_no_unicode_normalisation() -> None:
    # flagd hashes the bytes it is given: é composed and é decomposed are two users.
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    assert bucketing_value("f", composed, V3) != bucketing_value("f", decomposed, V3)


def test_lone_surrogate_is_refused_by_v3_too() -> None:
    with pytest.raises(UnicodeEncodeError):
        bucket("flag", "x\udcff", scheme=V3)


# flagd-testbed v3.9.0 (commit 82ba89ec, vectors added in 197a3c0), gherkin/targeting.feature,
# @fractional-v3 examples, with the flag definitions of flags/custom-ops.json.
@pytest.mark.parametrize(
    ("bucket_by", "expected"),
    [
        # fractional-flag: {"cat": [{"var": "$flagd.flagKey"}, {"var": "user.name"}]}, a string,
        # so v3 hashes its CBOR text string.
        ("fractional-flagjack", "diamonds"),
        ("fractional-flagqueen", "diamonds"),
        ("fractional-flagten", "clubs"),
        ("fractional-flagnine", "clubs"),
        ("fractional-flag3", "spades"),
        # fractional-flag-A-shared-seed: {"cat": ["shared-seed", {"var": "user.name"}]}
        ("shared-seedseven", "hearts"),
        ("shared-seedeight", "hearts"),
        ("shared-seednine", "diamonds"),
        ("shared-seedtwo", "diamonds"),
    ],
)
def test_flagd_testbed_v3_cat_vectors(bucket_by: str, expected: str) -> None:
    assert fractional_variant(cbor_text(bucket_by), SUITS) == expected


@pytest.mark.parametrize(
    ("hashing_input", "expected"),
    [
        ("user1", "bucket22"),
        ("user2", "bucket16"),
        ("123", "bucket22"),
        ("true", "bucket24"),
        ("false", "bucket1"),
        ("null", "bucket8"),
        ("1.23", "bucket4"),
        # "string length boundaries": CBOR heads of 0, 1, 23, 24, 255 and 256 bytes
        ("", "bucket4"),
        ("a", "bucket6"),
        ("12345678901234567890123", "bucket4"),
        ("123456789012345678901234", "bucket14"),
        ("a" * 255, "bucket18"),
        ("a" * 256, "bucket7"),
        # "valid well-formed UTF-8 string consistency across different languages"
        ("あいうえおかき", "bucket17"),
        ("あいうえおかきく", "bucket16"),
        ("é" * 11, "bucket16"),
        ("é" * 12, "bucket19"),
        ("café façade résumé café", "bucket9"),
        # The testbed's steps pass these table cells as written, backslashes included.
        ("A\\u0000B", "bucket15"),
        ("e\\u0301", "bucket7"),
        ("\\uD83D\\uDE00", "bucket23"),
    ],
)
def test_flagd_testbed_v3_string_vectors(hashing_input: str, expected: str) -> None:
    # fractional-basic-flag: {"fractional": [{"var": "hashing_input"}, ["bucket1", 4], ...]}
    assert fractional_variant(cbor_text(hashing_input), BUCKETS_OF_4) == expected


@pytest.mark.parametrize(
    ("scheme", "targeting_key", "expected"),
    [
        (V2, "jon@company.com", "heads"),
        (V2, "jane@company.com", "tails"),
        (V3, "jon@company.com", "tails"),
        (V3, "jane@company.com", "tails"),
        (V3, "user-1", "heads"),
        (V3, "user-2", "tails"),
        (V3, "user-3", "heads"),
    ],
)
def test_flagd_testbed_shorthand_per_scheme(
    scheme: BucketingScheme, targeting_key: str, expected: str
) -> None:
    # fractional-flag-shorthand: {"fractional": [["heads"], ["tails", 1]]}, no bucketing
    # value: the flag key and the targeting key, hashed the scheme's way.
    distribution = [("heads", 1), ("tails", 1)]
    assert split_variant("fractional-flag-shorthand", targeting_key, distribution, scheme) == (
        expected
    )


@pytest.fixture(scope="module")
def v3_buckets() -> dict[str, list[int]]:
    return {f: [bucket(f, key, scheme=V3) for key in KEYS] for f in ("checkout_v2", "new_search")}


@pytest.mark.parametrize("percent", [5, 25, 50])
def test_v3_share_enabled_is_within_half_a_point(
    v3_buckets: dict[str, list[int]], percent: float
) -> None:
    weight = rollout_weight(percent)
    for values in v3_buckets.values():
        assert abs(100 * sum(b < weight for b in values) / len(values) - percent) < 0.5


def test_v3_is_sticky_and_flags_are_independent(v3_buckets: dict[str, list[int]]) -> None:
    a, b = v3_buckets["checkout_v2"], v3_buckets["new_search"]
    sample = KEYS[:2000]
    assert all(
        in_rollout("checkout_v2", k, 25, V3) <= in_rollout("checkout_v2", k, 25.1, V3)
        for k in sample
    )
    half = rollout_weight(50)
    both = sum(1 for x, y in zip(a, b, strict=True) if x < half and y < half)
    assert abs(100 * both / len(KEYS) - 25) < 0.7


def test_switching_scheme_rebuckets_about_half_at_50() -> None:
    sample = KEYS[:20_000]
    moved = sum(
        in_rollout("checkout_v2", k, 50, V2) != in_rollout("checkout_v2", k, 50, V3) for k in sample
    )
    assert 0.48 < moved / len(sample) < 0.52
