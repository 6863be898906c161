"""Promotion: an environment may take only versions that succeeded in another one first,
and ran there for a soak time. Pure: the caller reads the deployment that answers it."""

from __future__ import annotations

from datetime import datetime

from config.inventory import ServiceEnvironment
from services.deploy.model import Deployment, DeploymentState


def promotion_refusal(
    name: str,
    environment: str,
    placement: ServiceEnvironment,
    version: str,
    last: Deployment | None,
    now: datetime,
) -> str | None:
    """Why `version` may not go to `environment` yet, or None. `last`: the newest finished
    deploy or rollback of `version` in the environment it is promoted from."""
    source = placement.promote_from
    if source is None:
        return None
    ask = f"deploy it there first: /deploy {name} {version} to {source}"
    if last is None:
        return (
            f"{name} {version} has not run in {source}; {environment} takes only"
            f" versions that succeeded there ({ask})."
        )
    if last.state is not DeploymentState.SUCCEEDED:
        return f"{name} {version} did not succeed in {source} (#{last.id} {last.state})."
    if placement.min_soak_s > 0 and last.finished_at is not None:
        soaked = (now - last.finished_at).total_seconds()
        if soaked < placement.min_soak_s:
            left = placement.min_soak_s - soaked
            return (
                f"{name} {version} has run in {source} for {soaked:.0f} s of the"
                f" {placement.min_soak_s:.0f} s it must soak there; try again in {left:.0f} s."
            )
    return None
