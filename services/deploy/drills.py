"""Rollback drills: on a non-production environment, roll back to the previous good release,
verify, roll forward again and verify, recording the time to recover.

    pre_checks -> switching (back) -> verifying -> switching (forward) -> verifying -> succeeded

A drill that cannot get healthy on the older release has found what it exists to find: that
release is marked bad (no /rollback will land on it) and the service goes back to where it
was. If the forward leg fails, the older release (verified a moment ago) keeps serving.
Nothing is marked bad for a failure that is not the release's (NotTheReleasesFault).
"""

from __future__ import annotations

import time

from services.deploy.deployments import DeploymentState
from services.deploy.errors import StepFailed, is_the_releases_fault
from services.deploy.steps import DeployOutcome, PipelineSteps, Run, Target, describe
from services.releases.layout import validate_version

S = DeploymentState


async def run_drill(steps: PipelineSteps, run: Run, target: Target) -> DeployOutcome:
    version, back_to = run.version, run.deployment.previous_version
    progress = run.progress
    leg = 0
    try:
        await steps.advance(run, S.PRE_CHECKS)
        async with progress.step("releases") as step:
            if back_to is None:
                raise StepFailed("A drill needs an earlier release to roll back to.")
            current = await target.layout.current()
            if current != version:
                raise StepFailed(f"{version} no longer runs (current is {current or 'nothing'}).")
            if not await target.layout.exists(validate_version(back_to)):
                raise StepFailed(f"There is no release {back_to} to roll back to.")
            if (reason := await target.layout.bad_reason(back_to)) is not None:
                raise StepFailed(f"Release {back_to} is marked bad: {reason}")
            step.detail = f"{version} runs; drill: back to {back_to}, then forward"
        started = time.monotonic()
        await steps.advance(run, S.SWITCHING, f"drill: back to {back_to}")
        leg = 1
        await target.strategy.switch(back_to, progress)
        await steps.advance(run, S.VERIFYING)
        await steps.verify(target, progress, rollback=True)  # as a real rollback would
        recovered_s = time.monotonic() - started
        started = time.monotonic()
        note = f"drill: {back_to} healthy in {recovered_s:.2f} s; forward to {version}"
        await steps.advance(run, S.SWITCHING, note)
        leg = 2
        await target.strategy.switch(version, progress)
        await steps.advance(run, S.VERIFYING)
        await steps.verify(target, progress)
        forward_s = time.monotonic() - started
        note = f"time to recover {recovered_s:.2f} s; {version} again in {forward_s:.2f} s"
        await steps.advance(run, S.SUCCEEDED, note)
    except Exception as exc:
        return await _failed(steps, run, target, exc, leg)
    return DeployOutcome(
        True, S.SUCCEEDED, version, back_to, None, recovered_s=recovered_s, forward_s=forward_s
    )


async def resume_drill(steps: PipelineSteps, run: Run, target: Target) -> DeployOutcome:
    """opsgate died mid-drill: put the release that ran before it back, and say so."""
    error = "The drill was interrupted by a restart of opsgate."
    return await _go_back(steps, run, target, error, run.version)


async def _failed(
    steps: PipelineSteps, run: Run, target: Target, exc: Exception, leg: int
) -> DeployOutcome:
    error = describe(exc)
    back_to = run.deployment.previous_version
    if leg == 0 or back_to is None:
        await steps.fail(run, run.actor, error)
        return DeployOutcome(False, S.FAILED, run.version, back_to, error)
    if leg == 1:
        if is_the_releases_fault(exc):
            await steps.mark_bad(target, back_to, f"failed a rollback drill: {error}")
            error += f" {back_to} is marked bad: /rollback will not land on it."
        return await _go_back(steps, run, target, error, run.version)
    return await _go_back(steps, run, target, error, back_to)


async def _go_back(
    steps: PipelineSteps, run: Run, target: Target, error: str, release: str
) -> DeployOutcome:
    """failed -> rolling_back -> `release` serving and verified, or rollback_failed."""
    if run.deployment.state is not S.FAILED:
        await steps.fail(run, run.actor, error)
    await steps.advance(run, S.ROLLING_BACK, f"back to {release}")
    try:
        if await target.layout.current() != release:
            await target.strategy.switch_back(release, run.progress)
        await steps.verify(target, run.progress, rollback=True)
    except Exception as exc:
        why = describe(exc)
        await steps.advance(run, S.ROLLBACK_FAILED, why)
        text = f"{error} Going back to {release} failed too: {why}"
        return DeployOutcome(False, S.ROLLBACK_FAILED, run.version, release, text)
    await steps.advance(run, S.ROLLED_BACK, f"{release} runs again")
    return DeployOutcome(False, S.ROLLED_BACK, run.version, release, error, rolled_back_to=release)
