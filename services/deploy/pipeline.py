"""The deploy pipeline: an approved deployment through its states, on the service's host.

    deploy:   pre_checks (deploy window and freezes; current health; free disk, memory, Python
              version, the team's own checks) -> building (prepare the release unless it is
              built already; pre_deploy hooks; record a rollback point; migrate) -> switching
              (the strategy: restart in place, or blue-green) -> verifying (running, then
              healthy N in a row within T; smoke checks; post_deploy hooks) -> [watching] ->
              succeeded, then prune the old releases.
    rollback: pre_checks (the target exists and is not bad) -> rollback point -> switching
              -> verifying -> succeeded.

A failure before the switch ends as `failed`: nothing on the host changed (a migration that
failed is the exception the chat names). After it, the release is marked bad and the
deployment goes failed -> rolling_back (restore the rollback point's config files, switch
back, verify) -> rolled_back or rollback_failed. Every state is entered through
`Deployments`, so the events table tells the same story. While verifying or watching, an
abort (the card's Abort button) rolls back without marking the release bad.

Hooks (services/deploy/hooks.py; cwd: the release being deployed or rolled back to):
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

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

import httpx

from config.opsfile import OpsConfig
from services.alerts.model import IncomingAlert
from services.control.analysis import source_for
from services.control.controller import ServiceController, UnknownService
from services.deploy.canary import CanaryControl, CanaryStrategy
from services.deploy.canary_rows import CanaryRow, Phase
from services.deploy.deployments import (
    Deployment,
    DeploymentKind,
    Deployments,
    DeploymentState,
    IllegalTransition,
)
from services.deploy.drain import Drainer
from services.deploy.drills import resume_drill, run_drill
from services.deploy.errors import NotTheReleasesFault, StepFailed, is_the_releases_fault
from services.deploy.hooks import HookFailed
from services.deploy.long_watch import LongWatches
from services.deploy.model import BEFORE_SWITCH
from services.deploy.prechecks import check_current_health, check_window, run_prechecks
from services.deploy.restores import resume_restore, run_restore
from services.deploy.rollback_points import RollbackPoints
from services.deploy.rolling import Fleet, FleetRun
from services.deploy.steps import (
    EXPECTED,
    Aborted,
    DeployOutcome,
    PipelineSteps,
    Run,
    Target,
    bad_mark,
    describe,
)
from services.deploy.strategies import BlueGreenStrategy, RestartStrategy, SwitchStrategy
from services.deploy.watch import Watch
from services.hosts.registry import Hosts
from services.progress import Progress
from services.releases.layout import ReleaseLayout, validate_version

__all__ = ["Aborted", "DeployOutcome", "DeployPipeline"]

log = logging.getLogger(__name__)
S = DeploymentState
T = TypeVar("T")
STOP_TIMEOUT_S = 60.0  # how long /cancel waits for a running deploy's commands to be killed


class DeployPipeline:
    def __init__(
        self,
        ops: Callable[[], OpsConfig],
        hosts: Callable[[], Hosts],
        deployments: Deployments,
        controller: Callable[[], ServiceController],
        http: httpx.AsyncClient,
        *,
        start_timeout_s: float = 60.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._ops = ops
        self._hosts = hosts
        self._deployments = deployments
        self._controller = controller
        self._http = http
        self._start_timeout_s = start_timeout_s
        self._clock = clock
        self._running: dict[int, Run] = {}
        self._steps = PipelineSteps(deployments, http, start_timeout_s)
        self.long_watches: LongWatches | None = None  # set by the composition root

    async def run(
        self, deployment_id: int, progress: Progress, actor: str = "opsgate"
    ) -> DeployOutcome:
        """Take an approved deploy from pre-checks to succeeded, or to its truthful end."""
        run = Run(await self._approved(deployment_id, DeploymentKind.DEPLOY), progress, actor)
        self._running[run.id] = run
        if (fleet := self._fleet_run(run)) is not None:
            try:
                return await fleet.deploy()
            finally:
                self._running.pop(run.id, None)
                run.stopped.set()
        try:
            target = run.target = self._resolve(run.deployment.service, self._host_of(run))
            self._bind_canary(run, target)
            deploy = target.deploy
            await self._steps.advance(run, S.PRE_CHECKS)
            # Nothing changes on the host until the switch: an abort or /cancel up to there
            # stops the work at once (its commands are killed) and ends it cancelled; a
            # failure ends it `failed`.
            await self._unless_aborted(run, self._prepare(run, target))
            await self._steps.advance(run, S.SWITCHING, f"from {run.previous or 'nothing'}")
            run.switched = True  # the switch may fail half-way: from here on, go back
            # run.previous: what `current` pointed at when the rollback point was taken
            await target.strategy.switch(run.version, progress, run.previous)
            await self._steps.advance(run, S.VERIFYING)
            restarts = await self._unless_aborted(run, self._steps.verify(target, progress))
            # Failing smoke checks or post_deploy hooks: a failed verification, rolled back.
            smoke = self._steps.hooks(run, target, "smoke", run.version, None)
            await self._unless_aborted(run, smoke)
            await self._unless_aborted(
                run, self._steps.hooks(run, target, "post_deploy", run.version, run.previous)
            )
            if deploy.watch_s > 0 and self.long_watches and LongWatches.is_long(deploy):
                await self._watch_later(run, target, restarts)
            elif deploy.watch_s > 0:
                await self._steps.advance(run, S.WATCHING)
                await self._unless_aborted(run, self._steps.watch(target, progress, restarts))
            await self._steps.advance(run, S.SUCCEEDED)
        except Exception as exc:
            return await self._after_failure(run, exc)
        finally:
            self._running.pop(run.id, None)
            run.stopped.set()
        await self._steps.prune(run, target)
        return DeployOutcome(True, S.SUCCEEDED, run.version, run.previous, None)

    async def _watch_later(self, run: Run, target: Target, restarts: int | None) -> None:
        """A long watch goes on in the background (services/deploy/long_watch.py)."""
        assert self.long_watches is not None
        watch_s = target.deploy.watch_s
        async with run.progress.step(f"watch {watch_s:g} s in the background") as step:
            ends = await self.long_watches.begin(
                run.deployment, target.host, watch_s, restarts, run.previous
            )
            step.detail = f"until {ends:%Y-%m-%d %H:%M:%S} UTC; the end is told here"

    async def watcher(self, name: str, host: str, restarts: int | None) -> Watch | None:
        """The watch window's checks for `name` on `host` (a long watch reads them)."""
        try:
            target = self._resolve(name, host)
        except (UnknownService, StepFailed):
            return None
        check = target.controller.health_check(name, target.host)
        backend = await target.strategy.backend()
        return Watch(name, target.deploy, backend, check, target.layout.host, self._http, restarts)

    async def _prepare(self, run: Run, target: Target) -> None:
        """pre_checks and building: up to the moment before the switch."""
        deploy, progress = target.deploy, run.progress
        validate_version(run.version)
        await self._check_window(run)
        required = deploy.prechecks.require_healthy
        await check_current_health(
            target.controller, target.name, progress, required=required, host=target.host
        )
        await run_prechecks(target.layout.host, deploy.root, deploy.prechecks, progress)
        if isinstance(target.strategy, CanaryStrategy):
            await target.strategy.check_source(progress)
        await self._steps.advance(run, S.BUILDING)
        current = await self._steps.build(run, target)
        await self._steps.hooks(run, target, "pre_deploy", run.version, current)
        await self._steps.record_point(run, target, current)
        await self._steps.migrate(run, target)

    async def _check_window(self, run: Run) -> None:
        environment = self._ops().environments.get(run.deployment.environment)
        await check_window(run.deployment, environment, self._clock(), run.progress)

    def _hosts_of(self, deployment: Deployment) -> list[str]:
        service = self._ops().services.get(deployment.service)
        return service.hosts_in(deployment.environment) if service is not None else []

    def _host_of(self, run: Run) -> str | None:
        hosts = self._hosts_of(run.deployment)
        return hosts[0] if hosts else None

    def _fleet_run(self, run: Run) -> FleetRun | None:
        """A deployment to an environment of several hosts goes host by host."""
        hosts = self._hosts_of(run.deployment)
        if len(hosts) < 2:
            return None
        service = self._ops().services[run.deployment.service]
        rollout = service.rollout_in(run.deployment.environment)
        controller = self._controller()
        drain = None
        if rollout.drain is not None:
            addresses = {h: controller.address_of(h) for h in hosts}
            drain = Drainer(run.deployment.service, rollout.drain, self._hosts(), addresses)
        targets = {h: self._resolve(run.deployment.service, h) for h in hosts}
        run.target = targets[hosts[0]]
        fleet = Fleet(targets, rollout, drain)
        self._running[run.id] = run
        return FleetRun(
            run,
            fleet,
            self._steps,
            self._deployments,
            self._deployments.hosts,
            self._unless_aborted,
            self._check_window,
        )

    async def rollback(
        self, deployment_id: int, progress: Progress, actor: str = "opsgate"
    ) -> DeployOutcome:
        """Switch back to the release the caller chose (never one marked bad) and verify."""
        run = Run(await self._approved(deployment_id, DeploymentKind.ROLLBACK), progress, actor)
        if (fleet := self._fleet_run(run)) is not None:
            try:
                return await fleet.rollback()
            finally:
                self._running.pop(run.id, None)
                run.stopped.set()
        post_hook_failed: HookFailed | None = None
        try:
            target = run.target = self._resolve(run.deployment.service, self._host_of(run))
            await self._steps.advance(run, S.PRE_CHECKS)
            current = await self._steps.rollback_target(run, target)
            await self._steps.hooks(run, target, "pre_rollback", run.version, current, stop=False)
            await self._steps.record_previous(run, current)
            await self._steps.advance(run, S.SWITCHING, f"from {run.previous or 'nothing'}")
            run.switched = True
            # run.previous: what `current` pointed at when the rollback point was taken
            await target.strategy.switch(run.version, progress, run.previous)
            await self._steps.advance(run, S.VERIFYING)
            await self._steps.verify(target, progress, rollback=True)
            if run.retry_of_failed_rollback:
                await target.layout.clear_bad(run.version)  # it runs healthy: the mark was wrong
            try:
                await self._steps.hooks(run, target, "post_rollback", run.version, run.previous)
            except HookFailed as exc:  # handled below, outside: never a switch back
                post_hook_failed = exc
            else:
                await self._steps.advance(run, S.SUCCEEDED)
        except Exception as exc:
            return await self._after_failure(run, exc)
        if post_hook_failed is not None:
            return await self._steps.post_rollback_failed(run, str(post_hook_failed))
        return DeployOutcome(True, S.SUCCEEDED, run.version, run.previous, None)

    async def resume(
        self, deployment_id: int, progress: Progress, actor: str = "opsgate"
    ) -> DeployOutcome:
        """After opsgate restarted: a deployment that had switched is verified again and ends
        succeeded, or is rolled back (also one that was failing or rolling back). Hooks and
        the watch window do not run again: what they would have seen is gone."""
        deployment = await self._deployments.get(deployment_id)
        if deployment.finished or deployment.state in BEFORE_SWITCH:
            raise IllegalTransition(f"#{deployment_id} is {deployment.state}: nothing to resume")
        run = Run(deployment, progress, actor, previous=deployment.previous_version)
        run.switched = True
        if (fleet := self._fleet_run(run)) is not None:
            try:
                return await fleet.resume()
            finally:
                self._running.pop(run.id, None)
                run.stopped.set()
        self._running[run.id] = run
        try:
            target = run.target = self._resolve(deployment.service, self._host_of(run))
            self._bind_canary(run, target)
            if deployment.kind is DeploymentKind.DRILL:
                return await resume_drill(self._steps, run, target)
            if deployment.kind is DeploymentKind.RESTORE:
                return await resume_restore(self._steps, run, target)
            if deployment.state in (S.FAILED, S.ROLLING_BACK):
                # Marked bad already, if it was to blame: see FleetRun.resume.
                raise NotTheReleasesFault(
                    deployment.error or f"it was {deployment.state} when opsgate stopped"
                )
            async with progress.step("release in place") as step:
                current = await target.layout.current()
                step.detail = f"current is {current or 'nothing'}"
                # Killed while switching, before `current` moved: the release (complete, its
                # rollback point recorded) never ran, so finish the switch. Rolling back here
                # would mark a release bad that never failed, and nothing clears that mark.
                unfinished = deployment.state is S.SWITCHING and current in (
                    deployment.version,
                    deployment.previous_version,
                )
                if current != deployment.version and not unfinished:
                    raise StepFailed(f"current is {current or 'nothing'}, not {deployment.version}")
            if unfinished:
                await target.strategy.complete_switch(deployment.version, current, progress)
                await self._steps.advance(run, S.VERIFYING, "resumed after a restart of opsgate")
            await self._steps.verify(target, progress)
            await self._steps.advance(run, S.SUCCEEDED, "verified after a restart of opsgate")
        except Exception as exc:
            return await self._after_failure(run, exc)
        finally:
            self._running.pop(run.id, None)
            run.stopped.set()
        return DeployOutcome(True, S.SUCCEEDED, run.version, run.previous, None)

    def _bind_canary(self, run: Run, target: Target) -> None:
        """A deploy's canary walks its steps, watching the run's Abort and the card's buttons."""
        if (
            isinstance(target.strategy, CanaryStrategy)
            and run.deployment.kind is DeploymentKind.DEPLOY
        ):
            control = CanaryControl(
                abort=run.abort, why_aborted=lambda: self._why_aborted(run), alert=lambda: run.alert
            )
            target.strategy.bind(run.id, control)

    async def canary_control(self, deployment_id: int, action: str, actor: str) -> CanaryRow:
        """The card's Promote, Pause and Resume (Abort is `abort`). Raises IllegalTransition
        when no canary of this process is walking its steps."""
        run = self._running.get(deployment_id)
        strategy = run.target.strategy if run is not None and run.target is not None else None
        row = await self._deployments.canary.get(deployment_id)
        if (
            run is None
            or not isinstance(strategy, CanaryStrategy)
            or row is None
            or row.phase not in (Phase.SHADOW, Phase.STEPS)
        ):
            raise IllegalTransition(f"#{deployment_id} has no canary running")
        control = strategy.control
        if action == "promote":
            control.promote = True
        elif action in ("pause", "resume"):
            paused = action == "pause"
            if control.paused == paused:
                raise IllegalTransition(
                    f"#{deployment_id} is {'already' if paused else 'not'} paused"
                )
            control.paused = paused
            await self._deployments.canary.set_paused(
                deployment_id, paused, actor, run.deployment.service
            )
        else:
            raise IllegalTransition(f"unknown canary action {action!r}")
        control.changed.set()
        updated = await self._deployments.canary.get(deployment_id)
        assert updated is not None
        return updated

    async def drill(
        self, deployment_id: int, progress: Progress, actor: str = "opsgate"
    ) -> DeployOutcome:
        """A rollback drill (services/deploy/drills.py): back, verify, forward, verify."""
        run = Run(await self._approved(deployment_id, DeploymentKind.DRILL), progress, actor)
        try:
            if len(self._hosts_of(run.deployment)) > 1:
                raise StepFailed("Drills run where the service has one host.")
            target = run.target = self._resolve(run.deployment.service, self._host_of(run))
        except Exception as exc:
            return await self._after_failure(run, exc)
        return await run_drill(self._steps, run, target)

    async def restore(
        self, deployment_id: int, progress: Progress, actor: str = "opsgate"
    ) -> DeployOutcome:
        """A database restore from a rollback point (services/deploy/restores.py)."""
        run = Run(await self._approved(deployment_id, DeploymentKind.RESTORE), progress, actor)
        try:
            if len(self._hosts_of(run.deployment)) > 1:
                raise StepFailed("Restores run where the service has one host.")
            target = run.target = self._resolve(run.deployment.service, self._host_of(run))
        except Exception as exc:
            return await self._after_failure(run, exc)
        return await run_restore(self._steps, run, target)

    def rollback_points(self, name: str, environment: str) -> RollbackPoints:
        """The rollback points of `name` on its host in `environment` (its first host)."""
        service = self._ops().services.get(name)
        hosts = service.hosts_in(environment) if service is not None else []
        return self._resolve(name, hosts[0] if hosts else None).points

    async def cancel(self, deployment_id: int, actor: str, note: str) -> Deployment:
        """End a deployment that has not switched: one this process is running stops first
        (its commands are killed; its lock is released only once nothing runs any more).
        Raises IllegalTransition once it has switched."""
        run = self._running.get(deployment_id)
        if run is None or run.switched:
            return await self._deployments.cancel(deployment_id, actor, note)
        if run.aborted_by is None:
            run.aborted_by, run.cancel_note = actor, note
            run.abort.set()
        await asyncio.wait_for(run.stopped.wait(), timeout=STOP_TIMEOUT_S)
        return await self._deployments.get(deployment_id)

    async def abort(self, deployment_id: int, actor: str) -> Deployment:
        """Stop a deployment: cancelled before its switch; rolled back (not marked bad) while
        it is verified or watched. Raises IllegalTransition when there is nothing to stop."""
        deployment = await self._deployments.get(deployment_id)
        if deployment.state in BEFORE_SWITCH:
            return await self.cancel(deployment_id, actor, "aborted")
        run = self._running.get(deployment_id)
        if run is None or deployment.finished or deployment.state is S.FAILED:
            raise IllegalTransition(f"#{deployment_id} is {deployment.state}: nothing to abort")
        if run.aborted_by is None:
            run.aborted_by = actor
            run.abort.set()  # the `failed` event that follows names the aborter as its actor
            self._wake_canary(run)
        return deployment

    def _wake_canary(self, run: Run) -> None:
        """A canary between two analyses hears an abort at once, not at its next interval."""
        strategy = run.target.strategy if run.target is not None else None
        if isinstance(strategy, CanaryStrategy):
            strategy.control.changed.set()

    def halt_rollouts(self, actor: str) -> list[int]:
        """/halt: every rollout over several hosts stops before its next host (a host being
        switched finishes first), then its switched hosts go back; a canary's traffic goes
        back to stable. Returns their ids."""
        halted = []
        for run in self._running.values():
            canary = run.target is not None and isinstance(run.target.strategy, CanaryStrategy)
            several = len(self._hosts_of(run.deployment)) > 1
            if (several or canary) and run.switched and run.halted_by is None:
                run.halted_by = self._ops().name_of_actor(actor) or actor
                run.aborted_by = actor
                run.halt.set()
                if canary and run.deployment.state is S.SWITCHING:
                    run.abort.set()
                    self._wake_canary(run)
                halted.append(run.id)
        return halted

    async def critical_alerts(self, alerts: Sequence[IncomingAlert]) -> None:
        """A critical alert for a service being watched after its deploy is a failed watch:
        the release is marked bad and rolled back, like any other trigger."""
        for alert in alerts:
            service = alert.labels.get("service")
            for run in list(self._running.values()):
                target = run.target
                if target is None or target.name != service or run.abort.is_set():
                    continue
                canary = isinstance(target.strategy, CanaryStrategy)
                state = run.deployment.state
                if state is S.WATCHING or (canary and state is S.SWITCHING):
                    summary = alert.annotations.get("summary", "")
                    run.alert = f"{alert.labels.get('alertname', 'alert')} {summary}".strip()
                    run.abort.set()
                    self._wake_canary(run)

    async def _unless_aborted(self, run: Run, work: Awaitable[T]) -> T:
        """`work`, unless an abort comes first: then it is cancelled and `Aborted` raised."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(run.abort.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if run.abort.is_set():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if run.alert is not None:
                raise StepFailed(f"A critical alert fired while watched: {run.alert}")
            raise Aborted(self._why_aborted(run))
        return task.result()

    def _why_aborted(self, run: Run) -> str:
        if run.halted_by is not None:
            return f"Halted by {run.halted_by} while {run.deployment.state}."
        who = run.aborted_by or "someone"
        name = self._ops().name_of(int(who)) if who.isdigit() else None
        return f"Aborted by {name or who} while {run.deployment.state}."

    async def _approved(self, deployment_id: int, kind: DeploymentKind) -> Deployment:
        deployment = await self._deployments.get(deployment_id)
        if deployment.kind is not kind or deployment.dry_run:
            raise IllegalTransition(f"#{deployment_id} is not a {kind} to run")
        if deployment.state is not S.APPROVED:
            raise IllegalTransition(f"#{deployment_id} is {deployment.state}, not approved")
        return deployment

    def _resolve(self, name: str, host: str | None = None) -> Target:
        ops = self._ops()
        service = ops.services.get(name)
        if service is None:
            raise UnknownService(name, list(ops.services))
        if service.deploy is None:
            raise StepFailed(f"{name} has no deploy section in the ops file.")
        controller = self._controller()
        host = controller.host_of(name, host)
        runner = self._hosts().get(host)
        root = service.deploy.root
        layout = ReleaseLayout(runner, root)
        colors = controller.blue_green(name, host)
        strategy: SwitchStrategy
        if colors is None:
            strategy = RestartStrategy(name, controller, layout, host)
        elif service.deploy.canary is not None:
            source = source_for(service.deploy.canary.analysis, self._http)
            strategy = CanaryStrategy(
                colors, source, self._deployments.canary, start_timeout_s=self._start_timeout_s
            )
        else:
            strategy = BlueGreenStrategy(colors, start_timeout_s=self._start_timeout_s)
        return Target(
            name, service.deploy, controller, layout, RollbackPoints(runner, root), strategy, host
        )

    async def _after_failure(self, run: Run, exc: Exception) -> DeployOutcome:
        if not isinstance(exc, EXPECTED):
            log.error("deployment #%s failed unexpectedly", run.id, exc_info=exc)
        ended = await self._steps.end_before_switch(run, exc)
        if ended is not None or run.target is None:
            assert ended is not None  # no target: it never switched
            return ended
        error = describe(exc)
        aborted = isinstance(exc, Aborted)
        actor = run.aborted_by if aborted and run.aborted_by else run.actor
        return await self._steps.roll_back(
            run,
            run.target,
            error,
            actor,
            bad=is_the_releases_fault(exc),
            aborted=aborted,
            mark=bad_mark(run, error),
        )
