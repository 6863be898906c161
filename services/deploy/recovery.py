"""What opsgate does at start-up with deployments a previous run left in flight.

A deployment that had not switched yet changed nothing on the host: it is ended as failed,
which releases its lock, and its requester is told to ask again; except one awaiting
approval, which waits for people, not for opsgate: its sign-off goes on. One that had switched keeps
its lock and is handed back to the pipeline (`DeployPipeline.resume`): verified again and
ended succeeded, or rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.deploy.deployments import Deployments
from services.deploy.model import (
    BEFORE_SWITCH,
    Deployment,
    DeploymentError,
    DeploymentState,
)

RESTART_NOTE = "opsgate restarted before the switch; nothing was changed"


@dataclass(frozen=True)
class Reconciled:
    ended: list[Deployment]  # had not switched: failed, lock released
    needs_attention: list[Deployment]  # had switched: still in flight


async def reconcile(deployments: Deployments) -> Reconciled:
    ended, attention = [], []
    for deployment in await deployments.in_flight():
        if deployment.state is DeploymentState.AWAITING_APPROVAL:
            continue
        if deployment.state in BEFORE_SWITCH:
            try:
                ended.append(await deployments.fail(deployment.id, "opsgate", RESTART_NOTE))
            except DeploymentError:  # another opsgate got there first
                continue
        else:
            attention.append(deployment)
    return Reconciled(ended, attention)
