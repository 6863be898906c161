"""A fleet deployment's hosts as rows: planned once, moved and audited, read after a crash."""

from pathlib import Path

import pytest

from services.deploy.deployments import Deployments
from services.deploy.host_rows import HoldAt, HostState
from services.records.audit import AuditLog
from services.records.storage import Storage


async def test_rows_are_planned_once_and_keep_each_hosts_way_back(
    tmp_path: Path, database: str
) -> None:
    async with Storage(database) as storage:
        deployments = Deployments(storage, AuditLog(storage))
        deployment = await deployments.request("web", "production", "v2", "1001")
        rows = deployments.hosts
        planned = await rows.plan(deployment.id, [["h1"], ["h2", "h3"]])
        assert [(r.host, r.position, r.batch, r.state) for r in planned] == [
            ("h1", 0, 0, HostState.PENDING),
            ("h2", 1, 1, HostState.PENDING),
            ("h3", 2, 1, HostState.PENDING),
        ]
        await rows.set_previous(deployment.id, "h2", "v1")
        await rows.move(deployment.id, "web", "h2", HostState.FAILED, "h2: not healthy")
        # Planned again (a resumed rollout): the rows as they were, not a new plan.
        again = await rows.plan(deployment.id, [["h3", "h2", "h1"]])
        h2 = next(r for r in again if r.host == "h2")
        assert (h2.state, h2.previous_version, h2.error) == (
            HostState.FAILED,
            "v1",
            "h2: not healthy",
        )
        events = await AuditLog(storage).events(kind="deploy.host")
        assert [e.data["host"] for e in events] == ["h2"]
        assert events[0].data["to"] == "failed"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host.switching.3", HoldAt(HostState.SWITCHING, 3)),
        ("host.rolling_back.1", HoldAt(HostState.ROLLING_BACK, 1)),
        ("switching", None),
        ("host.switching", None),
        ("host.switching.x", None),
    ],
)
def test_hold_points_for_crash_drills(text: str, expected: HoldAt | None) -> None:
    assert HoldAt.parse(text) == expected
