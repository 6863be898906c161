"""What was served: totals since start, and the last hour's users per variant."""

from services.flags.types import Evaluation, Reason
from services.flags.usage import CAP, SLOT_S, EvaluationTally


def served(flag: str, variant: str | None, reason: Reason = Reason.SPLIT) -> Evaluation:
    return Evaluation(flag, variant == "on" if variant else None, variant, reason)


def test_totals_by_flag_variant_and_reason_and_distinct_users_per_hour() -> None:
    now = [10_000.0]
    tally = EvaluationTally(lambda: now[0])
    for user in ("a", "b", "a", "c"):
        tally.count(served("f", "on"), user)
    tally.count(served("f", "off"), "d")
    tally.count(served("f", None, Reason.ERROR), None)
    tally.count(served("g", "on", Reason.STATIC), "a")
    assert tally.totals() == {
        ("f", "on", "SPLIT"): 4,
        ("f", "off", "SPLIT"): 1,
        ("f", "none", "ERROR"): 1,
        ("g", "on", "STATIC"): 1,
    }
    assert [(u.variant, u.evaluations, u.users) for u in tally.last_hour("f")] == [
        ("none", 1, 0),
        ("off", 1, 1),
        ("on", 4, 3),
    ]
    now[0] += SLOT_S * 3  # later in the hour: the same user counts once
    tally.count(served("f", "on"), "a")
    assert [(u.evaluations, u.users) for u in tally.last_hour("f") if u.variant == "on"] == [(5, 3)]
    now[0] += SLOT_S * 6  # an hour on: only what was served since
    assert tally.last_hour("f") == []
    assert tally.totals()[("f", "on", "SPLIT")] == 5  # since start, whatever the hour


def test_a_flood_of_new_users_is_bounded_and_said_to_be_a_floor() -> None:
    tally = EvaluationTally(lambda: 0.0)
    for i in range(CAP + 500):
        tally.count(served("f", "on"), f"user-{i}")
    [use] = tally.last_hour("f")
    assert (use.evaluations, use.users, use.capped) == (CAP + 500, CAP, True)
