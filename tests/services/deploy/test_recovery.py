from pathlib import Path

from services.deploy.deployments import Deployments
from services.deploy.model import DeploymentState as S
from services.deploy.recovery import RESTART_NOTE, reconcile
from services.records.audit import AuditLog
from services.records.storage import Storage


async def test_unswitched_deployments_end_and_switched_ones_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    async with Storage(path) as storage:
        deployments = Deployments(storage, AuditLog(storage))
        building = await deployments.request("web", "production", "v2", "1")
        for state in (S.APPROVED, S.PRE_CHECKS, S.BUILDING):
            await deployments.advance(building.id, state, "opsgate")
        verifying = await deployments.request("api", "production", "v7", "1")
        for state in (S.APPROVED, S.PRE_CHECKS, S.BUILDING, S.SWITCHING, S.VERIFYING):
            await deployments.advance(verifying.id, state, "opsgate")
    # A new process over the same database, as after a crash.
    async with Storage(path) as storage:
        deployments = Deployments(storage, AuditLog(storage))
        result = await reconcile(deployments)
        assert [d.id for d in result.ended] == [building.id]
        ended = await deployments.get(building.id)
        assert (ended.state, ended.error) == (S.FAILED, RESTART_NOTE)
        assert [d.id for d in result.needs_attention] == [verifying.id]
        assert [d.id for d in await deployments.in_flight()] == [verifying.id]
        again = await deployments.request("web", "production", "v2", "1")  # lock released
        assert again.id != building.id
