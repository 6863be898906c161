"""Promotion: only versions that succeeded (and soaked) in the environment before."""

from datetime import UTC, datetime, timedelta

from config.inventory import ServiceEnvironment
from services.deploy.model import Deployment, DeploymentKind, DeploymentState
from services.deploy.promotion import promotion_refusal

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
PRODUCTION = ServiceEnvironment(hosts=["p1"], promote_from="staging", min_soak_s=600)


def staged(state: DeploymentState, finished: datetime) -> Deployment:
    return Deployment(
        id=7,
        service="web",
        environment="staging",
        version="v2",
        previous_version="v1",
        kind=DeploymentKind.DEPLOY,
        state=state,
        requested_by="1001",
        emergency=False,
        dry_run=False,
        created_at=finished - timedelta(seconds=30),
        updated_at=finished,
        finished_at=finished,
        error="",
        progress_chat_id=None,
        progress_message_id=None,
    )


def test_a_version_that_never_ran_in_staging_is_refused_with_the_way_forward() -> None:
    refusal = promotion_refusal("web", "production", PRODUCTION, "v2", None, NOW)
    assert refusal == (
        "web v2 has not run in staging; production takes only versions that succeeded there"
        " (deploy it there first: /deploy web v2 to staging)."
    )


def test_a_version_that_failed_in_staging_is_refused() -> None:
    last = staged(DeploymentState.ROLLED_BACK, NOW - timedelta(hours=1))
    refusal = promotion_refusal("web", "production", PRODUCTION, "v2", last, NOW)
    assert refusal == "web v2 did not succeed in staging (#7 rolled_back)."


def test_the_soak_time_counts_from_success_in_staging() -> None:
    early = staged(DeploymentState.SUCCEEDED, NOW - timedelta(seconds=200))
    refusal = promotion_refusal("web", "production", PRODUCTION, "v2", early, NOW)
    assert refusal == (
        "web v2 has run in staging for 200 s of the 600 s it must soak there; try again in 400 s."
    )
    soaked = staged(DeploymentState.SUCCEEDED, NOW - timedelta(seconds=600))
    assert promotion_refusal("web", "production", PRODUCTION, "v2", soaked, NOW) is None


def test_an_environment_without_promote_from_takes_any_version() -> None:
    free = ServiceEnvironment(hosts=["s1"])
    assert promotion_refusal("web", "staging", free, "v9", None, NOW) is None
