from datetime import timedelta
from pathlib import Path

from services.deploy.deployments import Deployments
from services.deploy.halt import halt
from services.deploy.locks import EnvironmentLocks
from services.deploy.model import DeploymentState as S
from services.flags.plans import GateVerdict, PlanService, PlanState
from services.records.audit import AuditLog
from services.records.storage import Storage


class Rollouts:
    async def set_rollout(self, key: str, percent: float, actor: str, note: str = "") -> object:
        return None


async def open_gate(key: str) -> GateVerdict:
    return GateVerdict(True)


async def test_halt_cancels_unswitched_pauses_plans_and_locks(
    tmp_path: Path, database: str
) -> None:
    async with Storage(database) as storage:
        audit = AuditLog(storage)
        deployments, locks = Deployments(storage, audit), EnvironmentLocks(storage, audit)
        plans = PlanService(storage, audit, Rollouts(), open_gate)
        waiting = await deployments.request("web", "production", "v2", "1")
        switched = await deployments.request("api", "production", "v7", "1")
        for state in (S.APPROVED, S.PRE_CHECKS, S.BUILDING, S.SWITCHING):
            await deployments.advance(switched.id, state, "opsgate")
        await plans.start("checkout", [5, 50], timedelta(hours=1), "1")

        report = await halt(
            deployments,
            deployments.cancel,
            plans,
            locks,
            audit,
            ["production", "staging"],
            "3",
            "bad migration",
        )

        assert [d.id for d in report.cancelled] == [waiting.id]
        assert (await deployments.get(waiting.id)).state is S.CANCELLED
        assert [d.id for d in report.still_running] == [switched.id]
        assert (await deployments.get(switched.id)).state is S.SWITCHING
        assert [p.state for p in report.paused] == [PlanState.PAUSED]
        assert [lock.environment for lock in report.locked] == ["production", "staging"]
        lock = await locks.get("staging")
        assert lock is not None and lock.reason == "halt: bad migration"
        [event] = await audit.events(kind="opsgate.halt")
        assert event.data["cancelled"] == [waiting.id] and event.actor == "3"
