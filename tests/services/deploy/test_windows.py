"""Deploy windows and freezes: their config shape and when they hold a deploy back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from config.opsfile import Environment, OpsFileError, parse_ops_text
from services.deploy.windows import deploy_refusal, is_production

# 2026-11-23 is a Monday.
MONDAY_NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def env(text: str) -> Environment:
    return parse_ops_text(f"[environments.production]\n{text}").environments["production"]


def test_no_windows_and_no_freezes_take_deploys_any_time() -> None:
    assert deploy_refusal("production", Environment(), MONDAY_NOON) is None


@pytest.mark.parametrize(
    ("hour", "minute", "open_"),
    [(8, 59, False), (9, 0, True), (16, 59, True), (17, 0, False)],
)
def test_a_weekday_window_opens_at_start_and_closes_at_end(
    hour: int, minute: int, open_: bool
) -> None:
    production = env(
        '[[environments.production.windows]]\ndays = ["mon", "tue"]\nstart = 09:00:00\n'
        "end = 17:00:00\n"
    )
    now = MONDAY_NOON.replace(hour=hour, minute=minute)
    refusal = deploy_refusal("production", production, now)
    assert (refusal is None) == open_
    if refusal:
        assert refusal == "production takes deploys only in its window(s): mon,tue 09:00-17:00 UTC"


def test_windows_are_read_in_their_time_zone_and_past_midnight() -> None:
    production = env(
        '[[environments.production.windows]]\ndays = ["sun"]\nstart = 22:00:00\n'
        'end = 02:00:00\ntimezone = "Europe/Kyiv"\n'
    )
    # Monday 01:00 in Kyiv (UTC+2) is Sunday night's window; Monday 23:00 there is not.
    assert (
        deploy_refusal("production", production, datetime(2026, 11, 22, 23, 0, tzinfo=UTC)) is None
    )
    assert deploy_refusal("production", production, datetime(2026, 11, 23, 21, 0, tzinfo=UTC))
    assert deploy_refusal("production", production, datetime(2026, 11, 22, 19, 59, tzinfo=UTC))
    assert (
        deploy_refusal("production", production, datetime(2026, 11, 22, 20, 0, tzinfo=UTC)) is None
    )


def test_a_freeze_wins_over_an_open_window_and_says_why_and_until_when() -> None:
    production = env(
        "[[environments.production.freezes]]\nstart = 2026-11-20T00:00:00Z\n"
        'end = 2026-11-30T00:00:00Z\nreason = "Black Friday"\n'
    )
    assert deploy_refusal("production", production, MONDAY_NOON) == (
        "production is frozen until 2026-11-30 00:00 UTC: Black Friday"
    )
    assert deploy_refusal("production", production, datetime(2026, 11, 30, tzinfo=UTC)) is None


WINDOW = "[[environments.production.windows]]\n"
FREEZE = "[[environments.production.freezes]]\n"


@pytest.mark.parametrize(
    "bad",
    [
        WINDOW + "start = 09:00:00\nend = 09:00:00\n",
        WINDOW + 'start = 09:00:00\nend = 17:00:00\ndays = ["someday"]\n',
        WINDOW + 'start = 09:00:00\nend = 17:00:00\ntimezone = "Mars/Base"\n',
        FREEZE + 'start = 2026-11-20T00:00:00Z\nend = 2026-11-19T00:00:00Z\nreason = "x"\n',
        FREEZE + 'start = 2026-11-20T00:00:00\nend = 2026-11-21T00:00:00\nreason = "naive"\n',
    ],
)
def test_bad_windows_and_freezes_are_refused_with_their_path(bad: str) -> None:
    with pytest.raises(OpsFileError) as refused:
        env(bad)
    assert "environments.production." in str(refused.value)


def test_production_is_named_or_flagged() -> None:
    assert is_production("production", Environment())
    assert is_production("prod", Environment())
    assert is_production("live", Environment(production=True))
    assert not is_production("staging", Environment())
