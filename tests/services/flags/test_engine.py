import math
from dataclasses import replace
from typing import Any

import pytest

from services.flags.bucketing import in_rollout
from services.flags.engine import evaluate, evaluate_all, id_text, segment_sets
from services.flags.types import (
    AttributeRule,
    ErrorCode,
    Evaluation,
    EvaluationContext,
    Flag,
    Reason,
    Segment,
    Targeting,
)

SEGMENTS = segment_sets({"beta": ["7", "8"], "staff": [9]})


def flag(**changes: Any) -> Flag:
    targeting = changes.pop("targeting", {})
    base = Flag(key="checkout_v2", enabled=True, rollout_percent=25.0, version=3)
    return replace(base, targeting=Targeting(**targeting), **changes)


def ctx(key: str | None = "42", **attributes: Any) -> EvaluationContext:
    return EvaluationContext(targeting_key=key, attributes=attributes)


def answer(evaluation: Evaluation) -> tuple[object, str | None, Reason, ErrorCode | None]:
    return evaluation.value, evaluation.variant, evaluation.reason, evaluation.error_code


OFF = (False, "off", Reason.TARGETING_MATCH, None)
ON = (True, "on", Reason.TARGETING_MATCH, None)


def test_missing_flag_is_flag_not_found() -> None:
    result = evaluate(None, "nope", ctx(), SEGMENTS)
    assert answer(result) == (None, None, Reason.ERROR, ErrorCode.FLAG_NOT_FOUND)
    assert result.key == "nope" and "nope" in (result.error_message or "")


@pytest.mark.parametrize("changes", [{"enabled": False}, {"killed": True}])
def test_disabled_or_killed_is_off_whoever_asks(changes: dict[str, Any]) -> None:
    f = flag(rollout_percent=100.0, targeting={"user_ids": frozenset({"42"})}, **changes)
    for context in (ctx(), ctx(None), ctx("42", chat_id=-5, chat_type="group")):
        assert answer(evaluate(f, f.key, context, SEGMENTS)) == (
            False,
            "off",
            Reason.DISABLED,
            None,
        )


def test_excluded_user_beats_always_on() -> None:
    f = flag(targeting={"user_ids": frozenset({"42"}), "excluded_users": frozenset({"42"})})
    assert answer(evaluate(f, f.key, ctx("42"), SEGMENTS)) == OFF


@pytest.mark.parametrize("chat_id", [-1001, "-1001", -1001.0])
def test_excluded_chat_compares_as_text(chat_id: object) -> None:
    f = flag(rollout_percent=100.0, targeting={"excluded_chats": frozenset({"-1001"})})
    assert answer(evaluate(f, f.key, ctx(chat_id=chat_id), SEGMENTS)) == OFF
    other = evaluate(f, f.key, ctx(chat_id=-1002), SEGMENTS)
    assert answer(other) == (True, "on", Reason.TARGETING_MATCH, None)


def test_excluded_chat_beats_segment_membership() -> None:
    targeting = {"segments": ("beta",), "excluded_chats": frozenset({"-5"})}
    f = flag(targeting=targeting)
    assert answer(evaluate(f, f.key, ctx("7", chat_id=-5), SEGMENTS)) == OFF
    assert answer(evaluate(f, f.key, ctx("7", chat_id=-6), SEGMENTS)) == ON


@pytest.mark.parametrize(("chat_type", "expected"), [("group", ON), ("private", OFF), (None, OFF)])
def test_chat_types_limit_who_gets_it(chat_type: str | None, expected: tuple[object, ...]) -> None:
    f = flag(targeting={"chat_types": frozenset({"group", "supergroup"}), "user_ids": {"42"}})
    attributes = {} if chat_type is None else {"chat_type": chat_type}
    assert answer(evaluate(f, f.key, ctx("42", **attributes), SEGMENTS)) == expected


