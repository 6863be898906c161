"""A restarted opsgate ends the deployments that had not switched and says so in chat."""

from __future__ import annotations

from bot.dev.sandbox import SandboxClient
from services.deploy.model import DeploymentState as S
from tests.e2e.conftest import DEPLOYS, StartOpsgate


async def test_restart_reports_in_flight_deployments(
    start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    first = await start_opsgate()
    deployments = first.services.deployments
    building = await deployments.request("web", "production", "v2", "1001")
    for state in (S.APPROVED, S.PRE_CHECKS, S.BUILDING):
        await deployments.advance(building.id, state, "opsgate")
    verifying = await deployments.request("worker", "production", "v9", "1001")
    for state in (S.APPROVED, S.PRE_CHECKS, S.BUILDING, S.SWITCHING, S.VERIFYING):
        await deployments.advance(verifying.id, state, "opsgate")
    await first.stop()  # as if it had died: the rows stay as they were

    second = await start_opsgate()
    notice = await client.wait_for(
        DEPLOYS, lambda ms: next((m for m in ms if "restarted" in m.text), None)
    )
    assert notice.text.splitlines()[0] == "♻️ opsgate restarted with deployments in flight."
    assert f"#{building.id} web v2 had not switched: ended, nothing changed." in notice.text
    assert f"#{verifying.id} worker v9 was verifying" in notice.text
    assert (await second.services.deployments.get(building.id)).state is S.FAILED
    in_flight = await second.services.deployments.in_flight()
    assert [d.id for d in in_flight] == [verifying.id]
