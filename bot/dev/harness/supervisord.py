"""The tests' private supervisord: bot/dev/supervisord_local.py, skipped or failed when missing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.dev.supervisord_local import private_supervisord, unavailable_reason
from services.control.supervisor import SupervisorManager
from services.hosts.runner import LocalHost


@dataclass(frozen=True)
class SupervisordSandbox:
    pid: int
    directory: Path
    config_path: Path
    conf_dir: Path  # included by the config: one NAME.conf per program
    supervisorctl: str  # absolute: LocalHost children get a minimal PATH
    host: LocalHost

    def manager(self, *, timeout: float = 60.0) -> SupervisorManager:
        return SupervisorManager(
            self.host,
            str(self.config_path),
            conf_dir=str(self.conf_dir),
            supervisorctl=self.supervisorctl,
            timeout=timeout,
        )


@contextmanager
def running() -> Iterator[SupervisordSandbox]:
    """Start supervisord once, yield, SIGTERM it. Skips without supervisor; CI fails."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    with private_supervisord() as sv:
        yield SupervisordSandbox(
            pid=sv.pid,
            directory=sv.directory,
            config_path=sv.config_path,
            conf_dir=sv.conf_dir,
            supervisorctl=sv.supervisorctl,
            host=LocalHost(name="supervisord-sandbox"),
        )
