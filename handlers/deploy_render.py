"""Pure rendering for the deploy surface: dry runs, outcomes, releases and history."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from config.inventory import Service
from handlers.render import code, esc, join_lines
from services.deployment_model import Deployment, DeploymentState
from services.releases import ReleaseInfo

_ICONS = {
    DeploymentState.SUCCEEDED: "✅",
    DeploymentState.ROLLED_BACK: "↩️",
    DeploymentState.ROLLBACK_FAILED: "🔥",
    DeploymentState.FAILED: "❌",
    DeploymentState.CANCELLED: "✖",
}


class Outcome(Protocol):
    """What the pipeline reports at the end (services/pipeline.py's DeployOutcome)."""

    @property
    def ok(self) -> bool: ...
    @property
    def state(self) -> DeploymentState: ...
    @property
    def version(self) -> str: ...
    @property
    def previous_version(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def rolled_back_to(self) -> str | None: ...


def render_dry_run(name: str, version: str, service: Service) -> str:
    deploy = service.deploy
    assert deploy is not None  # checked by the handler
    source = (
        f"git {code(deploy.git)} at {code(deploy.ref or version)}"
        if deploy.git
        else (f"artifact {code((deploy.artifact or '').replace('{version}', version))}")
    )
    lines = [
        f"🧪 Dry run: deploy <b>{esc(name)}</b> {code(version)} to {esc(service.environment)}",
        "Nothing was changed. The deploy would:",
        f"1. check health and free disk under {code(deploy.root)}",
        f"2. build {code(deploy.root + '/releases/' + version)} from {source}",
    ]
    lines += [f"    • {code(' '.join(step))}" for step in deploy.build]
    lines.append(
        f"3. record a rollback point ({len(deploy.config_files)} config file(s)"
        + (", database backup" if deploy.sqlite_db else "")
        + "), switch current, restart "
        + code(service.control_name)
    )
    health = service.health
    verify = (
        f"{health.consecutive} healthy check(s) within {health.within_s:g} s"
        if health
        else ("the service running")
    )
    lines.append(f"4. verify: {verify}")
    lines.append(
        f"5. watch {deploy.watch_s:g} s (every {deploy.watch_interval_s:g} s; roll back after "
        f"{deploy.max_failed_checks} failed check(s) in a row or restarts beyond "
        f"{deploy.max_restarts}), keep the last {deploy.keep} releases"
    )
    return join_lines(lines)


def render_outcome(deployment: Deployment, outcome: Outcome) -> tuple[str, bool]:
    """The card's footer, and whether to offer a Roll back button."""
    name, icon = esc(deployment.service), _ICONS.get(outcome.state, "•")
    if outcome.ok:
        was = f" (was {code(outcome.previous_version)})" if outcome.previous_version else ""
        text = f"{icon} <b>{name}</b> runs {code(outcome.version)}{was}."
        return text, outcome.previous_version is not None
    reason = esc(outcome.error or "unknown")
    if outcome.state is DeploymentState.ROLLED_BACK and outcome.rolled_back_to:
        return (
            f"{icon} {code(outcome.version)} failed: {reason}\n"
            f"Rolled back: <b>{name}</b> runs {code(outcome.rolled_back_to)} again; "
            f"{code(outcome.version)} is marked bad.",
            False,
        )
    if outcome.state is DeploymentState.ROLLBACK_FAILED:
        return f"{icon} {code(outcome.version)} failed and so did the rollback: {reason}", False
    return f"{icon} Nothing was switched: {reason}", False


def render_releases(name: str, releases: Sequence[ReleaseInfo]) -> str:
    if not releases:
        return f"No releases of <b>{esc(name)}</b> on its host yet."
    lines = [f"<b>Releases of {esc(name)}</b> (oldest first)"]
    for info in releases:
        built = datetime.fromtimestamp(info.mtime, UTC).strftime("%Y-%m-%d %H:%M")
        marks = [
            m
            for m, on in (
                ("current", info.is_current),
                ("previous", info.is_previous),
                ("bad", info.is_bad),
                ("incomplete", not info.complete),
            )
            if on
        ]
        lines.append(f"{code(info.version)} {built}" + (f" — {', '.join(marks)}" if marks else ""))
    return join_lines(lines)


def render_history(deployments: Sequence[Deployment]) -> str:
    if not deployments:
        return "No deployments yet."
    lines = ["<b>Recent deployments</b>"]
    for d in deployments:
        when = d.created_at.strftime("%m-%d %H:%M")
        icon = _ICONS.get(d.state, "⏳")
        error = f" — {esc(d.error[:80])}" if d.error else ""
        lines.append(
            f"{icon} #{d.id} {when} {esc(d.kind)} <b>{esc(d.service)}</b> {code(d.version)} "
            f"({esc(d.state)}){error}"
        )
    return join_lines(lines)


def render_recovery(ended: Sequence[Deployment], attention: Sequence[Deployment]) -> str | None:
    """What a restarted opsgate found in flight, or None when there was nothing."""
    if not ended and not attention:
        return None
    lines = ["♻️ opsgate restarted with deployments in flight."]
    for d in ended:
        lines.append(
            f"✖ #{d.id} {esc(d.service)} {code(d.version)} had not switched: ended, nothing "
            f"changed. Ask again with /deploy {esc(d.service)} {esc(d.version)}."
        )
    for d in attention:
        lines.append(
            f"⚠️ #{d.id} {esc(d.service)} {code(d.version)} was {esc(d.state)}: verifying it "
            "again now; it rolls back if it is not healthy."
        )
    return join_lines(lines)
