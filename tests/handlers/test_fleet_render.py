"""How a fleet reads in chat: one line when the hosts agree, the odd hosts otherwise."""

from datetime import UTC, datetime

from handlers.deploy_render import host_summary, render_versions
from handlers.services_render import render_placement
from services.control.controller import ServiceState
from services.control.health import CheckResult
from services.deploy.host_rows import HostRow, HostState, grid
from services.deploy.placements import Placement

AT = datetime(2026, 12, 6, tzinfo=UTC)


def state(host: str, *, healthy: bool = True, running: bool = True) -> ServiceState:
    health = CheckResult(healthy, "http", f"http://{host}/health", 0.01, "200 OK" if healthy
                         else "503 Service Unavailable", AT)  # fmt: skip
    return ServiceState(
        name="web", environment="production", host=host, manager="systemd",
        control_name="web.service", state="active/running" if running else "failed/failed",
        running=running, main_pid=100 if running else None, restarts=0, since=None,
        health=health,
    )  # fmt: skip


def rows(*states: tuple[str, HostState]) -> list[HostRow]:
    return [HostRow(h, i, i // 2, s, "v1", "") for i, (h, s) in enumerate(states)]


def test_a_fleet_that_agrees_is_one_line() -> None:
    hosts = [f"web{i}" for i in range(1, 7)]
    placement = Placement(
        "web", "production", [state(h) for h in hosts], dict.fromkeys(hosts, "v2")
    )
    assert render_placement(placement) == [
        "🟢 <b>web</b> (production): <code>v2</code> on 6/6 hosts, all healthy"
    ]


def test_hosts_that_differ_are_named() -> None:
    placement = Placement(
        "web",
        "production",
        [state("web1"), state("web2", healthy=False), state("web3", running=False)],
        {"web1": "v2", "web2": "v2", "web3": "v1"},
    )
    lines = render_placement(placement)
    assert lines[0] == (
        "🟡 <b>web</b> (production): 1/3 hosts healthy; <code>v1</code> on web3 ·"
        " <code>v2</code> on web1 web2"
    )
    assert lines[1].startswith("    🟡 web2 active/running") and "503" in lines[1]
    assert lines[2].startswith("    🔴 web3 failed/failed")
    assert len(lines) == 3


def test_versions_collapse_or_list_by_release() -> None:
    assert render_versions({"a": "v2", "b": "v2"}) == "<code>v2</code> on 2/2 hosts"
    assert render_versions({"a": "v2", "b": None}) == (
        "<code>nothing</code> on b · <code>v2</code> on a"
    )
    assert render_versions({"a": "<b>"}) == "<code>&lt;b&gt;</code> on 1/1 hosts"


def test_the_grid_and_the_history_summary() -> None:
    mixed = rows(
        ("h1", HostState.HEALTHY),
        ("h2", HostState.HEALTHY),
        ("h3", HostState.SWITCHING),
        ("h4", HostState.PENDING),
        ("h5", HostState.PENDING),
    )
    assert grid(mixed) == "✅ h1 h2 · 🔄 h3 · ⏳ 2 more"
    assert host_summary(mixed) == "✅ h1 h2 · 🔄 h3 · ⏳ 2 more"
    done = rows(("h1", HostState.ROLLED_BACK), ("h2", HostState.ROLLED_BACK))
    assert host_summary(done) == "2/2 hosts rolled back"
