"""Session fixtures shared by test packages: a real systemd, a fleet of hosts, a supervisord."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.dev.harness.alertmanager import Alertmanager
from bot.dev.harness.alertmanager import running as running_alertmanager
from bot.dev.harness.fleet import Fleet, booted_fleet
from bot.dev.harness.postgres import PostgresCluster
from bot.dev.harness.postgres import running as running_postgres
from bot.dev.harness.supervisord import SupervisordSandbox, running
from bot.dev.harness.systemd import WORK_ROOT, SystemdSandbox, booted


@pytest.fixture(scope="session")
def systemd_sandbox() -> Iterator[SystemdSandbox]:
    """systemd booted once per session in its own namespaces; `.host` runs argv inside.

    Skips where it cannot boot (not root, no unshare); under CI=true it fails instead.
    """
    with booted() as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def fleet() -> Iterator[Fleet]:
    """Five hosts h1..h5 (127.0.0.21-25), each its own systemd with its own sshd and /srv,
    booted once per session; `.ops_hosts_toml()` names them for an ops file.

    Skips where it cannot boot; under CI=true it fails instead."""
    with booted_fleet(5, WORK_ROOT / f"fleet-{os.getpid()}") as booted_hosts:
        yield booted_hosts


@pytest.fixture(scope="session")
def supervisord_sandbox() -> Iterator[SupervisordSandbox]:
    """A private supervisord for the session; `.manager()` gives a SupervisorManager."""
    with running() as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def alertmanager() -> Iterator[Alertmanager]:
    """A private Alertmanager on loopback; skips without the Debian package (CI: fails)."""
    with running_alertmanager() as am:
        yield am


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A private PostgreSQL cluster on loopback, once per session (per worker); skips without
    the Debian package (CI: fails)."""
    with running_postgres() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """OPSGATE_DB for a test that runs on both databases: a SQLite file, then an empty
    schema of the session's PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "opsgate.db")
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.schema_url()


# Tests that run for long in real time each open one worker's share of the suite, so they
# run beside the rest instead of after it.
LONG_FIRST = (
    "tests/e2e/test_alert_load.py",
    "tests/bot/test_demo.py",
    "tests/e2e/test_crash.py",
    "tests/e2e/test_fleet_crash.py",
    "tests/e2e/test_alert_delivery.py",
    "tests/e2e/test_startup.py",  # a minute of idle, on purpose (the log-volume test)
    "tests/e2e/test_outgoing_webhooks.py",  # a receiver down for 30 s
)


# tryfirst: xdist's own hook reads the xdist_group marks on a worker; it must see ours.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests on systemd sandboxes (one, or the fleet's) share one worker (`--dist loadgroup`),
    # so a run boots them once, not once per worker: on a 2-core machine each boot and each
    # idle systemd costs the other workers. (Units of the same name in two sandboxes no
    # longer collide: each sandbox has a cgroup of its own.) With pytest 9.2 and xdist 3.8
    # loadgroup groups nothing (pytest-dev/pytest-xdist#1386): each worker boots its own.
    for item in items:
        if {"systemd_sandbox", "fleet"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("systemd"))
    long = [i for i in items if i.nodeid.split("::")[0] in LONG_FIRST]
    long.sort(key=lambda item: LONG_FIRST.index(item.nodeid.split("::")[0]))
    rest = [i for i in items if i not in long]
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    slice_size = max(1, len(items) // workers)
    ordered = rest
    for index, item in enumerate(long):  # the k-th long test heads slice k (round robin)
        ordered.insert(min(len(ordered), (index % workers) * slice_size + index // workers), item)
    items[:] = ordered
