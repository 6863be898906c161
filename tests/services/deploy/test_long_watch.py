"""LongWatches on a real SQLite file, with a health check the test turns bad."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import httpx
import pytest
from pydantic import ValidationError

from config.inventory import DeployConfig
from services.control.backends import BackendStatus
from services.control.health import CheckResult, HealthCheck
from services.deploy.deployments import Deployments, DeploymentState
from services.deploy.long_watch import LongWatch, LongWatches
from services.deploy.model import Deployment
from services.deploy.watch import Watch
from services.hosts.runner import LocalHost
from services.records.audit import AuditLog
from services.records.storage import Storage

S = DeploymentState
DEPLOY = DeployConfig(root="/srv/app", watch_s=3600, watch_interval_s=0.01, max_failed_checks=2)


class Backend:
    async def status(self) -> BackendStatus:
        return BackendStatus("active", True, None, 0, None)


class Check:
    def __init__(self) -> None:
        self.ok = True

    async def run(self) -> CheckResult:
        reason = "ok" if self.ok else "HTTP 503"
        return CheckResult(self.ok, "http", "/health", 0.01, reason, datetime.now(UTC))


@pytest.fixture
async def storage(tmp_path: Path, database: str) -> AsyncIterator[Storage]:
    async with Storage(database) as storage:
        yield storage


async def succeeded(deployments: Deployments, version: str) -> Deployment:
    deployment = await deployments.request("app", "staging", version, "1001")
    for state in (S.APPROVED, S.PRE_CHECKS, S.BUILDING, S.SWITCHING, S.VERIFYING, S.SUCCEEDED):
        deployment = await deployments.advance(deployment.id, state, "opsgate")
    return deployment


def long_watches(
    storage: Storage, check: Check, deploy: DeployConfig | None = DEPLOY
) -> tuple[LongWatches, list[str], list[LongWatch]]:
    """LongWatches over `check`; the rollbacks it asked for and the ends it told."""
    watches = LongWatches(storage, Deployments(storage, AuditLog(storage)), AuditLog(storage),
                          lambda name: deploy, poll_s=0.01)  # fmt: skip
    rolled: list[str] = []
    told: list[LongWatch] = []

    async def watcher(name: str, host: str, restarts: int | None) -> Watch:
        http = httpx.AsyncClient()
        return Watch(name, DEPLOY, Backend(), cast(HealthCheck, check), LocalHost(), http, 0)

    async def roll_back(watch: LongWatch, why: str) -> int:
        rolled.append(why)
        return 99

    class Listener:
        async def long_watch_ended(self, watch: LongWatch, deployment: Deployment) -> None:
            told.append(watch)

    watches.watcher, watches.roll_back, watches.listener = watcher, roll_back, Listener()
    return watches, rolled, told


async def test_bad_readings_in_a_row_survive_a_restart_and_a_breach_rolls_back(
    storage: Storage,
) -> None:
    check = Check()
    first, rolled, _ = long_watches(storage, check)
    deployment = await succeeded(Deployments(storage, AuditLog(storage)), "v2")
    await first.begin(deployment, "local", 3600, 0, "v1")
    await first.tick()
    check.ok = False
    await first.tick()  # one bad reading of two allowed in a row
    row = await first.get(deployment.id)
    assert row is not None and (row.state, row.readings, row.streaks) == (
        "watching",
        2,
        '{"health": 1, "memory": 0, "errors": 0}',
    )
    await first.stop()  # opsgate stops; a new one reads the same rows
    second, rolled, told = long_watches(storage, check)
    await second.tick()
    row = await second.get(deployment.id)
    assert row is not None and (row.state, row.rollback_id) == ("breached", 99)
    assert rolled == ["app failed its health check 2 time(s) in a row while watched (HTTP 503)."]
    assert [w.state for w in told] == ["breached"] and await second.watching() == []


async def test_a_watch_ends_clean_superseded_or_stopped(storage: Storage) -> None:
    deployments = Deployments(storage, AuditLog(storage))
    watches, rolled, told = long_watches(storage, Check())
    first = await succeeded(deployments, "v1")
    await watches.begin(first, "local", 0.0, 0, None)  # its window has passed
    await watches.tick()
    second = await succeeded(deployments, "v2")
    await watches.begin(second, "local", 3600, 0, "v1")
    third = await succeeded(deployments, "v3")  # switched while v2 was watched
    await watches.begin(third, "local", 3600, 0, "v2")
    await watches.tick()
    assert [(w.deployment_id, w.state) for w in told] == [(1, "clean"), (2, "superseded")]
    gone, _, told = long_watches(storage, Check(), deploy=None)  # left the ops file
    await gone.tick()
    assert [(w.deployment_id, w.state) for w in told] == [(3, "stopped")] and rolled == []


def test_long_watches_are_over_the_threshold_and_at_most_72_hours() -> None:
    assert not LongWatches.is_long(DeployConfig(root="/srv/app", watch_s=600))
    assert LongWatches.is_long(DeployConfig(root="/srv/app", watch_s=601))
    assert DeployConfig(root="/srv/app", watch_s=259200).watch_s == 72 * 3600
    with pytest.raises(ValidationError):
        DeployConfig(root="/srv/app", watch_s=259201)
