"""Canary analysis: the verdict on canary vs stable, and nginx's access log as a source."""

import time
from pathlib import Path

import pytest

from config.canary import Analysis, RelativeLimit
from services.control.analysis import NginxLogSource, SideSample, SourceUnavailable, judge

RELATIVE = Analysis(
    prometheus_url="http://127.0.0.1:9090",
    max_error_ratio=None,
    max_latency_p95_s=None,
    errors_vs_stable=RelativeLimit(factor=1.5, plus=0.005),
    latency_vs_stable=RelativeLimit(factor=2, plus=0.05),
)


def side(requests: float, errors: float, p95: float | None = 0.01) -> SideSample:
    return SideSample(requests, errors, p95, 40.0)


def test_three_times_the_stable_error_ratio_is_a_breach_named_with_value_and_limit() -> None:
    verdict = judge(side(100, 30), side(1000, 100), RELATIVE)
    breach = verdict.breach
    assert breach is not None and verdict.word == "breach"
    assert (breach.metric, breach.canary, breach.stable) == ("errors", 0.3, 0.1)
    assert breach.limit == pytest.approx(0.155)
    assert breach.describe() == "errors 30.0% > limit 15.5%"


def test_within_the_relative_limits_passes() -> None:
    verdict = judge(side(100, 11, 0.02), side(1000, 100, 0.015), RELATIVE)
    assert verdict.breach is None and verdict.word == "pass"
    assert [c.metric for c in verdict.checks] == ["errors", "p95"]


def test_absolute_and_relative_limits_both_hold_the_lower_wins() -> None:
    analysis = RELATIVE.model_copy(update={"max_error_ratio": 0.05})
    verdict = judge(side(100, 6), side(1000, 100), analysis)  # 6% < 15.5% but > 5%
    assert verdict.breach is not None and verdict.breach.limit == 0.05


def test_latency_breach_against_the_seeds_five_seconds() -> None:
    analysis = Analysis(prometheus_url="http://127.0.0.1:9090")
    verdict = judge(side(100, 0, 6.2), side(1000, 0, 0.01), analysis)
    assert verdict.breach is not None and verdict.breach.describe() == "p95 6.20 s > limit 5.00 s"


def test_too_little_traffic_is_never_a_pass_nor_a_breach_on_ratios() -> None:
    verdict = judge(side(5, 5), side(1000, 0), RELATIVE)  # 100% errors, but on 5 requests
    assert verdict.word == "thin" and verdict.breach is None and verdict.checks == ()


def test_a_thin_stable_is_no_pass_when_a_limit_is_relative_to_it() -> None:
    # Stable's scrapes not yet in a short window: nothing to compare with, so no pass.
    verdict = judge(side(100, 30), side(0, 0), RELATIVE)
    assert verdict.word == "thin" and verdict.breach is None and verdict.checks == ()
    with_absolute = RELATIVE.model_copy(update={"max_error_ratio": 0.05})
    verdict = judge(side(100, 30), side(3, 0), with_absolute)
    assert verdict.breach is not None and verdict.breach.limit == 0.05  # absolute still holds
    assert verdict.breach.stable is None
    only_absolute = Analysis(prometheus_url="http://127.0.0.1:9090")
    assert judge(side(100, 1), side(0, 0), only_absolute).word == "pass"


def test_memory_needs_no_traffic_to_breach() -> None:
    analysis = RELATIVE.model_copy(update={"max_memory_mib": 30.0})
    verdict = judge(side(0, 0), side(1000, 0), analysis)
    assert (
        verdict.breach is not None and verdict.breach.describe() == "memory 40 MiB > limit 30 MiB"
    )


async def test_the_nginx_log_is_read_per_upstream_within_the_window(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    now = time.time()
    lines = [
        f"{now - 100:.3f}|127.0.0.1:8102|500|0.001",  # outside the 30 s window
        *(f"{now - 5:.3f}|127.0.0.1:8102|200|0.010" for _ in range(8)),
        *(f"{now - 4:.3f}|127.0.0.1:8102|502|0.020" for _ in range(2)),
        f"{now - 3:.3f}|127.0.0.1:8101, 127.0.0.1:8102|200|0.001, 0.300",  # retried: the last
        *(f"{now - 2:.3f}|127.0.0.1:8101|200|0.005" for _ in range(20)),
        f"{now - 1:.3f}|-|400|-",  # answered by nginx itself
        "garbage line",
    ]
    log.write_text("\n".join(lines) + "\n")
    source = NginxLogSource(Analysis(source="nginx", access_log=str(log), window_s=30))
    green = await source.sample("green", 8102, 30)
    assert (green.requests, green.errors, green.latency_p95_s) == (11, 2, 0.3)
    assert green.error_ratio == pytest.approx(2 / 11)
    blue = await source.sample("blue", 8101, 30)
    assert (blue.requests, blue.errors, blue.latency_p95_s) == (20, 0, 0.005)

    with log.open("a") as more:  # read on from where it stopped; a half line waits
        more.write(f"{time.time():.3f}|127.0.0.1:8101|503|0.004\n{time.time():.3f}|127.0")
    blue = await source.sample("blue", 8101, 30)
    assert (blue.requests, blue.errors) == (21, 1)


async def test_an_unreadable_log_is_said_not_guessed(tmp_path: Path) -> None:
    source = NginxLogSource(Analysis(source="nginx", access_log=str(tmp_path / "none.log")))
    with pytest.raises(SourceUnavailable, match="cannot read"):
        await source.sample("blue", 8101, 30)