@pytest.mark.parametrize(("key", "expected"), [("7", ON), ("9", ON), ("10", None)])
def test_listed_segments_are_on(key: str, expected: tuple[object, ...] | None) -> None:
    f = flag(rollout_percent=0.0, targeting={"segments": ("beta", "staff", "gone")})
    result = answer(evaluate(f, f.key, ctx(key), SEGMENTS))
    assert result == (expected or (False, "off", Reason.DEFAULT, None))


def test_full_rollout_is_static_only_when_nobody_can_be_off() -> None:
    plain = flag(rollout_percent=100.0, targeting={"user_ids": frozenset({"1"})})
    assert answer(evaluate(plain, plain.key, ctx(None), SEGMENTS)) == (
        True,
        "on",
        Reason.STATIC,
        None,
    )
    for targeting in (
        {"excluded_users": frozenset({"1"})},
        {"excluded_chats": frozenset({"-1"})},
        {"chat_types": frozenset({"group"})},
    ):
        f = flag(rollout_percent=100.0, targeting=targeting)
        result = evaluate(f, f.key, ctx("42", chat_type="group"), SEGMENTS)
        assert answer(result) == (True, "on", Reason.TARGETING_MATCH, None)


@pytest.mark.parametrize("percent", [0.0, -1.0, math.nan])
def test_no_rollout_is_default_off_even_without_a_key(percent: float) -> None:
    f = flag(rollout_percent=percent)
    assert answer(evaluate(f, f.key, ctx(None), SEGMENTS)) == (False, "off", Reason.DEFAULT, None)


@pytest.mark.parametrize("key", [None, ""])
def test_partial_rollout_needs_a_targeting_key(key: str | None) -> None:
    f = flag()
    result = evaluate(f, f.key, ctx(key), SEGMENTS)
    assert answer(result) == (None, None, Reason.ERROR, ErrorCode.TARGETING_KEY_MISSING)


def test_partial_rollout_splits_by_sticky_bucket() -> None:
    f = flag(rollout_percent=25.0)
    seen = set()
    for i in range(200):
        result = evaluate(f, f.key, ctx(f"user-{i}"), SEGMENTS)
        expected = in_rollout(f.key, f"user-{i}", 25.0)
        assert answer(result) == (expected, "on" if expected else "off", Reason.SPLIT, None)
        seen.add(expected)
    assert seen == {True, False}


def test_string_variants_are_served() -> None:
    f = flag(rollout_percent=100.0, variants={"new": "v2", "old": "v1"}, on_variant="new")
    f = replace(f, off_variant="old")
    assert answer(evaluate(f, f.key, ctx(), SEGMENTS)) == ("v2", "new", Reason.STATIC, None)
    killed = replace(f, killed=True)
    assert evaluate(killed, f.key, ctx(), SEGMENTS).value == "v1"


def test_undefined_variant_is_a_general_error() -> None:
    f = flag(rollout_percent=100.0, on_variant="shiny")
    result = evaluate(f, f.key, ctx(), SEGMENTS)
    assert answer(result) == (None, None, Reason.ERROR, ErrorCode.GENERAL)


@pytest.mark.parametrize(
    "context",
    [
        EvaluationContext(targeting_key=42),  # type: ignore[arg-type]
        EvaluationContext(targeting_key="x" * 257),
        EvaluationContext(targeting_key="x\udcff"),
        EvaluationContext("1", attributes=["chat_id"]),  # type: ignore[arg-type]
        EvaluationContext("1", attributes={1: "x"}),  # type: ignore[dict-item]
        EvaluationContext("1", attributes={"tags": ["a"]}),
        EvaluationContext("1", attributes={"user": {"id": 1}}),
        EvaluationContext("1", attributes={"score": math.nan}),
        EvaluationContext("1", attributes={"score": math.inf}),
    ],
)
def test_invalid_context(context: EvaluationContext) -> None:
    for f in (flag(), flag(enabled=False)):
        result = evaluate(f, f.key, context, SEGMENTS)
        assert answer(result) == (None, None, Reason.ERROR, ErrorCode.INVALID_CONTEXT)
        assert result.error_message


