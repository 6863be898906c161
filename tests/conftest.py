"""Session fixtures shared by test packages: a real systemd and a real supervisord."""

from __future__ import annotations

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


# Tests that run for long in real time go first: with `--dist worksteal` one worker carries
# each of them while the other works through the rest, so none sits on the critical path.
LONG_FIRST = ("tests/e2e/test_alert_load.py", "tests/e2e/test_crash.py", "tests/bot/test_demo.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::")[0]
        return LONG_FIRST.index(path) if path in LONG_FIRST else len(LONG_FIRST)

    items.sort(key=rank)  # stable: the order within each file is kept
