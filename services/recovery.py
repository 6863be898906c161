"""What opsgate does at start-up with deployments a previous run left in flight.

A deployment that had not switched yet changed nothing on the host: it is ended as failed,
which releases its lock, and its requester is told to ask again. One that had switched is
left holding its lock (nobody should deploy over a release that was never verified) and is
reported, so that a person looks; finishing its verification or rolling it back by itself
is the next step of this work.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.deployment_model import BEFORE_SWITCH, Deployment, DeploymentError
from services.deployments import Deployments

RESTART_NOTE = "opsgate restarted before the switch; nothing was changed"


@dataclass(frozen=True)
class Reconciled:
    ended: list[Deployment]  # had not switched: failed, lock released
    needs_attention: list[Deployment]  # had switched: still in flight


async def reconcile(deployments: Deployments) -> Reconciled:
    ended, attention = [], []
    for deployment in await deployments.in_flight():
        if deployment.state in BEFORE_SWITCH:
            try:
                ended.append(await deployments.fail(deployment.id, "opsgate", RESTART_NOTE))
            except DeploymentError:  # another opsgate got there first
                continue
        else:
            attention.append(deployment)
    return Reconciled(ended, attention)
