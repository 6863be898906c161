"""The deploy pipeline's steps over one run: hooks, build, rollback point, migrate, verify,
watch, the way back and pruning. services/deploy/pipeline.py puts them in order."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import httpx

from config.inventory import DeployConfig
from services.control.controller import ServiceController, UnknownService
from services.control.units import ServiceControlError
from services.deploy.database_backups import SqliteDatabase
from services.deploy.deployments import (
    Deployment,
    DeploymentError,
    Deployments,
    DeploymentState,
)
from services.deploy.errors import NotTheReleasesFault, StepFailed
from services.deploy.hooks import (
    HookContext,
    HookFailed,
    HookPhase,
    HookResult,
    hooks_of,
    run_hooks,
)
from services.deploy.model import DeploymentKind
from services.deploy.rollback_points import RollbackPointError, RollbackPoints
from services.deploy.strategies import SwitchStrategy
from services.deploy.verify import verify
from services.deploy.watch import Watch
from services.hosts.facts import HostFactError
from services.hosts.primitives import HostCommandFailed
from services.hosts.registry import UnknownHostError
from services.progress import Progress, StepStatus
from services.releases.build import BuildFailed, ReleaseError, build_steps_of, source_of
from services.releases.layout import (
    ROLLBACK_MARK,
    ReleaseLayout,
    ReleaseNotFound,
    validate_version,
)

log = logging.getLogger(__name__)
S = DeploymentState

# What a step fails with when the host or the service misbehaves. Anything else is a bug: the
# deployment still ends truthfully (rolled back if it had switched) and the trace is logged.
EXPECTED: tuple[type[Exception], ...] = (
    StepFailed,
    ReleaseError,
    HostCommandFailed,
    HostFactError,
    RollbackPointError,
    ServiceControlError,
    UnknownService,
    UnknownHostError,
    ValueError,
)


class Aborted(NotTheReleasesFault):
    """Someone pressed Abort while the release was verified or watched."""


@dataclass(frozen=True)
class DeployOutcome:
    ok: bool
    state: DeploymentState
    version: str
    previous_version: str | None
    error: str | None
    rolled_back_to: str | None = None
    # A drill: from the switch back to healthy (time to recover), and forward again.
    recovered_s: float | None = None
    forward_s: float | None = None
    marked_bad: bool = False  # the failed release was marked bad (rollbacks avoid it)
    aborted: bool = False  # a person stopped it (the error says who)


@dataclass(frozen=True)
class Target:
    name: str
    deploy: DeployConfig
    controller: ServiceController
    layout: ReleaseLayout
    points: RollbackPoints
    strategy: SwitchStrategy
    host: str


@dataclass
class Run:
    deployment: Deployment
    progress: Progress
    actor: str
    target: Target | None = None
    previous: str | None = None
    switched: bool = False  # from here on a failure rolls back
    abort: asyncio.Event = field(default_factory=asyncio.Event)
    aborted_by: str | None = None
    cancel_note: str = "aborted"  # the note of the `cancelled` event, when stopped pre-switch
    alert: str | None = None  # a critical alert fired while watched: fail (and mark bad)
    halted_by: str | None = None  # /halt: a rollout stops before its next host
    halt: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)  # set when run() returns
    # A rollback to a release marked bad only by a failed rollback: its mark goes once it
    # runs healthy again.
    retry_of_failed_rollback: bool = False

    @property
    def id(self) -> int:
        return self.deployment.id

    @property
    def version(self) -> str:
        return self.deployment.version


class PipelineSteps:
    def __init__(
        self, deployments: Deployments, http: httpx.AsyncClient, start_timeout_s: float
    ) -> None:
        self._deployments = deployments
        self._http = http
        self._start_timeout_s = start_timeout_s

    async def advance(self, run: Run, state: DeploymentState, note: str = "") -> None:
        run.deployment = await self._deployments.advance(run.id, state, run.actor, note)

    async def rollback_target(self, run: Run, target: Target) -> str | None:
        """The target is complete and not marked bad; returns what runs now. One listing
        of the releases answers all three (every host command is time production waits)."""
        async with run.progress.step(f"release {run.version}") as step:
            version = validate_version(run.version)
            infos = await target.layout.releases()
            info = next((i for i in infos if i.version == version and i.complete), None)
            if info is None:
                raise ReleaseNotFound(f"There is no release {run.version} to roll back to.")
            if info.is_bad:
                reason = await target.layout.bad_reason(version) or "marked bad"
                if not reason.startswith(ROLLBACK_MARK):
                    raise StepFailed(f"Release {run.version} is marked bad: {reason}")
                run.retry_of_failed_rollback = True  # asked for by name: tried again
            if info.is_current:
                raise StepFailed(f"{run.version} is what runs already.")
            step.detail = "built, not marked bad"
            return next((i.version for i in infos if i.is_current), None)

    async def record_previous(self, run: Run, current: str | None) -> None:
        """A rollback's way back: the release it leaves. It changes no config file and no
        database, so nothing on the host needs copying first."""
        async with run.progress.step("rollback point") as step:
            run.previous = current
            step.detail = f"previous {current or '-'} (a rollback changes no config or data)"
        if current is not None:
            await self._deployments.set_previous_version(run.id, current)

    async def fail(self, run: Run, actor: str, error: str) -> None:
        run.deployment = await self._deployments.fail(run.id, actor, error)

    async def mark_bad(self, target: Target, version: str, reason: str) -> None:
        try:
            await target.layout.mark_bad(version, reason)
        except EXPECTED as exc:  # the way back matters more than the mark
            log.warning("could not mark %s bad: %s", version, exc)

    async def verify(
        self, target: Target, progress: Progress, *, rollback: bool = False
    ) -> int | None:
        """`rollback`: the target ran healthy before, so its own health policy applies."""
        backend = await target.strategy.backend()
        check = target.controller.health_check(target.name, target.host)
        health = target.controller.service(target.name).health
        return await verify(
            target.name, backend, check, health, progress, self._start_timeout_s, rollback=rollback
        )

    async def watch(self, target: Target, progress: Progress, restarts: int | None) -> None:
        watch = Watch(
            target.name,
            target.deploy,
            await target.strategy.backend(),
            target.controller.health_check(target.name, target.host),
            target.layout.host,
            self._http,
            restarts,
        )
        await watch.run(progress)

    async def hooks(
        self,
        run: Run,
        target: Target,
        phase: HookPhase,
        version: str,
        previous: str | None,
        *,
        stop: bool = True,
    ) -> list[HookResult]:
        """The phase's commands in `version`'s release dir; `stop`: raise `HookFailed` at the
        first failure, else report it in its step and go on."""
        if not hooks_of(target.deploy, phase):
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
            target.deploy,
            phase,
            context,
            cwd,
            run.progress,
            stop_on_failure=stop,
        )

    async def post_rollback_failed(self, run: Run, error: str) -> DeployOutcome:
        """A rollback by hand switched and verified, then a post_rollback hook failed.

        Switching back would land on the release someone just fled from, so this never
        switches again: the verified release keeps running and the rollback ends
        `rollback_failed` (failed -> rolling_back -> rollback_failed, the only way there), so a
        human looks at what the team's own hook says is not right."""
        await self._deployments.fail(run.id, run.actor, error)
        keep = f"kept {run.version}, not switching back to {run.previous or 'nothing'}"
        await self.advance(run, S.ROLLING_BACK, f"{keep}: a post_rollback hook failed")
        await self.advance(run, S.ROLLBACK_FAILED, f"{run.version} runs, verified; {error}")
        return DeployOutcome(False, S.ROLLBACK_FAILED, run.version, run.previous, error)

    async def build(self, run: Run, target: Target) -> str | None:
        """Prepare the release unless it is built already; returns what runs now. One listing
        of the releases answers both (every host command is a round trip, per host)."""
        async with run.progress.step(f"build {run.version}") as step:
            version = validate_version(run.version)
            infos = await target.layout.releases()
            current = next((i.version for i in infos if i.is_current), None)
            info = next((i for i in infos if i.version == version and i.complete), None)
            if info is not None:
                if info.is_bad:
                    reason = await target.layout.bad_reason(version) or "marked bad"
                    raise StepFailed(f"Release {run.version} is marked bad: {reason}")
                step.detail = "built already"
                return current
            source, steps = source_of(target.deploy), build_steps_of(target.deploy)
            prepared = await target.layout.prepare(run.version, source, steps)
            step.detail = ", ".join(f"{r.name}: {r.duration_s:.1f} s" for r in prepared.steps)
            return current

    async def record_point(self, run: Run, target: Target, current: str | None) -> None:
        """What the way back needs, before anything changes: the release that runs now
        (`current`, as the build step found it), the config files, the database."""
        deploy = target.deploy
        async with run.progress.step("rollback point") as step:
            run.previous = current
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

    async def migrate(self, run: Run, target: Target) -> None:
        try:
            await self.hooks(run, target, "migrate", run.version, run.previous)
        except HookFailed as exc:
            backup = " The rollback point holds a verified database backup." * bool(
                target.deploy.sqlite_db
            )
            raise StepFailed(
                f"{exc} Nothing was switched; the database may be partly migrated.{backup}"
            ) from exc

    async def roll_back(
        self,
        run: Run,
        target: Target,
        error: str,
        actor: str,
        *,
        bad: bool = True,
        aborted: bool = False,
        mark: str | None = None,
    ) -> DeployOutcome:
        if bad:
            await self.mark_bad(target, run.version, mark or error)
        state = (await self._deployments.get(run.id)).state
        if state not in (S.FAILED, S.ROLLING_BACK):  # a resumed one may be there already
            await self.fail(run, actor, error)
        if state is not S.ROLLING_BACK:
            await self.advance(run, S.ROLLING_BACK, f"back to {run.previous or 'nothing'}")
        pre_failed: list[HookResult] = []
        try:
            if run.previous is None:
                raise StepFailed("There is no earlier release to go back to.")
            # A failing pre_rollback hook is reported, never a reason to stay: the release
            # that runs now failed, and getting the service back matters more than a
            # notification or a drain script. The same holds for a rollback by hand.
            pre = await self.hooks(
                run, target, "pre_rollback", run.previous, run.version, stop=False
            )
            pre_failed = [r for r in pre if not r.ok]
            # A rollback changed no config file: there is nothing to restore after one.
            if target.deploy.config_files and run.deployment.kind is not DeploymentKind.ROLLBACK:
                async with run.progress.step("restore config files") as step:
                    report = await target.points.restore(await target.points.load(run.id))
                    step.detail = report.summary()
                    if not report.ok:
                        raise StepFailed(report.summary())
            await target.strategy.switch_back(run.previous, run.progress)
            await self.verify(target, run.progress, rollback=True)
            # Failing: rollback_failed, though the previous release runs (verified). Saying
            # "rolled back" would claim more than the team's own check confirms; nothing
            # switches again either way.
            await self.hooks(run, target, "post_rollback", run.previous, run.version)
        except Exception as exc:
            why = describe(exc)
            if not isinstance(exc, EXPECTED):
                log.error("rollback of #%s failed unexpectedly", run.id, exc_info=exc)
            await self.advance(run, S.ROLLBACK_FAILED, why)
            text = f"{error} Rolling back failed too: {why}"
            if isinstance(exc, HookFailed):  # only post_rollback raises here
                text = f"{error} Rolled back to {run.previous} (verified), but: {why}"
            return DeployOutcome(False, S.ROLLBACK_FAILED, run.version, run.previous, text)
        note = f"{run.previous} runs again"
        note += "".join(f" {r.describe()}" for r in pre_failed)
        await self.advance(run, S.ROLLED_BACK, note)
        return rolled_back(run, error, bad=bad, aborted=aborted)

    async def end_before_switch(self, run: Run, exc: Exception) -> DeployOutcome | None:
        """A failure that needs no way back ends here: the deployment had finished already
        (cancelled while building, say), was aborted before its switch (cancelled), or had
        not switched (failed). None once it has switched: then it must go back."""
        error = describe(exc)
        deployment = await self._deployments.get(run.id)
        if deployment.finished:
            return DeployOutcome(False, deployment.state, run.version, run.previous, error)
        actor = run.aborted_by if isinstance(exc, Aborted) and run.aborted_by else run.actor
        if isinstance(exc, Aborted) and not run.switched:
            cancelled = await self._deployments.cancel(run.id, actor, run.cancel_note)
            return DeployOutcome(False, cancelled.state, run.version, run.previous, error)
        if not run.switched or run.target is None:
            failed = await self._deployments.fail(run.id, actor, error)
            return DeployOutcome(False, failed.state, run.version, run.previous, error)
        return None

    async def prune(self, run: Run, target: Target) -> None:
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


def bad_mark(run: Run, error: str) -> str:
    """Why the release is marked bad; a failed rollback says so, so that the release may be
    asked for by name again (it ran well before)."""
    if run.deployment.kind is DeploymentKind.ROLLBACK:
        return f"{ROLLBACK_MARK} (#{run.id}): {error}"
    return error


def rolled_back(run: Run, error: str, *, bad: bool, aborted: bool) -> DeployOutcome:
    return DeployOutcome(
        False,
        S.ROLLED_BACK,
        run.version,
        run.previous,
        error,
        rolled_back_to=run.previous,
        marked_bad=bad,
        aborted=aborted,
    )


def describe(exc: Exception) -> str:
    if isinstance(exc, BuildFailed) and exc.tail:
        return f"{exc} {exc.tail.strip().splitlines()[-1][:300]}"
    if isinstance(exc, (*EXPECTED, DeploymentError)):
        return str(exc)
    return f"internal error ({type(exc).__name__}: {exc}); see the log"
