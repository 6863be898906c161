"""Canary: the new release starts on the idle colour beside the stable one, optionally sees a
mirrored copy of live requests (shadow), then takes a growing share of the traffic, step by
step, judged against stable over the same window at every analysis interval.

    start idle colour, healthy on its port        (as blue-green; no traffic yet)
    [shadow]  mirror on; analyse; mirror off      (users are answered by stable only)
    steps     weight w -> analyse every interval  until the step's time has run and the last
                                                  analysis passed on enough traffic
    100       the canary becomes the live colour; current -> the release; old colour stops

A breach (or Abort, or a step too thin to judge for traffic_timeout_s) puts all traffic back
on stable at once, stops the canary and ends the switch with the reason; the pipeline then
marks the release bad (not on Abort) and verifies stable. Pause stops a step's clock but not
its analysis: a breach while paused still aborts. Promote skips to 100.

Every move is in CanaryRows before the proxy changes, so after a crash `complete_switch`
resumes the step it left, with its analysis: traffic is never left split unwatched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from config.canary import CanaryConfig, CanaryStep
from services.control.analysis import (
    QueryRejected,
    Source,
    SourceUnavailable,
    Verdict,
    format_metric,
    judge,
    side_by_side,
)
from services.control.blue_green import BlueGreen, Color, other
from services.control.traffic import ProxyReloadFailed, set_mirror, split
from services.deploy.canary_rows import CanaryRows, Phase
from services.deploy.errors import NotTheReleasesFault, StepFailed
from services.deploy.steps import Aborted
from services.deploy.strategies import BlueGreenStrategy
from services.progress import Progress, Step

# Prometheus' increase() needs two scrapes inside the window.
MIN_WINDOW_S = 2.0


class CanaryBreach(StepFailed):
    """The canary broke a limit: it is the release's fault."""


@dataclass
class CanaryControl:
    """What the card's buttons ask of a running canary; `changed` wakes its loop at once."""

    paused: bool = False
    promote: bool = False
    abort: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    why_aborted: Callable[[], str] = lambda: "Aborted."
    alert: Callable[[], str | None] = lambda: None  # a critical alert for the service, if any