def test_valid_context_edges() -> None:
    f = flag(rollout_percent=100.0)
    attributes = {"a": None, "b": True, "c": 1, "d": 1.5, "e": "x" * 10_000}
    context = EvaluationContext("x" * 256, attributes)
    assert evaluate(f, f.key, context, SEGMENTS).error_code is None


def test_evaluate_all_keeps_order_and_checks_the_context_once() -> None:
    flags = [flag(key="b", rollout_percent=100.0), flag(key="a", enabled=False), flag(key="c")]
    results = evaluate_all(flags, ctx(None), SEGMENTS)
    assert [r.key for r in results] == ["b", "a", "c"]
    assert [r.reason for r in results] == [Reason.STATIC, Reason.DISABLED, Reason.ERROR]
    bad = evaluate_all(flags, ctx("1", nested={"x": 1}), SEGMENTS)
    assert {r.error_code for r in bad} == {ErrorCode.INVALID_CONTEXT}
    assert evaluate_all([], ctx(), SEGMENTS) == []


@pytest.mark.parametrize(
    ("value", "text"),
    [(-1001, "-1001"), ("-1001", "-1001"), (-1001.0, "-1001"), (1.5, None), (True, None)],
)
def test_id_text(value: object, text: str | None) -> None:
    assert id_text(value) == text


def test_segment_sets_make_text_members() -> None:
    assert segment_sets({"staff": [9, "x"]}) == {"staff": Segment(frozenset({"9", "x"}))}


def test_a_segment_matches_its_keys_or_a_context_meeting_every_rule() -> None:
    rules = (
        AttributeRule("chat_type", "in", ("group", "supergroup")),
        AttributeRule("chat_id", "not_in", ("-100999",)),
        AttributeRule("locale", "starts_with", ("en",)),
    )
    segments = {"teams": Segment(frozenset({"vip"}), rules)}
    flag = Flag("f", enabled=True, targeting=Targeting(segments=("teams",)))

    def on(key: str | None, **attrs: object) -> object:
        return evaluate(flag, "f", EvaluationContext(key, attrs), segments).value

    assert on("vip") is True  # a key of the segment, whatever the context
    assert on("x", chat_type="group", chat_id=-100500, locale="en-GB") is True
    assert on(None, chat_type="supergroup", chat_id="-1", locale="en") is True
    assert on("x", chat_type="group", chat_id=-100999, locale="en") is False  # not_in
    assert on("x", chat_type="private", chat_id=-1, locale="en") is False
    assert on("x", chat_type="group", chat_id=-1) is False  # locale missing
    assert on("x", chat_type="group", chat_id=-1.0, locale="fr") is False
    assert Segment(frozenset({"a"})).matches("b", {"chat_type": "group"}) is False


def test_a_split_flag_serves_its_variants_by_weight_and_its_default_when_off() -> None:
    flag = Flag(
        "banner",
        enabled=True,
        variants={"blue": "b", "green": "g", "red": "r"},
        on_variant="green",
        off_variant="blue",
        split=(("blue", 70), ("green", 20), ("red", 10)),
        targeting=Targeting(user_ids=frozenset({"vip"}), excluded_users=frozenset({"x"})),
    )
    seen = {evaluate(flag, "banner", EvaluationContext(f"u{i}"), {}).value for i in range(300)}
    assert seen == {"b", "g", "r"}
    assert evaluate(flag, "banner", EvaluationContext("vip"), {}).value == "g"  # allow list
    assert evaluate(flag, "banner", EvaluationContext("x"), {}).value == "b"  # excluded: default
    off = evaluate(replace(flag, enabled=False), "banner", EvaluationContext("u1"), {})
    assert (off.value, off.reason) == ("b", Reason.DISABLED)
    keyless = evaluate(flag, "banner", EvaluationContext(None), {})
    assert keyless.error_code is ErrorCode.TARGETING_KEY_MISSING
