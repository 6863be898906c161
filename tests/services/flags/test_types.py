import math
import re

import pytest

from services.flags.types import (
    FLAG_KEY_PATTERN,
    ErrorCode,
    Flag,
    FlagError,
    FlagSnapshot,
    InvalidFlagInput,
    InvalidFlagKey,
    InvalidPercentage,
    InvalidTargeting,
    Reason,
    check_flag_key,
    check_ident,
    check_percentage,
    check_text,
    format_percent,
    is_valid_flag_key,
)


@pytest.mark.parametrize(
    "key", ["a", "checkout_v2", "new-ui", "web.checkout", "a.b.c.d", "a" * 63, "x.1-2_3"]
)
def test_valid_flag_keys(key: str) -> None:
    assert is_valid_flag_key(key)
    assert check_flag_key(key) == key
    assert re.fullmatch(FLAG_KEY_PATTERN, key)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "A",
        "Checkout",
        "1abc",
        "_a",
        "a/b",
        "../x",
        "a..b",
        ".a",
        "a.",
        "a b",
        "a%2fb",
        "a\nb",
        "a.b.c.d.e",
        "a" * 64,
        "ключ",
    ],
)
def test_invalid_flag_keys(key: str) -> None:
    assert not is_valid_flag_key(key)
    with pytest.raises(InvalidFlagKey, match="not a flag key"):
        check_flag_key(key)


def test_errors_form_one_tree() -> None:
    for error in (InvalidFlagKey, InvalidPercentage, InvalidTargeting):
        assert issubclass(error, InvalidFlagInput)
        assert issubclass(error, ValueError)
    assert issubclass(InvalidFlagInput, FlagError)


@pytest.mark.parametrize(
    ("value", "stored"), [(0, 0.0), (25, 25.0), (0.3, 0.3), (0.1 + 0.2, 0.3), (99.9, 99.9)]
)
def test_check_percentage_normalises(value: float, stored: float) -> None:
    assert check_percentage(value) == stored


@pytest.mark.parametrize("value", [-0.1, 100.1, 25.55, math.nan, math.inf, True, "5"])
def test_check_percentage_refuses(value: object) -> None:
    with pytest.raises(InvalidPercentage):
        check_percentage(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "text"), [(25.0, "25"), (2.5, "2.5"), (0.0, "0"), (100, "100")])
def test_format_percent(value: float, text: str) -> None:
    assert format_percent(value) == text


@pytest.mark.parametrize(
    ("kind", "ident", "text"),
    [
        ("chat", -1001, "-1001"),
        ("chat", " -01001 ", "-1001"),
        ("user", 42, "42"),
        ("user", "mail@example.com", "mail@example.com"),
    ],
)
def test_check_ident(kind: str, ident: str | int, text: str) -> None:
    assert check_ident(kind, ident) == text


@pytest.mark.parametrize(
    ("kind", "ident"),
    [
        ("chat", "abc"),
        ("chat", "--1"),
        ("chat", "1" * 20),
        ("chat", True),
        ("user", ""),
        ("user", " 42"),
        ("user", "a\tb"),
        ("user", "x" * 257),
        ("user", False),
        ("channel", "1"),
    ],
)
def test_check_ident_refuses(kind: str, ident: str | int) -> None:
    with pytest.raises(InvalidTargeting):
        check_ident(kind, ident)


def test_check_text() -> None:
    assert check_text("  ok  ", "note") == "ok"
    assert check_text("", "note") == ""
    for bad, required in (("", True), ("two\nlines", False), ("x" * 501, False)):
        with pytest.raises(InvalidFlagInput):
            check_text(bad, "reason", required)


def test_snapshot_get() -> None:
    flag = Flag("a")
    snapshot = FlagSnapshot({"a": flag}, "tag")
    assert (snapshot.get("a"), snapshot.get("b")) == (flag, None)


def test_default_flag_is_an_off_boolean() -> None:
    flag = Flag("a")
    assert (flag.enabled, flag.rollout_percent, flag.killed, flag.version) == (False, 0.0, False, 0)
    assert flag.variants[flag.on_variant] is True and flag.variants[flag.off_variant] is False


def test_reasons_and_codes_are_spelled_as_openfeature_spells_them() -> None:
    assert {r.value for r in Reason} == {
        "STATIC",
        "DEFAULT",
        "TARGETING_MATCH",
        "SPLIT",
        "DISABLED",
        "ERROR",
    }
    assert ErrorCode.TARGETING_KEY_MISSING.value == "TARGETING_KEY_MISSING"
