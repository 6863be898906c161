"""Session fixtures shared by test packages: a real systemd and a real supervisord."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bot.dev.harness.alertmanager import Alertmanager
from bot.dev.harness.alertmanager import running as running_alertmanager
from bot.dev.harness.supervisord import SupervisordSandbox, running
from bot.dev.harness.systemd import SystemdSandbox, booted


@pytest.fixture(scope="session")
def systemd_sandbox() -> Iterator[SystemdSandbox]:
    """systemd booted once per session in its own namespaces; `.host` runs argv inside.

    Skips where it cannot boot (not root, no unshare); under CI=true it fails instead.
    """
    with booted() as sandbox:
        yield sandbox


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


# Tests that run for long in real time each open one worker's share of the suite, so they
# run beside the rest instead of after it.
LONG_FIRST = (
    "tests/e2e/test_alert_load.py",
    "tests/bot/test_demo.py",
    "tests/e2e/test_crash.py",
    "tests/e2e/test_alert_delivery.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests on the systemd sandbox share one worker (`--dist loadgroup`): each worker's
    # sandbox is its own systemd, but they share the host's cgroup tree, so two sandboxes
    # starting units of the same name at once collide (the unit fails with status 219).
    for item in items:
        if "systemd_sandbox" in getattr(item, "fixturenames", ()):
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
