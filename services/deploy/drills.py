"""Rollback drills: on a non-production environment, roll back to the previous good release,
verify, roll forward again and verify, recording the time to recover.

    pre_checks -> switching (back) -> verifying -> switching (forward) -> verifying -> succeeded

A drill that cannot get healthy on the older release has found what it exists to find: that
release is marked bad (no /rollback will land on it) and the service goes back to where it
was. If the forward leg fails, the older release (verified a moment ago) keeps serving.
Nothing is marked bad for a failure that is not the release's (NotTheReleasesFault).

A database drill (`run_database_drill`) changes nothing anywhere: it restores a rollback
point's database backup into a scratch file beside the backup, runs SQLite's
`PRAGMA integrity_check` on it, counts its tables, and removes it.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from services.deploy.database_backups import SqliteDatabase, check_sqlite
from services.deploy.deployments import DeploymentState
from services.deploy.errors import StepFailed, is_the_releases_fault
from services.deploy.rollback_points import RollbackPoint, RollbackPointNotFound, RollbackPoints
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


@dataclass(frozen=True)
class DatabaseDrillReport:
    """A database drill's findings: the backup restored into a scratch copy and checked."""

    point: str
    created_at: str
    source: str
    ok: bool
    integrity: tuple[str, ...]  # PRAGMA integrity_check's lines ("ok" when sound)
    tables: int
    seconds: float


async def run_database_drill(
    points: RollbackPoints,
    database: SqliteDatabase,
    point_id: str | None = None,
    query: str | None = None,
) -> DatabaseDrillReport:
    """Restore a point's database backup (the newest with one, or `point_id`) into a scratch
    file next to it, open that with SQLite and check it; the live database is never opened.
    The scratch file is removed afterwards. `query`: a check of the team's own, run after
    the integrity check; its answer lines are reported with it."""
    point = await _drill_point(points, point_id)
    started = time.monotonic()
    saved = await points.checked_database(point, database)
    scratch = SqliteDatabase(f"{point.directory}/drill-{secrets.token_hex(6)}.sqlite")
    try:
        await points.restore_database(point, database, into=scratch)
        lines = await check_sqlite(points.host, scratch.path, query)
        counted = await check_sqlite(points.host, scratch.path, TABLE_COUNT)
    finally:
        await points.host.run(["rm", "-f", "--", scratch.path], timeout=60.0)
    integrity = tuple(lines)  # "ok", then the query's own lines, if any
    tables = int(counted[-1]) if counted and counted[-1].isdigit() else 0
    return DatabaseDrillReport(
        point.deployment_id,
        point.created_at,
        saved.source,
        bool(integrity) and integrity[0] == "ok",
        integrity,
        tables,
        time.monotonic() - started,
    )


TABLE_COUNT = "SELECT count(*) FROM sqlite_master WHERE type = 'table'"


async def _drill_point(points: RollbackPoints, point_id: str | None) -> RollbackPoint:
    if point_id is not None:
        return await points.load(point_id)
    for point in await points.all():
        if point.database is not None:
            return point
    raise RollbackPointNotFound("No rollback point holds a database backup yet.")
