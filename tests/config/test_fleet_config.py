"""A service on several hosts and in several environments: what the ops file accepts."""

import pytest

from config.inventory import Rollout
from config.opsfile import OpsFileError, parse_ops_text

HEAD = """
[environments.staging]
[environments.production]
[hosts.s1]
address = "10.0.0.1"
[hosts.p1]
address = "10.0.1.1"
[hosts.p2]
address = "10.0.1.2"
[hosts.p3]
address = "10.0.1.3"
"""

FLEET = (
    HEAD
    + """
[services.web]
unit = "web.service"
health = { url = "http://{address}:8080/health" }
[services.web.deploy]
root = "/srv/web"
git = "/srv/repo"
[services.web.rollout]
batch = 2
canary = true
[services.web.environments.staging]
hosts = ["s1"]
[services.web.environments.production]
hosts = ["p1", "p2", "p3"]
promote_from = "staging"
min_soak_s = 600
"""
)


def problems_of(text: str) -> list[str]:
    with pytest.raises(OpsFileError) as caught:
        parse_ops_text(text, "test.toml")
    return caught.value.problems


def test_a_fleet_in_two_environments_is_read_in_promotion_order() -> None:
    web = parse_ops_text(FLEET).services["web"]
    assert web.environment_names() == ["staging", "production"]
    assert web.home == "staging"
    assert web.hosts_in("production") == ["p1", "p2", "p3"]
    assert web.hosts_in() == ["s1"]
    assert web.all_hosts() == ["s1", "p1", "p2", "p3"]
    production = web.in_environment("production")
    assert production is not None and production.promote_from == "staging"
    assert production.min_soak_s == 600


def test_one_environment_and_hosts_list_is_the_short_form() -> None:
    text = (
        HEAD
        + """
[services.api]
environment = "production"
hosts = ["p1", "p2"]
unit = "api.service"
"""
    )
    api = parse_ops_text(text).services["api"]
    assert api.environment_names() == ["production"]
    assert api.hosts_in("production") == ["p1", "p2"]


def test_placement_mistakes_are_named_with_their_paths() -> None:
    text = (
        HEAD
        + """
[services.web]
environment = "production"
host = "p1"
hosts = ["p2"]
unit = "web.service"
[services.web.environments.production]
hosts = ["p1", "p1", "nope"]
promote_from = "qa"
[services.web.environments.qa]
hosts = ["s1"]
[services.web.rollout]
batch = 5
"""
    )
    problems = problems_of(text)
    assert "services.web.environment: give it per environment in services.web.environments" in (
        problems
    )
    assert "services.web.hosts: give host or hosts, not both" in problems
    assert any(
        p.startswith("services.web.environments.production.promote_from: 'qa' is not an")
        for p in problems
    )
    assert "services.web.environments.production.hosts: listed twice: p1" in problems
    assert any(
        p.startswith("services.web.environments.production.hosts: unknown host 'nope'")
        for p in problems
    )
    assert any(
        p.startswith("services.web.environments.qa: unknown environment 'qa'") for p in problems
    )
    assert any("batch 5 does not fit 3 host(s)" in p for p in problems)


def test_a_drain_needs_a_way_to_take_a_host_out() -> None:
    text = (
        FLEET
        + """
[services.web.rollout.drain]
settle_s = 1
"""
    )
    assert (
        "services.web.environments.staging.rollout.drain: give upstream_file (with port) or out"
        in (problems_of(text))
    )


def test_a_service_without_environment_is_named_even_beside_other_problems() -> None:
    problems = problems_of("""
[services.web]
unit = "not a unit"
""")
    assert "services.web.environment: required but missing (or list environments)" in problems


@pytest.mark.parametrize(
    ("batch", "canary", "hosts", "expected"),
    [
        (2, False, 5, [["h1", "h2"], ["h3", "h4"], ["h5"]]),
        (2, True, 5, [["h1"], ["h2", "h3"], ["h4", "h5"]]),
        ("25%", False, 8, [["h1", "h2"], ["h3", "h4"], ["h5", "h6"], ["h7", "h8"]]),
        ("10%", False, 3, [["h1"], ["h2"], ["h3"]]),  # never a batch of none
        ("100%", True, 3, [["h1"], ["h2", "h3"]]),
    ],
)
def test_batches(batch: int | str, canary: bool, hosts: int, expected: list[list[str]]) -> None:
    rollout = Rollout(batch=batch, canary=canary)
    assert rollout.batches([f"h{i}" for i in range(1, hosts + 1)]) == expected


def test_a_batch_percentage_must_be_a_percentage() -> None:
    problems = problems_of(FLEET.replace("batch = 2", 'batch = "half"'))
    assert any(p.startswith("services.web.rollout.batch") for p in problems)


def test_a_drain_that_would_take_every_host_out_at_once_is_refused() -> None:
    text = (
        FLEET.replace("batch = 2", "batch = 3")
        + """
[services.web.rollout.drain]
out = ["/usr/local/bin/lb", "out"]
back_in = ["/usr/local/bin/lb", "in"]
"""
    )
    problems = problems_of(text.replace("canary = true", "canary = false"))
    assert problems == [
        "services.web.environments.production.rollout: batch 3 drains all 3 hosts at once,"
        " so none is left to serve (give at most 2)"
    ]
