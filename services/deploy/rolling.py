"""A deployment over several hosts: the rolling strategy, the fleet rollback and their resume.

    deploy:   pre_checks (window once; each host's health and checks, in parallel) ->
              building (each host builds, runs pre_deploy and records its rollback point;
              the migration runs once, on the first host) -> switching (batch by batch: each
              host of a batch drained, switched, restarted, verified healthy, smoke-checked and
              put back, in parallel; a pause between batches) -> verifying (post_deploy hooks
              on each host) -> [watching every host] -> succeeded.
    rollback: every host back to the release asked for, at most `parallel` at once.

More failed hosts than `max_failed_hosts` stop the rollout: the hosts already switched go
back, in parallel, each verified. Abort and /halt stop it between hosts (a host being
switched finishes first); the switched hosts go back without marking the release bad.
Each host's state is a row (services/deploy/host_rows.py) written before the host changes,
so a restart of opsgate finds every host where it was: `resume` finishes a rollout that had
switched (re-verifying the hosts done, completing the one caught half-way), and a rollout
that was failing goes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from config.inventory import Rollout
from services.deploy.database_backups import SqliteDatabase
from services.deploy.deployments import Deployments
from services.deploy.drain import Drainer
from services.deploy.errors import NotTheReleasesFault, StepFailed, is_the_releases_fault
from services.deploy.host_rows import SWITCHED, HostRow, HostRows, grid
from services.deploy.host_rows import HostState as H
from services.deploy.model import DeploymentKind, DeploymentState
from services.deploy.prechecks import check_current_health, run_prechecks
from services.deploy.steps import (
    EXPECTED,
    Aborted,
    DeployOutcome,
    PipelineSteps,
    Run,
    Target,
    bad_mark,
    describe,
    rolled_back,
)
from services.progress import Progress, Step, StepStatus
from services.releases.layout import validate_version

log = logging.getLogger(__name__)
S = DeploymentState
T = TypeVar("T")

UnlessAborted = Callable[[Run, Awaitable[Any]], Coroutine[Any, Any, Any]]


class HostFailed(StepFailed):
    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host}: {reason}")
        self.host, self.reason = host, reason


@dataclass
class Fleet:
    """One run's hosts in rollout order, with how to roll them."""

    targets: dict[str, Target]
    rollout: Rollout
    drain: Drainer | None

    @property
    def hosts(self) -> list[str]:
        return list(self.targets)

    @property
    def first(self) -> Target:
        return next(iter(self.targets.values()))


