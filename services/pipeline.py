"""The deploy pipeline: an approved deployment through its states, on the service's host.

    deploy:   pre_checks (current health: reported; free disk) -> building (prepare the release
              unless it is built already; record a rollback point) -> switching (current ->
              the release, restart) -> verifying (running, then healthy N in a row within T)
              -> [watching] -> succeeded, then prune the old releases.
    rollback: pre_checks (the target exists and is not bad) -> rollback point -> switching
              -> verifying -> succeeded.

A failure before the switch ends as `failed`: nothing on the host changed. After it, the
release is marked bad and the deployment goes failed -> rolling_back (switch back, restore
the rollback point's config files, restart, verify) -> rolled_back or rollback_failed.
Every state is entered through `Deployments`, so the events table tells the same story.

Hooks (services/hooks.py; cwd: the release being deployed or rolled back to):
    pre_deploy    once the release is built, before the rollback point and the switch; a
                  failure ends the deploy `failed` with nothing switched.
    post_deploy   after verifying, before watching; a failure is a failed verification, so
                  the release is marked bad and the pipeline rolls back.
    pre_rollback  before switching back (automatic or by hand); a failure is reported, the
                  rollback goes on.
    post_rollback after the rollback verified; a failure never switches again: the
                  rollback ends `rollback_failed`, the verified release keeps running.
A failing hook's output tail goes into the deployment's error (and the event's note); every
hook's tail is in its Progress step's detail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from config.inventory import DeployConfig
from config.opsfile import OpsConfig
from services.database_backups import SqliteDatabase
from services.deployment_model import BEFORE_SWITCH
from services.deployments import (
    Deployment,
    DeploymentError,
    DeploymentKind,
    Deployments,
    DeploymentState,
    IllegalTransition,
)
from services.hooks import HookContext, HookFailed, HookPhase, HookResult, hooks_of, run_hooks
from services.hosts_ssh import Hosts, UnknownHostError
from services.pipeline_steps import (
    MIB,
    StepFailed,
    build_steps_of,
    check_disk,
    report_health,
    restart,
    source_of,
    verify,
    watch,
)
from services.progress import Progress, StepStatus
from services.release_build import BuildFailed, HostCommandFailed, ReleaseError
from services.releases import ReleaseLayout, ReleaseNotFound, validate_version
from services.rollback_points import RollbackPointError, RollbackPoints
from services.servicectl import ServiceController, UnknownService
from services.units import ServiceControlError

log = logging.getLogger(__name__)
S = DeploymentState

# What a step fails with when the host or the service misbehaves. Anything else is a bug: the
# deployment still ends truthfully (rolled back if it had switched) and the trace is logged.
EXPECTED: tuple[type[Exception], ...] = (
    StepFailed,
    ReleaseError,
    HostCommandFailed,
    RollbackPointError,
    ServiceControlError,
    UnknownService,
    UnknownHostError,
    ValueError,
)


@dataclass(frozen=True)
class DeployOutcome:
    ok: bool
    state: DeploymentState
    version: str
    previous_version: str | None
    error: str | None
    rolled_back_to: str | None = None


@dataclass(frozen=True)
class _Target:
    name: str
    deploy: DeployConfig
    controller: ServiceController
    layout: ReleaseLayout
    points: RollbackPoints


@dataclass
class _Run:
    deployment: Deployment
    progress: Progress
    actor: str
    target: _Target | None = None
    previous: str | None = None
    switched: bool = False  # from here on a failure rolls back

    @property
    def id(self) -> int:
        return self.deployment.id

    @property
    def version(self) -> str:
        return self.deployment.version


class DeployPipeline:
    def __init__(
        self,
        ops: Callable[[], OpsConfig],
        hosts: Callable[[], Hosts],
        deployments: Deployments,
        controller: Callable[[], ServiceController],
        *,
        min_free_bytes: int = 100 * MIB,
        start_timeout_s: float = 60.0,
    ) -> None:
        self._ops = ops
        self._hosts = hosts
        self._deployments = deployments
        self._controller = controller
        self._min_free_bytes = min_free_bytes
        self._start_timeout_s = start_timeout_s

    async def run(
        self, deployment_id: int, progress: Progress, actor: str = "opsgate"
    ) -> DeployOutcome:
        """Take an approved deploy from pre-checks to succeeded, or to its truthful end."""
        run = _Run(await self._approved(deployment_id, DeploymentKind.DEPLOY), progress, actor)
        try:
            target = run.target = self._resolve(run.deployment.service)
            await self._advance(run, S.PRE_CHECKS)
            validate_version(run.version)
            await report_health(target.controller, target.name, progress)
            await check_disk(target.layout.host, target.deploy.root, progress, self._min_free_bytes)
            await self._advance(run, S.BUILDING)
            await self._build(run, target)
            if target.deploy.hooks.pre_deploy:  # a failure here: nothing switched, `failed`
                current = await target.layout.current()
                await self._hooks(run, target, "pre_deploy", run.version, current)
            await self._switch(run, target)
            await self._advance(run, S.VERIFYING)
            restarts = await verify(target.controller, target.name, progress, self._start_timeout_s)
            # A failing post_deploy hook is a failed verification: marked bad, rolled back.
            await self._hooks(run, target, "post_deploy", run.version, run.previous)
            if target.deploy.watch_s > 0:
                await self._advance(run, S.WATCHING)
                await watch(target.controller, target.name, target.deploy, progress, restarts)
            await self._advance(run, S.SUCCEEDED)
        except Exception as exc:
            return await self._after_failure(run, exc)
        await self._prune(run, target)
        return DeployOutcome(True, S.SUCCEEDED, run.version, run.previous, None)

    async def rollback(
        self, deployment_id: int, progress: Progress, actor: str = "opsgate"
    ) -> DeployOutcome:
        """Switch back to the release the caller chose (never one marked bad) and verify."""
        run = _Run(await self._approved(deployment_id, DeploymentKind.ROLLBACK), progress, actor)
        post_hook_failed: HookFailed | None = None
        try:
            target = run.target = self._resolve(run.deployment.service)
            await self._advance(run, S.PRE_CHECKS)
            async with progress.step(f"release {run.version}") as step:
                if not await target.layout.exists(validate_version(run.version)):
                    raise ReleaseNotFound(f"There is no release {run.version} to roll back to.")
                reason = await target.layout.bad_reason(run.version)
                if reason is not None:
                    raise StepFailed(f"Release {run.version} is marked bad: {reason}")
                current = await target.layout.current()
                if current == run.version:
                    raise StepFailed(f"{run.version} is what runs already.")
                step.detail = "built, not marked bad"
            await self._hooks(run, target, "pre_rollback", run.version, current, stop=False)
            await self._switch(run, target)
            await self._advance(run, S.VERIFYING)
            await verify(target.controller, target.name, progress, self._start_timeout_s)
            try:
                await self._hooks(run, target, "post_rollback", run.version, run.previous)
            except HookFailed as exc:  # handled below, outside: never a switch back
                post_hook_failed = exc
            else:
                await self._advance(run, S.SUCCEEDED)
        except Exception as exc:
            return await self._after_failure(run, exc)
        if post_hook_failed is not None:
            return await self._post_rollback_failed(run, str(post_hook_failed))
        return DeployOutcome(True, S.SUCCEEDED, run.version, run.previous, None)

    async def resume(
        self, deployment_id: int, progress: Progress, actor: str = "opsgate"
    ) -> DeployOutcome:
        """After opsgate restarted: a deployment that had switched is verified again and ends
        succeeded, or is rolled back (also one that was failing or rolling back)."""
        deployment = await self._deployments.get(deployment_id)
        if deployment.finished or deployment.state in BEFORE_SWITCH:
            raise IllegalTransition(f"#{deployment_id} is {deployment.state}: nothing to resume")
        run = _Run(deployment, progress, actor, previous=deployment.previous_version)
        run.switched = True
        try:
            target = run.target = self._resolve(deployment.service)
            if deployment.state in (S.FAILED, S.ROLLING_BACK):
                raise StepFailed(f"it was {deployment.state} when opsgate stopped")
            async with progress.step("release in place") as step:
                current = await target.layout.current()
                step.detail = f"current is {current or 'nothing'}"
                # Killed while switching, before `current` moved: the release (complete, its
                # rollback point recorded) never ran, so finish the switch. Rolling back here
                # would mark a release bad that never failed, and nothing clears that mark.
                if (
                    deployment.state is S.SWITCHING
                    and current != deployment.version
                    and current == deployment.previous_version
                ):
                    await target.layout.switch(deployment.version)
                    current = deployment.version
                    step.detail += f", switched to {current} now"
                if current != deployment.version:
                    raise StepFailed(f"current is {current or 'nothing'}, not {deployment.version}")
            if deployment.state is S.SWITCHING:
                await restart(target.controller, target.name, progress)
                await self._advance(run, S.VERIFYING, "resumed after a restart of opsgate")
            await verify(target.controller, target.name, progress, self._start_timeout_s)
            await self._advance(run, S.SUCCEEDED, "verified after a restart of opsgate")
        except Exception as exc:
            return await self._after_failure(run, exc)
        return DeployOutcome(True, S.SUCCEEDED, run.version, run.previous, None)

    async def _approved(self, deployment_id: int, kind: DeploymentKind) -> Deployment:
        deployment = await self._deployments.get(deployment_id)
        if deployment.kind is not kind or deployment.dry_run:
            raise IllegalTransition(f"#{deployment_id} is not a {kind} to run")
        if deployment.state is not S.APPROVED:
            raise IllegalTransition(f"#{deployment_id} is {deployment.state}, not approved")
        return deployment

    def _resolve(self, name: str) -> _Target:
        ops = self._ops()
        service = ops.services.get(name)
        if service is None:
            raise UnknownService(name, list(ops.services))
        if service.deploy is None:
            raise StepFailed(f"{name} has no deploy section in the ops file.")
        host = self._hosts().get(service.host)
        root = service.deploy.root
        return _Target(
            name,
            service.deploy,
            self._controller(),
            ReleaseLayout(host, root),
            RollbackPoints(host, root),
        )

    async def _advance(self, run: _Run, state: DeploymentState, note: str = "") -> None:
        run.deployment = await self._deployments.advance(run.id, state, run.actor, note)

    async def _hooks(
        self,
        run: _Run,
        target: _Target,
        phase: HookPhase,
        version: str,
        previous: str | None,
        *,
        stop: bool = True,
    ) -> list[HookResult]:
        """The phase's hooks in `version`'s release dir; `stop`: raise `HookFailed` at the
        first failure, else report it in its step and go on."""
        if not hooks_of(target.deploy.hooks, phase):
            return []
        context = HookContext(
            service=target.name,
            version=version,
            previous_version=previous,
            deployment_id=run.id,
            environment=run.deployment.environment,
            requester=run.deployment.requested_by,
            kind="rollback" if phase.endswith("rollback") else "deploy",
        )
        cwd = target.layout.path(version)
        return await run_hooks(
            target.layout.host,
            target.deploy.hooks,
            phase,
            context,
            cwd,
            run.progress,
            stop_on_failure=stop,
        )

    async def _post_rollback_failed(self, run: _Run, error: str) -> DeployOutcome:
        """A rollback by hand switched and verified, then a post_rollback hook failed.

        Switching back would land on the release someone just fled from, so this never
        switches again: the verified release keeps running and the rollback ends
        `rollback_failed` (failed -> rolling_back -> rollback_failed, the only way there), so a
        human looks at what the team's own hook says is not right."""
        await self._deployments.fail(run.id, run.actor, error)
        keep = f"kept {run.version}, not switching back to {run.previous or 'nothing'}"
        await self._advance(run, S.ROLLING_BACK, f"{keep}: a post_rollback hook failed")
        await self._advance(run, S.ROLLBACK_FAILED, f"{run.version} runs, verified; {error}")
        return DeployOutcome(False, S.ROLLBACK_FAILED, run.version, run.previous, error)

    async def _build(self, run: _Run, target: _Target) -> None:
        async with run.progress.step(f"build {run.version}") as step:
            if await target.layout.exists(run.version):
                reason = await target.layout.bad_reason(run.version)
                if reason is not None:
                    raise StepFailed(f"Release {run.version} is marked bad: {reason}")
                step.detail = "built already"
                return
            source, steps = source_of(target.deploy), build_steps_of(target.deploy)
            prepared = await target.layout.prepare(run.version, source, steps)
            step.detail = ", ".join(f"{r.name}: {r.duration_s:.1f} s" for r in prepared.steps)

    async def _switch(self, run: _Run, target: _Target) -> None:
        """Record the rollback point (nothing changed yet), then switch and restart."""
        deploy = target.deploy
        async with run.progress.step("rollback point") as step:
            run.previous = await target.layout.current()
            database = SqliteDatabase(deploy.sqlite_db) if deploy.sqlite_db else None
            point = await target.points.record(
                run.id,
                previous_version=run.previous,
                config_files=deploy.config_files,
                database=database,
            )
            step.detail = f"previous {run.previous or '-'}, {len(point.files)} config file(s)"
            step.detail += ", database" if point.database else ""
        if run.previous is not None:
            await self._deployments.set_previous_version(run.id, run.previous)
        await self._advance(run, S.SWITCHING, f"from {run.previous or 'nothing'}")
        run.switched = True  # the switch may fail half-way: from here on, go back
        async with run.progress.step(f"switch to {run.version}"):
            await target.layout.switch(run.version)
        await restart(target.controller, target.name, run.progress)

    async def _after_failure(self, run: _Run, exc: Exception) -> DeployOutcome:
        error = _describe(exc)
        if not isinstance(exc, EXPECTED):
            log.error("deployment #%s failed unexpectedly", run.id, exc_info=exc)
        deployment = await self._deployments.get(run.id)
        if deployment.finished:  # e.g. cancelled while it was building
            return DeployOutcome(False, deployment.state, run.version, run.previous, error)
        if not run.switched or run.target is None:
            failed = await self._deployments.fail(run.id, run.actor, error)
            return DeployOutcome(False, failed.state, run.version, run.previous, error)
        return await self._roll_back(run, run.target, error)

    async def _roll_back(self, run: _Run, target: _Target, error: str) -> DeployOutcome:
        try:
            await target.layout.mark_bad(run.version, error)
        except EXPECTED as exc:  # the way back matters more than the mark
            log.warning("could not mark %s bad: %s", run.version, exc)
        state = (await self._deployments.get(run.id)).state
        if state not in (S.FAILED, S.ROLLING_BACK):  # a resumed one may be there already
            await self._deployments.fail(run.id, run.actor, error)
        if state is not S.ROLLING_BACK:
            await self._advance(run, S.ROLLING_BACK, f"back to {run.previous or 'nothing'}")
        pre_failed: list[HookResult] = []
        try:
            if run.previous is None:
                raise StepFailed("There is no earlier release to go back to.")
            # A failing pre_rollback hook is reported, never a reason to stay: the release
            # that runs now failed, and getting the service back matters more than a
            # notification or a drain script. The same holds for a rollback by hand.
            pre = await self._hooks(
                run, target, "pre_rollback", run.previous, run.version, stop=False
            )
            pre_failed = [r for r in pre if not r.ok]
            async with run.progress.step(f"roll back to {run.previous}"):
                await target.layout.switch(run.previous)
            if target.deploy.config_files:
                async with run.progress.step("restore config files") as step:
                    report = await target.points.restore(await target.points.load(run.id))
                    step.detail = report.summary()
                    if not report.ok:
                        raise StepFailed(report.summary())
            await restart(target.controller, target.name, run.progress)
            await verify(target.controller, target.name, run.progress, self._start_timeout_s)
            # Failing: rollback_failed, though the previous release runs (verified). Saying
            # "rolled back" would claim more than the team's own check confirms; nothing
            # switches again either way.
            await self._hooks(run, target, "post_rollback", run.previous, run.version)
        except Exception as exc:
            why = _describe(exc)
            if not isinstance(exc, EXPECTED):
                log.error("rollback of #%s failed unexpectedly", run.id, exc_info=exc)
            await self._advance(run, S.ROLLBACK_FAILED, why)
            text = f"{error} Rolling back failed too: {why}"
            if isinstance(exc, HookFailed):  # only post_rollback raises here
                text = f"{error} Rolled back to {run.previous} (verified), but: {why}"
            return DeployOutcome(False, S.ROLLBACK_FAILED, run.version, run.previous, text)
        note = f"{run.previous} runs again"
        note += "".join(f" {r.describe()}" for r in pre_failed)
        await self._advance(run, S.ROLLED_BACK, note)
        return DeployOutcome(
            False, S.ROLLED_BACK, run.version, run.previous, error, rolled_back_to=run.previous
        )

    async def _prune(self, run: _Run, target: _Target) -> None:
        """After success: a failure here is reported in its step, never undoes the deploy."""
        async with run.progress.step("prune old releases") as step:
            protect = [v for v in (run.version, run.previous) if v is not None]
            try:
                gone = await target.layout.prune(target.deploy.keep, protect=protect)
                await target.points.prune(target.deploy.keep, protect=[run.id])
            except EXPECTED as exc:
                step.status, step.detail = StepStatus.FAILED, f"could not prune: {exc}"
                return
            step.detail = f"removed {', '.join(gone)}" if gone else "nothing to remove"


def _describe(exc: Exception) -> str:
    if isinstance(exc, BuildFailed) and exc.tail:
        return f"{exc} {exc.tail.strip().splitlines()[-1][:300]}"
    if isinstance(exc, (*EXPECTED, DeploymentError)):
        return str(exc)
    return f"internal error ({type(exc).__name__}: {exc}); see the log"
