"""A canary's plan in the ops file: what check-config accepts, and what it names as wrong."""

import pytest

from config.opsfile import OpsFileError, parse_ops_text

SERVICE = """
[environments.production]
[services.web]
environment = "production"
unit = "web@.service"
[services.web.deploy]
root = "/srv/web"
git = "/srv/repo"
strategy = "canary"
[services.web.deploy.blue_green]
blue_port = 8101
green_port = 8102
health_url = "http://127.0.0.1:{port}/health"
upstream_file = "/etc/nginx/web-upstream.conf"
[services.web.deploy.canary]
"""

GOOD = (
    SERVICE
    + """
steps = [5, { weight = 25, duration_s = 120 }, 50, 100]
step_s = 60
router = "haproxy"
haproxy = { admin = "127.0.0.1:9999", backend = "web" }
[services.web.deploy.canary.analysis]
prometheus_url = "http://127.0.0.1:9090"
errors_vs_stable = { factor = 1.5, plus = 0.005 }
"""
)


def problems_of(text: str) -> list[str]:
    with pytest.raises(OpsFileError) as caught:
        parse_ops_text(text, "test.toml")
    return caught.value.problems


def test_a_canary_plan_is_read_with_its_steps_and_limits() -> None:
    canary = parse_ops_text(GOOD).services["web"].deploy.canary  # type: ignore[union-attr]
    assert canary is not None
    assert [s.weight for s in canary.steps] == [5, 25, 50, 100]
    assert [canary.duration_of(s) for s in canary.steps] == [60, 120, 60, 60]
    assert canary.analysis.max_error_ratio == 0.05  # the seeds' 5% errors, by default
    assert canary.analysis.max_latency_p95_s == 5.0  # and their 5 s responses
    limit = canary.analysis.errors_vs_stable
    assert limit is not None and limit.limit(0.10) == pytest.approx(0.155)


def test_a_plan_that_does_not_end_at_100_or_does_not_rise_is_named() -> None:
    text = GOOD.replace(
        "steps = [5, { weight = 25, duration_s = 120 }, 50, 100]", "steps = [5, 50, 25]"
    )
    assert problems_of(text) == [
        "services.web.deploy.canary.steps: the plan must end at 100 (it ends at 25), where the"
        " canary becomes the stable version",
        "services.web.deploy.canary.steps: weights must rise step by step ([5, 50, 25])",
    ]


@pytest.mark.parametrize("weight", ["0", "101", "-5"])
def test_weights_out_of_range_are_refused_with_their_path(weight: str) -> None:
    text = GOOD.replace("steps = [5,", f"steps = [{weight},")
    problems = problems_of(text)
    assert len(problems) == 1, problems
    assert problems[0].startswith("services.web.deploy.canary.steps[0].weight: input should be"), (
        problems
    )


def test_what_goes_with_what() -> None:
    text = (
        SERVICE
        + """
steps = [10, 100]
router = "haproxy"
queries = {}
[services.web.deploy.canary.analysis]
source = "nginx"
max_memory_mib = 500
queries = { requests = 'sum(x{instance="{instance}"}[{windw}])' }
[services.web.deploy.canary.shadow]
mirror_file = "/etc/nginx/mirror.conf"
"""
    )
    problems = problems_of(text.replace("queries = {}\n", ""))
    assert problems == [
        'services.web.deploy.canary.haproxy: required with router = "haproxy"',
        'services.web.deploy.canary.analysis.access_log: required with source = "nginx"',
        "services.web.deploy.canary.analysis: memory limits need Prometheus (nginx does not"
        " see memory)",
        "services.web.deploy.canary.analysis.queries.requests: unknown placeholder {windw}"
        " (known: {instance}, {window}, {color}, {port})",
        'services.web.deploy.canary.shadow: needs router = "nginx" (its mirror copies requests)',
    ]


def test_a_canary_needs_its_section_the_two_slots_and_a_template_unit() -> None:
    text = SERVICE.replace('unit = "web@.service"', 'unit = "web.service"').split(
        "[services.web.deploy.blue_green]"
    )[0]
    assert problems_of(text) == [
        'services.web.deploy.canary: required with strategy = "canary"',
        'services.web.deploy.blue_green: required with strategy = "canary"',
        'services.web.unit: canary needs a systemd template unit, e.g. "web@.service"',
    ]


def test_a_canary_section_without_the_canary_strategy_is_named() -> None:
    text = GOOD.replace('strategy = "canary"', 'strategy = "blue-green"')
    assert problems_of(text) == ['services.web.deploy.canary: only used with strategy = "canary"']
