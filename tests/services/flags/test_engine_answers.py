"""The engine's hot-path shortcuts change no answer: answers built once per Flag object, a
plain dict of attributes checked without the Mapping ABC, enum members looked up once."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from services.flags import engine
from services.flags.bucketing import BucketingScheme, bucket, in_rollout
from services.flags.engine import context_problem, evaluate
from services.flags.types import ErrorCode, Evaluation, EvaluationContext, Flag, Reason

CHECKOUT = Flag("checkout_v2", enabled=True, rollout_percent=25.0)


def test_an_answer_is_built_once_per_flag_and_handed_out_again() -> None:
    users = [f"user-{i}" for i in range(2_000)]
    first = [evaluate(CHECKOUT, CHECKOUT.key, EvaluationContext(u), {}) for u in users]
    again = [evaluate(CHECKOUT, CHECKOUT.key, EvaluationContext(u), {}) for u in users]
    assert [a is b for a, b in zip(first, again, strict=True)] == [True] * len(users)
    assert len({id(answer) for answer in first}) == 2  # on and off, both SPLIT
    for user, answer in zip(users, first, strict=True):
        on = bucket(CHECKOUT.key, user) < 250
        assert answer == Evaluation(CHECKOUT.key, on, "on" if on else "off", Reason.SPLIT)


def test_a_changed_flag_gets_its_own_answers() -> None:
    before = evaluate(CHECKOUT, CHECKOUT.key, EvaluationContext("u"), {})
    variants = {"on": "green", "off": "grey"}
    changed = replace(CHECKOUT, rollout_percent=100.0, variants=variants)
    assert evaluate(changed, CHECKOUT.key, EvaluationContext("u"), {}) == Evaluation(
        CHECKOUT.key, "green", "on", Reason.STATIC
    )
    same_fields = replace(CHECKOUT)  # equal, but another object: answers of its own
    assert evaluate(same_fields, CHECKOUT.key, EvaluationContext("u"), {}) == before
    # The key the caller looked the flag up under is part of the answer, and of its memo.
    other = evaluate(CHECKOUT, "alias", EvaluationContext("u"), {})
    assert (other.key, other.value) == ("alias", before.value)


def test_the_memo_is_bounded() -> None:
    for i in range(3 * engine._MAX_ANSWERS):
        flag = Flag(f"f{i}", enabled=True, rollout_percent=100.0)
        assert evaluate(flag, flag.key, EvaluationContext("u"), {}).value is True
        assert len(engine._answers) <= engine._MAX_ANSWERS


def test_a_missing_variant_is_still_an_error() -> None:
    broken = replace(CHECKOUT, rollout_percent=100.0, variants={"off": False})
    for _ in range(2):
        answer = evaluate(broken, broken.key, EvaluationContext("u"), {})
        assert (answer.reason, answer.error_code) == (Reason.ERROR, ErrorCode.GENERAL)


class Attributes(Mapping[str, Any]):
    """A Mapping that is not a dict: still checked, as before."""

    def __init__(self, **values: Any) -> None:
        self._values = values

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def test_attributes_of_any_mapping_are_checked_as_a_dict_is() -> None:
    for attributes in ({"chat_id": -1001, "plan": "pro"}, {"bad": [1]}, {"x": float("nan")}):
        assert context_problem(EvaluationContext("u", Attributes(**attributes))) == (
            context_problem(EvaluationContext("u", attributes))
        )
    assert context_problem(EvaluationContext("u", [])) == "context attributes must be an object"  # type: ignore[arg-type]


def test_in_rollout_is_bucket_below_the_weight_for_both_schemes() -> None:
    for scheme in BucketingScheme:
        for user in ("alice", "u2@example.com", "Łódź", "ユーザー"):
            for percent in (0.1, 25.0, 50.0, 99.9):
                expected = bucket("checkout_v2", user, scheme=scheme) < round(percent * 10)
                assert in_rollout("checkout_v2", user, percent, scheme) is expected
                assert in_rollout("checkout_v2", user, percent, scheme.value) is expected  # type: ignore[arg-type]
