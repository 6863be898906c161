"""Database restores: a rollback point's database backup put back, with the service stopped.

    pre_checks (the point, its backup's checksum) -> switching (stop the unit; a safety
    copy of the database, itself a rollback point under the restore's id; restore; start)
    -> verifying (running, healthy) -> succeeded

SQLite's backup API is consistent while the service writes, but a restore under a running
service is not safe (it keeps its own pages and file handles), so the service is always
stopped first. A failure once the database changed puts the safety copy back the same way:
failed -> rolling_back -> rolled_back, or rollback_failed (the card says what to look at).
A restore changes no release: what runs before runs after.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from config.inventory import Service
from services.control.supervisor import SupervisorManager
from services.control.systemd import SystemdManager
from services.deploy.database_backups import SqliteDatabase
from services.deploy.deployments import DeploymentState
from services.deploy.errors import StepFailed
from services.deploy.rollback_points import RollbackPoint, RollbackPointNotFound
from services.deploy.steps import DeployOutcome, PipelineSteps, Run, Target, describe

S = DeploymentState
Action = Callable[[], Awaitable[None]]


def database_of(target: Target) -> SqliteDatabase:
    if not target.deploy.sqlite_db:
        raise StepFailed(
            f"{target.name} has no sqlite_db in its deploy section: nothing to restore."
        )
    return SqliteDatabase(target.deploy.sqlite_db)


async def run_restore(steps: PipelineSteps, run: Run, target: Target) -> DeployOutcome:
    """The restore of the point named by `run.version`; see the module docstring."""
    progress, point_id = run.progress, run.version
    current: str | None = None
    try:
        await steps.advance(run, S.PRE_CHECKS)
        database = database_of(target)
        if target.controller.blue_green(target.name, target.host) is not None:
            raise StepFailed("Restores stop one unit; a blue-green service has two.")
        async with progress.step(f"rollback point {point_id}") as step:
            point = await target.points.load(point_id)
            saved = await target.points.checked_database(point, database)
            step.detail = f"backup of {saved.source} from {point.created_at}, checksum ok"
        current = await target.layout.current()
        await steps.advance(run, S.SWITCHING, f"restore the database from point {point_id}")
        run.switched = True
        await _put_back(target, point, database, run, safety_of=current)
        await steps.advance(run, S.VERIFYING)
        await steps.verify(target, progress, rollback=True)
        await steps.advance(run, S.SUCCEEDED, f"database restored from point {point_id}")
    except Exception as exc:
        return await _failed(steps, run, target, exc, current)
    return DeployOutcome(True, S.SUCCEEDED, point_id, current, None)


async def _put_back(
    target: Target,
    point: RollbackPoint,
    database: SqliteDatabase,
    run: Run,
    *,
    safety_of: str | None = None,
) -> None:
    """Stop, [keep a safety copy,] restore, start. The safety copy (for a restore, not for
    putting that copy back) is taken once nothing writes, as the rollback point `run.id`."""
    service = target.controller.service(target.name)
    stop, start = _control(service, target)
    async with run.progress.step(f"stop {_unit_name(service)}"):
        await stop()
    if point.deployment_id != str(run.id):
        async with run.progress.step("safety copy of the database") as step:
            points = target.points
            safety = await points.record(run.id, previous_version=safety_of, database=database)
            step.detail = f"rollback point {safety.deployment_id}"
    async with run.progress.step(f"restore {database.path}") as step:
        saved = await target.points.restore_database(point, database)
        step.detail = f"from point {point.deployment_id} ({saved.sha256[:12]})"
    async with run.progress.step(f"start {_unit_name(service)}"):
        await start()


async def _failed(
    steps: PipelineSteps, run: Run, target: Target, exc: Exception, current: str | None
) -> DeployOutcome:
    error = describe(exc)
    if run.deployment.state not in (S.FAILED, S.ROLLING_BACK):
        await steps.fail(run, run.actor, error)
    if not run.switched:
        return DeployOutcome(False, S.FAILED, run.version, current, error)
    safety = str(run.id)
    if run.deployment.state is not S.ROLLING_BACK:
        note = f"put back the database as it was (point {safety})"
        await steps.advance(run, S.ROLLING_BACK, note)
    try:
        database = database_of(target)
        try:
            point = await target.points.load(safety)
        except RollbackPointNotFound:  # stopped before the safety copy: nothing was restored
            service = target.controller.service(target.name)
            async with run.progress.step(f"start {_unit_name(service)}"):
                await _control(service, target)[1]()
        else:
            await _put_back(target, point, database, run)
        await steps.verify(target, run.progress, rollback=True)
    except Exception as again:
        why = describe(again)
        await steps.advance(run, S.ROLLBACK_FAILED, why)
        text = f"{error} Putting the database back failed too: {why}"
        return DeployOutcome(False, S.ROLLBACK_FAILED, run.version, current, text)
    await steps.advance(run, S.ROLLED_BACK, f"the database is as it was (point {safety})")
    return DeployOutcome(False, S.ROLLED_BACK, run.version, current, error, rolled_back_to=safety)


async def resume_restore(steps: PipelineSteps, run: Run, target: Target) -> DeployOutcome:
    """opsgate died mid-restore: the database may be half-restored; put the safety copy back."""
    run.switched = True
    return await _failed(
        steps, run, target, StepFailed("The restore was interrupted by a restart of opsgate."), None
    )


def _unit_name(service: Service) -> str:
    return service.control_name


def _control(service: Service, target: Target) -> tuple[Action, Action]:
    """Stop and start for the service's unit or program on the target's host."""
    host = target.layout.host
    if service.manager == "supervisor":
        assert service.program is not None and service.supervisor_config is not None
        manager = SupervisorManager(
            host, service.supervisor_config, supervisorctl=service.supervisorctl
        )
        program = service.program
        return (lambda: manager.stop(program)), (lambda: manager.start(program))
    assert service.unit is not None
    systemd = SystemdManager(host, user_mode=service.user_manager)
    unit = service.unit
    return (lambda: systemd.stop(unit)), (lambda: systemd.start(unit))