class CanaryStrategy(BlueGreenStrategy):
    def __init__(
        self,
        colors: BlueGreen,
        source: Source,
        rows: CanaryRows,
        *,
        start_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(colors, start_timeout_s=start_timeout_s)
        deploy = colors.service.deploy
        assert deploy is not None and deploy.canary is not None and colors.router is not None
        self.config: CanaryConfig = deploy.canary
        self.router = colors.router
        self.source = source
        self.rows = rows
        self.control = CanaryControl()
        self.deployment_id = 0
        # Only a deploy walks the steps (the pipeline binds it); a rollback, a drill and a
        # switch back after a failure move all traffic at once, as blue-green does.
        self.walk_steps = False
        self._clock = clock
        self._started = clock()  # the canary's start: its analysis looks no further back

    def bind(self, deployment_id: int, control: CanaryControl) -> None:
        self.deployment_id, self.control, self.walk_steps = deployment_id, control, True

    # -- the SwitchStrategy interface -------------------------------------------------------

    async def switch(self, version: str, progress: Progress, current: str | None = None) -> None:
        colors = self._colors
        stable = await colors.live()
        canary = other(stable)
        if stable is None or not self.walk_steps:  # nothing to compare with, or going back
            await super().switch(version, progress, current)
            return
        await self.rows.start(self.deployment_id, canary)
        await self._start(canary, version, progress)
        self._started = self._clock()
        await self._shadow(canary, stable, progress)
        await self._walk(canary, stable, version, 0, progress)

    async def switch_back(self, version: str, progress: Progress) -> None:
        self.walk_steps = False
        await super().switch_back(version, progress)

    async def complete_switch(self, version: str, current: str | None, progress: Progress) -> None:
        if not self.walk_steps:
            await super().complete_switch(version, current, progress)
            return
        colors = self._colors
        row = await self.rows.get(self.deployment_id)
        live = await colors.live()
        if row is None or live is None or row.phase in (Phase.STARTING, Phase.SHADOW):
            if row is not None and row.phase is Phase.SHADOW:
                assert self.config.shadow is not None
                await set_mirror(colors.host, self.config.shadow, colors.config.reload, None)
            if live is not None:
                await colors.systemd.stop(colors.unit(other(live)))
            await self.switch(version, progress)
            return
        canary: Color = "blue" if row.color == "blue" else "green"
        if row.phase is Phase.BACK:
            # Killed after traffic went back to stable, before the deployment said why: the
            # reason is in the audit log; not knowing it, opsgate does not mark the release.
            await self._back_to_stable(canary, other(canary), "resumed after a restart")
            raise NotTheReleasesFault(
                "The canary had been stopped (traffic back on stable) when opsgate restarted."
            )
        if row.phase in (Phase.PROMOTING, Phase.DONE) or live == canary:
            await self._promote(canary, other(canary), version, progress)
            return
        # Traffic may be split: the analysis picks up where it stopped, at the same step.
        self.control.paused = row.paused
        self._started = self._clock()
        async with progress.step(f"canary resumed at {row.weight}%") as step:
            step.detail = f"{colors.unit(canary)} with {version}, step {row.step + 1}"
            if not await colors.systemd.is_active(colors.unit(canary)):
                await self._back_to_stable(canary, live, "the canary was not running")
                raise StepFailed(
                    f"After a restart of opsgate, {colors.unit(canary)} was not running:"
                    " traffic is back on stable."
                )
        await self._walk(canary, live, version, max(row.step, 0), progress)

    # -- phases -----------------------------------------------------------------------------

    async def check_source(self, progress: Progress) -> None:
        """A pre-check: a query Prometheus rejects fails the deploy before anything changed."""
        stable = await self._colors.live()
        if stable is None:
            return  # the first release starts alone: nothing to compare it with
        canary = other(stable)
        async with progress.step("analysis source answers") as step:
            try:
                for color in (stable, canary):
                    await self.source.validate(color, self._colors.port(color))
            except QueryRejected as exc:
                raise NotTheReleasesFault(f"{exc}. Nothing was started; fix the query.") from exc
            except SourceUnavailable as exc:
                raise NotTheReleasesFault(f"{exc}. Nothing was started.") from exc
            step.detail = self.config.analysis.source

    async def _shadow(self, canary: Color, stable: Color, progress: Progress) -> None:
        shadow = self.config.shadow
        if shadow is None:
            return
        colors = self._colors
        await self.rows.move(self.deployment_id, colors.name, Phase.SHADOW, -1, 0)
        title = f"shadow {shadow.duration_s:g} s: mirror to {canary}"
        async with progress.step(title) as step:
            await set_mirror(colors.host, shadow, colors.config.reload, colors.port(canary))
            try:
                await self._observe(
                    Phase.SHADOW, 0, canary, stable, shadow.duration_s, step, progress
                )
            finally:
                await set_mirror(colors.host, shadow, colors.config.reload, None)

    async def _walk(
        self, canary: Color, stable: Color, version: str, first: int, progress: Progress
    ) -> None:
        steps = self.config.steps
        for index in range(first, len(steps)):
            step = steps[index]
            if step.weight >= 100 or self.control.promote:
                break
            await self._set_weight(canary, index, step.weight, progress)
            await self._hold_step(canary, stable, index, step, progress)
        await self._promote(canary, stable, version, progress)

    async def _set_weight(self, canary: Color, index: int, weight: int, progress: Progress) -> None:
        colors = self._colors
        await self.rows.move(self.deployment_id, colors.name, Phase.STEPS, index, weight)
        try:
            await self.router.set_weights(split(canary, weight))
        except ProxyReloadFailed as exc:
            await self._back_to_stable(canary, other(canary), str(exc))
            raise NotTheReleasesFault(f"Traffic back on stable: {exc}") from exc

    async def _hold_step(
        self, canary: Color, stable: Color, index: int, step: CanaryStep, progress: Progress
    ) -> None:
        duration = self.config.duration_of(step)
        title = f"{step.weight}% to {canary} for {duration:g} s"
        async with progress.step(title) as shown:
            shown.detail = self.router.describe(split(canary, step.weight))
            await self._observe(Phase.STEPS, step.weight, canary, stable, duration, shown, progress)

    async def _observe(
        self,
        phase: Phase,
        weight: int,
        canary: Color,
        stable: Color,
        duration: float,
        shown: Step,
        progress: Progress,
    ) -> Verdict | None:
        """Analyse every interval until `duration` of unpaused time has passed and the last
        analysis passed on enough traffic (a shadow too); a breach, an abort or a too-thin
        window for traffic_timeout_s ends it. Promote ends a step at once. Returns the last
        verdict."""
        config, control = self.config, self.control
        ran, last_tick = 0.0, self._clock()
        judged_at = self._clock()  # when the canary was last judged on enough traffic
        verdict: Verdict | None = None
        next_tick = last_tick
        while True:
            # A fixed cadence: the analysis' own time does not stretch the interval.
            next_tick += config.interval_s
            await self._sleep(max(0.0, next_tick - self._clock()))
            now = self._clock()
            next_tick = max(next_tick, now - config.interval_s)  # after a long pause, no burst
            if not control.paused:
                ran += now - last_tick
            last_tick = now
            if control.abort.is_set():
                alert = control.alert()
                await self._back_to_stable(canary, stable, alert or "aborted")
                if alert is not None:  # the release's fault, as a breach is
                    raise CanaryBreach(
                        f"A critical alert fired during the canary: {alert}."
                        " Traffic is back on stable."
                    )
                raise Aborted(f"{control.why_aborted()} Traffic is back on stable.")
            if control.promote and phase is Phase.STEPS:
                shown.detail = "promoted by hand"
                return verdict
            try:
                verdict = await self._analyse(canary, stable)
            except (SourceUnavailable, QueryRejected) as exc:
                await self.rows.record(self.deployment_id, phase, weight, None, str(exc))
                shown.detail = f"no analysis: {exc}"
                verdict = None
            else:
                await self.rows.record(self.deployment_id, phase, weight, verdict)
                shown.detail = describe_verdict(verdict, control.paused)
            await progress.changed()
            if verdict is not None and (breach := verdict.breach) is not None:
                where = "in the shadow" if phase is Phase.SHADOW else f"at {weight}%"
                await self._back_to_stable(canary, stable, breach.describe())
                stable_value = format_metric(breach.metric, breach.stable)
                raise CanaryBreach(
                    f"Canary {where}: {breach.describe()} (stable {stable_value})."
                    " Traffic is back on stable."
                )
            if verdict is not None and verdict.enough_traffic:
                judged_at = now
                if ran >= duration and not control.paused:
                    return verdict
            elif now - judged_at > config.traffic_timeout_s:
                await self._back_to_stable(canary, stable, "too little traffic to judge")
                seen = f"{verdict.canary.requests:.0f}" if verdict else "no"
                # Nothing says the release is bad: it was not judged. Not marked.
                where = "in the shadow" if phase is Phase.SHADOW else f"at {weight}%"
                raise NotTheReleasesFault(
                    f"Too little traffic to judge the canary {where} for"
                    f" {config.traffic_timeout_s:g} s ({seen} requests in the last window,"
                    f" {config.analysis.min_requests} needed). Traffic is back on stable."
                )

    async def _sleep(self, seconds: float) -> None:
        """One interval, cut short by a button (Abort, Promote, Pause, Resume)."""
        changed = self.control.changed
        try:
            async with asyncio.timeout(seconds):  # unlike wait_for, never swallows a cancel
                await changed.wait()
        except TimeoutError:
            return
        changed.clear()

    async def _analyse(self, canary: Color, stable: Color) -> Verdict:
        """Both sides over the same window, which never reaches back before this canary
        started: the port's previous process (a canary stopped a moment ago) is not judged."""
        colors = self._colors
        window = min(self.config.analysis.window_s, self._clock() - self._started)
        window = max(MIN_WINDOW_S, window)
        canary_side, stable_side = await asyncio.gather(
            self.source.sample(canary, colors.port(canary), window),
            self.source.sample(stable, colors.port(stable), window),
        )
        return judge(canary_side, stable_side, self.config.analysis)

    async def _promote(
        self, canary: Color, stable: Color, version: str, progress: Progress
    ) -> None:
        colors = self._colors
        await self.rows.move(
            self.deployment_id, colors.name, Phase.PROMOTING, len(self.config.steps) - 1, 100
        )
        async with progress.step(f"100% to {canary}: {version} is stable") as step:
            await colors.send_traffic_to(canary)
            await colors.layout.switch(version)
            step.detail = self.router.describe(colors.all_to(canary))
        if await colors.systemd.is_active(colors.unit(stable)):
            await self._drain_and_stop(stable, progress)
        await self.rows.move(
            self.deployment_id, colors.name, Phase.DONE, len(self.config.steps) - 1, 100
        )

    async def _back_to_stable(self, canary: Color, stable: Color, why: str) -> None:
        """All traffic to stable first (that is what users feel); the canary stops once the
        requests it holds have had drain_s to finish."""
        colors = self._colors
        await self.router.set_weights(colors.all_to(stable))
        await self.rows.move(self.deployment_id, colors.name, Phase.BACK, -1, 0, why)
        await asyncio.sleep(colors.config.drain_s)
        await colors.systemd.stop(colors.unit(canary))


def describe_verdict(verdict: Verdict, paused: bool = False) -> str:
    """'errors 0.4% vs 0.2% (≤ 5.0%) · p95 12 ms vs 10 ms (≤ 5.00 s) · 240/2100 requests'"""
    limits = {check.metric: check.limit for check in verdict.checks}
    parts = []
    for metric, text in side_by_side(verdict).items():
        limit = limits.get(metric)
        parts.append(
            f"{metric} {text}"
            + (f" (≤ {format_metric(metric, limit)})" if limit is not None else "")
        )
    requests = f"{verdict.canary.requests:.0f}/{verdict.stable.requests:.0f} requests"
    if not verdict.enough_traffic:
        thin_side = "" if verdict.canary.requests < verdict.min_requests else " on stable"
        requests += f", too few{thin_side} to judge (need {verdict.min_requests})"
    parts.append(requests)
    if paused:
        parts.append("⏸ paused")
    return " · ".join(parts)