class FleetRun:
    def __init__(
        self,
        run: Run,
        fleet: Fleet,
        steps: PipelineSteps,
        deployments: Deployments,
        rows: HostRows,
        unless_aborted: UnlessAborted,
        check_window: Callable[[Run], Awaitable[None]],
    ) -> None:
        self.run, self.fleet, self._steps = run, fleet, steps
        self._deployments, self._rows = deployments, rows
        self._unless_aborted, self._check_window = unless_aborted, check_window
        self._restarts: dict[str, int | None] = {}
        self._grid: Step | None = None
        self._previous: dict[str, str | None] = {}  # host -> what it ran before

    # -- deploy ---------------------------------------------------------------------------

    async def deploy(self) -> DeployOutcome:
        run, fleet = self.run, self.fleet
        try:
            await self._steps.advance(run, S.PRE_CHECKS)
            await self._unless_aborted(run, self._prepare())
            batches = fleet.rollout.batches(fleet.hosts)
            await self._plan(batches)
            sizes = "+".join(str(len(b)) for b in batches)
            await self._steps.advance(run, S.SWITCHING, f"{len(fleet.hosts)} hosts ({sizes})")
            run.switched = True
            await self._roll(resumed=False)
            await self._finish()
        except Exception as exc:
            return await self.after_failure(exc)
        await self._prune()
        return DeployOutcome(True, S.SUCCEEDED, run.version, run.previous, None)

    async def _prepare(self) -> None:
        run, fleet = self.run, self.fleet
        validate_version(run.version)
        await self._check_window(run)

        async def checks(target: Target, progress: Progress) -> str:
            deploy = target.deploy
            required = deploy.prechecks.require_healthy
            # Independent reads, side by side: each host's progress is quiet, so the order of
            # its steps shows nowhere, and each host command is a round trip.
            health = asyncio.ensure_future(
                check_current_health(
                    target.controller, target.name, progress, required=required, host=target.host
                )
            )
            try:
                await run_prechecks(target.layout.host, deploy.root, deploy.prechecks, progress)
            except BaseException:
                health.cancel()
                await asyncio.gather(health, return_exceptions=True)
                raise
            await health
            return "ok"

        await self._each("pre-checks", checks, detail=lambda said: "passed")
        await self._steps.advance(run, S.BUILDING)

        async def build(target: Target, progress: Progress) -> str | None:
            host_run = Run(run.deployment, progress, run.actor)  # its steps stay quiet
            current = await self._steps.build(host_run, target)
            await self._steps.hooks(host_run, target, "pre_deploy", run.version, current)
            deploy = target.deploy
            database = SqliteDatabase(deploy.sqlite_db) if deploy.sqlite_db else None
            await target.points.record(
                run.id,
                previous_version=current,
                config_files=deploy.config_files,
                database=database,
            )
            return current

        self._previous = await self._each(
            f"build {run.version}, rollback point",
            build,
            detail=lambda said: f"previous: {versions(said)}",
        )
        run.previous = self._previous[fleet.first.host]
        if run.previous is not None:
            await self._deployments.set_previous_version(run.id, run.previous)
        await self._steps.migrate(run, fleet.first)  # once: the database is shared

    async def _roll(self, *, resumed: bool) -> None:
        """Batch by batch; hosts already healthy (a resumed rollout) are verified again."""
        run, rollout = self.run, self.fleet.rollout
        rows = await self._rows.rows(run.id)
        batches = sorted({r.batch for r in rows})
        # Resumed: every host that failed counts against the allowance, also one back already.
        failed = [r for r in rows if r.state in (H.FAILED, H.ROLLING_BACK, H.ROLLED_BACK)]
        async with run.progress.step("hosts") as grid_step:
            self._grid = grid_step
            await self._show_grid()
            if resumed:
                if len(failed) > rollout.max_failed_hosts:
                    raise StepFailed(
                        f"{len(failed)} host(s) had failed when opsgate stopped"
                        f" ({rollout.max_failed_hosts} allowed)."
                    )
                # Failed within the allowance but killed before (or while) going back: such a
                # host still runs the new release, unhealthy.
                stranded = [r for r in rows if r.state in (H.FAILED, H.ROLLING_BACK)]
                back = await asyncio.gather(*(self._host_back(r) for r in stranded))
                if any(back):
                    raise StepFailed("; ".join(p for p in back if p))
                done = [r.host for r in rows if r.state is H.HEALTHY]
                if done:
                    await self._unless_aborted(run, self._reverify(done))
            for batch in batches:
                todo = [r for r in await self._rows.rows(run.id) if r.batch == batch]
                todo = [r for r in todo if r.state in (H.PENDING, H.SWITCHING)]
                if not todo:
                    continue
                self._stop_if_halted()
                if batch > 0 and rollout.pause_s > 0 and any(r.state is H.PENDING for r in todo):
                    async with run.progress.step(f"pause {rollout.pause_s:g} s") as pause:
                        pause.detail = "before the next batch"
                        with contextlib.suppress(TimeoutError):  # /halt ends it early
                            await self._unless_aborted(
                                run, asyncio.wait_for(run.halt.wait(), rollout.pause_s)
                            )
                    self._stop_if_halted()
                title = f"batch {batch + 1}/{len(batches)}: {' '.join(r.host for r in todo)}"
                async with run.progress.step(title) as step:
                    results = await self._unless_aborted(
                        run,
                        asyncio.gather(
                            *(self._switch_host(r) for r in todo), return_exceptions=True
                        ),
                    )
                    errors = [e for e in results if isinstance(e, BaseException)]
                    now_failed = [r for r, e in zip(todo, results, strict=True) if e is not None]
                    failed += now_failed
                    step.detail = "healthy"
                    if now_failed:
                        step.detail = f"failed: {' '.join(r.host for r in now_failed)}"
                    if now_failed and len(failed) <= rollout.max_failed_hosts:
                        # Within what the team allows: those hosts go back, the rest goes on.
                        back = await asyncio.gather(*(self._host_back(r) for r in now_failed))
                        step.detail += ", back on their release: " + " ".join(
                            r.host
                            for r, problem in zip(now_failed, back, strict=True)
                            if problem is None
                        )
                        if any(back):
                            raise StepFailed("; ".join(p for p in back if p))
                        await self._show_grid()
                    if len(failed) > rollout.max_failed_hosts:
                        first = errors[0] if errors else None
                        step.status = StepStatus.FAILED
                        why = str(first) if isinstance(first, Exception) else "failed"
                        raise StepFailed(
                            f"{why} Stopped the rollout at batch {batch + 1} of {len(batches)}"
                            f" ({len(failed)} host(s) failed, {rollout.max_failed_hosts}"
                            " allowed)."
                        ) from first
                self._stop_if_halted()
            grid_step.detail = grid(await self._rows.rows(run.id))

    async def _plan(self, batches: list[list[str]]) -> None:
        """The hosts' rows with what each runs now, before anything switches."""
        await self._rows.plan(self.run.id, batches)
        for host, version in self._previous.items():
            await self._rows.set_previous(self.run.id, host, version)

    async def _switch_host(self, row: HostRow) -> None:
        run, target = self.run, self.fleet.targets[row.host]
        resuming = row.state is H.SWITCHING
        if run.halted_by is not None and not resuming:
            return  # /halt came while this batch started: this host stays as it is
        # The way back, before the switch: read from the host with the plan (or here), it is
        # what `current` points at, under this deploy's lock.
        previous = row.previous_version
        if previous is None and not resuming:
            previous = await target.layout.current()
            await self._rows.set_previous(run.id, row.host, previous)
        await self._rows.move(run.id, run.deployment.service, row.host, H.SWITCHING)
        await self._show_grid()
        quiet = Progress()
        try:
            if self.fleet.drain is not None:
                await self.fleet.drain.take_out(row.host)
            if resuming:
                current = await target.layout.current()
                await target.strategy.complete_switch(run.version, current, quiet)
            else:
                await target.strategy.switch(run.version, quiet, previous)
            restarts = await self._steps.verify(
                target, quiet, rollback=run.deployment.kind is DeploymentKind.ROLLBACK
            )
            self._restarts[row.host] = restarts
            if run.deployment.kind is DeploymentKind.DEPLOY:
                quiet_run = Run(run.deployment, quiet, run.actor)
                await self._steps.hooks(quiet_run, target, "smoke", run.version, None)
            if self.fleet.drain is not None:
                await self.fleet.drain.put_back(row.host)
        except Exception as exc:
            why = describe(exc)
            if not isinstance(exc, EXPECTED):
                log.error("host %s of #%s failed unexpectedly", row.host, run.id, exc_info=exc)
            await self._rows.move(run.id, run.deployment.service, row.host, H.FAILED, why)
            await self._show_grid()
            raise HostFailed(row.host, why) from exc
        await self._rows.move(run.id, run.deployment.service, row.host, H.HEALTHY)
        await self._show_grid()

    async def _reverify(self, hosts: Sequence[str]) -> None:
        async def again(target: Target, progress: Progress) -> str:
            self._restarts[target.host] = await self._steps.verify(target, progress)
            return "healthy"

        await self._each("verify again after a restart of opsgate", again, only=hosts)

    async def _finish(self) -> None:
        run = self.run
        await self._steps.advance(run, S.VERIFYING, "every host healthy")
        if run.deployment.kind is DeploymentKind.DEPLOY:

            async def post_deploy(target: Target, progress: Progress) -> str:
                quiet_run = Run(run.deployment, progress, run.actor)
                hooks = self._steps.hooks
                await hooks(quiet_run, target, "post_deploy", run.version, run.previous)
                return "ok"

            if self.fleet.first.deploy.hooks.post_deploy:
                await self._unless_aborted(run, self._each("post_deploy hooks", post_deploy))
            if self.fleet.first.deploy.watch_s > 0:
                await self._steps.advance(run, S.WATCHING)

                async def watch(target: Target, progress: Progress) -> str:
                    await self._steps.watch(target, progress, self._restarts.get(target.host))
                    return "steady"

                await self._unless_aborted(run, self._each("watch", watch))
        await self._steps.advance(run, S.SUCCEEDED)

    async def _prune(self) -> None:
        run = self.run

        async def prune(target: Target, progress: Progress) -> str:
            protect = [v for v in (run.version, self._previous.get(target.host)) if v]
            gone = await target.layout.prune(target.deploy.keep, protect=protect)
            await target.points.prune(target.deploy.keep, protect=[run.id])
            return f"removed {', '.join(gone)}" if gone else "nothing to remove"

        try:
            await self._each("prune old releases", prune)
        except EXPECTED as exc:  # reported in its step; never undoes the deploy
            log.warning("pruning after #%s: %s", run.id, exc)

    # -- fleet rollback ---------------------------------------------------------------------

    async def rollback(self) -> DeployOutcome:
        """Every host to `run.version` (a release it has, not marked bad), in parallel."""
        run, fleet = self.run, self.fleet
        try:
            await self._steps.advance(run, S.PRE_CHECKS)

            async def check(target: Target, progress: Progress) -> str | None:
                quiet_run = Run(run.deployment, progress, run.actor)
                current = await self._steps.rollback_target(quiet_run, target)
                if quiet_run.retry_of_failed_rollback:
                    run.retry_of_failed_rollback = True
                return current

            self._previous = await self._each(
                f"release {run.version} on every host", check, detail=versions
            )
            run.previous = self._previous[fleet.first.host]
            if run.previous is not None:
                await self._deployments.set_previous_version(run.id, run.previous)
            await self._plan([fleet.hosts])
            await self._steps.advance(
                run, S.SWITCHING, f"{len(fleet.hosts)} hosts, {self._at_once()} at once"
            )
            run.switched = True
            await self._roll_all_at_once()
            if run.retry_of_failed_rollback:
                await asyncio.gather(
                    *(t.layout.clear_bad(run.version) for t in fleet.targets.values())
                )
            await self._finish()
        except Exception as exc:
            return await self.after_failure(exc)
        return DeployOutcome(True, S.SUCCEEDED, run.version, run.previous, None)

    async def _roll_all_at_once(self) -> None:
        run = self.run
        rows = await self._rows.rows(run.id)
        limit = asyncio.Semaphore(self._at_once())

        async def one(row: HostRow) -> None:
            async with limit:
                await self._switch_host(row)

        todo = [r for r in rows if r.state in (H.PENDING, H.SWITCHING)]
        async with run.progress.step(f"switch {len(todo)} host(s) to {run.version}") as step:
            self._grid = step
            await self._show_grid()
            results = await self._unless_aborted(
                run, asyncio.gather(*(one(r) for r in todo), return_exceptions=True)
            )
            errors = [e for e in results if isinstance(e, BaseException)]
            if errors:
                raise StepFailed(f"{errors[0]} ({len(errors)} of {len(todo)} host(s) failed)")

    # -- after a failure ---------------------------------------------------------------------

    async def after_failure(self, exc: Exception) -> DeployOutcome:
        run = self.run
        if not isinstance(exc, EXPECTED):
            log.error("deployment #%s failed unexpectedly", run.id, exc_info=exc)
        ended = await self._steps.end_before_switch(run, exc)
        if ended is not None:
            return ended
        error = describe(exc)
        aborted = isinstance(exc, Aborted)
        actor = run.aborted_by if aborted and run.aborted_by else run.actor
        return await self.roll_back(
            error,
            actor,
            bad=not aborted and is_fault(exc),
            aborted=aborted,
            mark=bad_mark(run, error),
        )

    async def roll_back(
        self, error: str, actor: str, *, bad: bool, aborted: bool, mark: str
    ) -> DeployOutcome:
        """Every host that switched (or may have) back to the release it ran before."""
        run, fleet = self.run, self.fleet
        if bad:
            await asyncio.gather(
                *(self._steps.mark_bad(t, run.version, mark) for t in fleet.targets.values())
            )
        state = (await self._deployments.get(run.id)).state
        if state not in (S.FAILED, S.ROLLING_BACK):
            await self._steps.fail(run, actor, error)
        rows = [r for r in await self._rows.rows(run.id) if r.state in SWITCHED]
        if state is not S.ROLLING_BACK:
            hosts = " ".join(r.host for r in rows) or "none"
            await self._steps.advance(run, S.ROLLING_BACK, f"hosts back: {hosts}")
        limit = asyncio.Semaphore(self._at_once())

        async def back(row: HostRow) -> str | None:
            async with limit:
                return await self._host_back(row)

        async with run.progress.step(f"roll back {len(rows)} host(s)") as step:
            problems = [p for p in await asyncio.gather(*(back(r) for r in rows)) if p]
            step.detail = grid(await self._rows.rows(run.id))
            if problems:
                step.status = StepStatus.FAILED
        if problems:
            why = "; ".join(problems)
            await self._steps.advance(run, S.ROLLBACK_FAILED, why)
            text = f"{error} Rolling back failed on {len(problems)} host(s): {why}"
            return DeployOutcome(False, S.ROLLBACK_FAILED, run.version, run.previous, text)
        note = f"{len(rows)} host(s) back on the release they ran before"
        await self._steps.advance(run, S.ROLLED_BACK, note)
        return rolled_back(run, error, bad=bad, aborted=aborted)

    async def _host_back(self, row: HostRow) -> str | None:
        """One host back to its previous release, verified; a problem as text, else None."""
        run, target = self.run, self.fleet.targets[row.host]
        service = run.deployment.service
        row = next(r for r in await self._rows.rows(run.id) if r.host == row.host)  # fresh
        await self._rows.move(run.id, service, row.host, H.ROLLING_BACK)
        quiet = Progress()
        quiet_run = Run(run.deployment, quiet, run.actor)
        previous = row.previous_version
        try:
            if previous is None:
                raise StepFailed("there is no earlier release to go back to")
            await self._steps.hooks(
                quiet_run, target, "pre_rollback", previous, run.version, stop=False
            )
            if target.deploy.config_files and run.deployment.kind is not DeploymentKind.ROLLBACK:
                report = await target.points.restore(await target.points.load(run.id))
                if not report.ok:
                    raise StepFailed(report.summary())
            drain = self.fleet.drain
            if drain is not None:
                await drain.take_out(row.host)
            await target.strategy.switch_back(previous, quiet)
            await self._steps.verify(target, quiet, rollback=True)
            if drain is not None:
                await drain.put_back(row.host)
            await self._steps.hooks(quiet_run, target, "post_rollback", previous, run.version)
        except Exception as exc:
            why = f"{row.host}: {describe(exc)}"
            await self._rows.move(run.id, service, row.host, H.ROLLBACK_FAILED, why)
            return why
        await self._rows.move(run.id, service, row.host, H.ROLLED_BACK, f"{previous} runs")
        return None

    # -- after a restart of opsgate ----------------------------------------------------------

    async def resume(self) -> DeployOutcome:
        """Finish what was under way when opsgate stopped, from the hosts' rows."""
        run = self.run
        run.switched = True
        rows = await self._rows.rows(run.id)
        self._previous = {r.host: r.previous_version for r in rows}
        try:
            state = run.deployment.state
            if state in (S.FAILED, S.ROLLING_BACK):
                # Going back already: the run that failed marked the release bad if it was to
                # blame (before `failed`). Marking it again would overwrite why, or blame a
                # release that was halted; its own error says what went wrong.
                raise NotTheReleasesFault(
                    run.deployment.error or f"it was {state} when opsgate stopped"
                )
            if state is S.SWITCHING:
                if run.deployment.kind is DeploymentKind.ROLLBACK:
                    await self._roll_all_at_once()
                else:
                    await self._roll(resumed=True)
            else:
                await self._reverify([r.host for r in rows])
            if run.deployment.state is S.SWITCHING:
                await self._steps.advance(run, S.VERIFYING, "resumed after a restart of opsgate")
            await self._steps.advance(run, S.SUCCEEDED, "verified after a restart of opsgate")
        except Exception as exc:
            return await self.after_failure(exc)
        return DeployOutcome(True, S.SUCCEEDED, run.version, run.previous, None)

    # -- helpers -----------------------------------------------------------------------------

    def _at_once(self) -> int:
        """Hosts switched (or rolled back) at once: `parallel`, but with drain never every
        host of the environment, since a drained host gets no requests and draining them all
        would refuse every request until the last one is back."""
        hosts, parallel = len(self.fleet.hosts), self.fleet.rollout.parallel
        if self.fleet.drain is not None and hosts > 1:
            return min(parallel, hosts - 1)
        return parallel

    def _stop_if_halted(self) -> None:
        run = self.run
        if run.halted_by is not None:
            done = "" if self._grid is None else f" ({self._grid.detail})"
            raise Aborted(f"Halted by {run.halted_by} between hosts{done}.")

    async def _show_grid(self) -> None:
        if self._grid is not None:
            self._grid.detail = grid(await self._rows.rows(self.run.id))
            await self.run.progress.changed()

    async def _each(
        self,
        title: str,
        work: Callable[[Target, Progress], Awaitable[T]],
        *,
        only: Sequence[str] | None = None,
        detail: Callable[[dict[str, T]], str] | None = None,
    ) -> dict[str, T]:
        """`work` on every host (at most `parallel` at once) as one step; the first failure
        names its host. Returns host -> what `work` said."""
        targets = [t for h, t in self.fleet.targets.items() if only is None or h in only]
        limit = asyncio.Semaphore(self.fleet.rollout.parallel)

        async def one(target: Target) -> T:
            async with limit:
                try:
                    return await work(target, Progress())
                except Exception as exc:
                    raise HostFailed(target.host, describe(exc)) from exc

        async with self.run.progress.step(f"{title} on {len(targets)} host(s)") as step:
            results = await asyncio.gather(*(one(t) for t in targets), return_exceptions=True)
            said: dict[str, T] = {}
            for target, result in zip(targets, results, strict=True):
                if isinstance(result, BaseException):
                    raise result
                said[target.host] = result
            text = detail(said) if detail else ", ".join(sorted({str(v) for v in said.values()}))
            step.detail = text[:200]
            return said


def versions(by_host: dict[str, str | None]) -> str:
    """The releases the hosts run, each once ("-": none)."""
    return ", ".join(sorted({v or "-" for v in by_host.values()}))


def is_fault(exc: BaseException) -> bool:
    """Whether the release is to blame, looking through the host and rollout wrappers."""
    while type(exc) in (StepFailed, HostFailed) and exc.__cause__ is not None:
        exc = exc.__cause__
    return is_the_releases_fault(exc)
