"""Pure rendering for the deploy surface: dry runs, outcomes, releases and history."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from handlers.render import code, esc, join_lines
from services.approvals.model import ApprovalRequest
from services.deploy.front_door import DryRun
from services.deploy.host_rows import HostRow, grid
from services.deploy.model import Deployment, DeploymentKind, DeploymentState
from services.deploy.steps import DeployOutcome as Outcome
from services.releases.layout import ReleaseInfo

# Callback namespaces of the deploy card's buttons (the card is posted by bot/changes.py).
NS_ROLLBACK, NS_ABORT = "rb", "ab"
NS_CANARY = "cn"  # a canary's Promote, Pause and Resume

_ICONS = {
    DeploymentState.SUCCEEDED: "✅",
    DeploymentState.ROLLED_BACK: "↩️",
    DeploymentState.ROLLBACK_FAILED: "🔥",
    DeploymentState.FAILED: "❌",
    DeploymentState.CANCELLED: "✖",
}


def render_dry_run(name: str, version: str, plan: DryRun) -> str:
    """The plan a deploy would follow, and why it would be refused now, if it would."""
    service, window, environment = plan.service, plan.refusal, plan.environment
    deploy = service.deploy
    assert deploy is not None  # checked by the handler
    checks = deploy.prechecks
    source = (
        f"git {code(deploy.git)} at {code(deploy.ref or version)}"
        if deploy.git
        else (f"artifact {code((deploy.artifact or '').replace('{version}', version))}")
    )
    pre = [f"free disk ≥ {checks.min_free_disk_mib} MiB under {code(deploy.root)}"]
    if checks.min_available_memory_mib:
        pre.append(f"memory available ≥ {checks.min_available_memory_mib} MiB")
    if checks.python:
        pre.append(f"{code(checks.python[0])} ≥ Python {esc(checks.min_python or '3')}")
    pre += [f"check {esc(n)}: {code(' '.join(argv))}" for n, argv in checks.commands.items()]
    health_rule = "must be healthy" if checks.require_healthy else "reported"
    lines = [
        f"🧪 Dry run: deploy <b>{esc(name)}</b> {code(version)} to {esc(environment)}",
        "Nothing was changed. "
        + (f"⛔ It would be refused now: {esc(window)}." if window else "The deploy would:"),
        f"1. check: current health ({health_rule}); " + "; ".join(pre),
        f"2. build {code(deploy.root + '/releases/' + version)} from {source}",
    ]
    lines += [f"    • {code(' '.join(step))}" for step in deploy.build]
    lines.append(
        f"3. record a rollback point ({len(deploy.config_files)} config file(s)"
        + (", database backup" if deploy.sqlite_db else "")
        + ")"
        + "".join(f", migrate: {code(' '.join(argv))}" for argv in deploy.migrate)
    )
    if deploy.canary is not None and deploy.blue_green is not None:
        canary = deploy.canary
        steps = " → ".join(
            f"{step.weight}%" + ("" if step.weight == 100 else f" {canary.duration_of(step):g} s")
            for step in canary.steps
        )
        mirror = f"shadow {canary.shadow.duration_s:g} s, then " if canary.shadow else ""
        lines.append(
            f"4. canary: start the idle colour on its port, verify it, {mirror}traffic {steps}"
            f" by {canary.router} weights, judged against stable every"
            f" {canary.interval_s:g} s ({canary.analysis.source}); a breach puts all traffic"
            " back on stable"
        )
    elif deploy.strategy == "blue-green" and deploy.blue_green is not None:
        lines.append(
            f"4. blue-green: start the idle colour on its port, verify it, point"
            f" {code(deploy.blue_green.upstream_file)} at it, reload the proxy, drain"
            f" {deploy.blue_green.drain_s:g} s, stop the old colour"
        )
    else:
        lines.append(f"4. switch current, restart {code(service.control_name)}")
    hosts = service.hosts_in(environment)
    if len(hosts) > 1:
        rollout = service.rollout_in(environment)
        batches = rollout.batches(hosts)
        sizes = " + ".join(str(len(b)) for b in batches)
        lines.append(
            f"    on {len(hosts)} hosts in {len(batches)} batches ({sizes}), each verified"
            f" before the next; {rollout.max_failed_hosts} failed host(s) allowed"
            + (", drained first" if rollout.drain else "")
        )
    health = service.health
    verify = (
        f"{health.consecutive} healthy check(s) within {health.within_s:g} s"
        if health
        else ("the service running")
    )
    verify += "".join(f", smoke: {code(' '.join(argv))}" for argv in deploy.smoke)
    lines.append(f"5. verify: {verify}")
    limits = [f"{deploy.max_failed_checks} failed check(s) in a row"]
    limits.append(f"restarts beyond {deploy.max_restarts}")
    if deploy.max_memory_mib or deploy.max_memory_percent:
        memory = [f"{deploy.max_memory_mib} MiB"] if deploy.max_memory_mib else []
        memory += [f"{deploy.max_memory_percent:g}%"] if deploy.max_memory_percent else []
        limits.append(f"memory over {' or '.join(memory)}")
    if deploy.error_rate is not None:
        limits.append(f"errors over {deploy.error_rate.max_ratio:.0%}")
    lines.append(
        f"6. watch {deploy.watch_s:g} s (every {deploy.watch_interval_s:g} s; roll back on "
        f"{', '.join(limits)}), keep the last {deploy.keep} releases"
    )
    return join_lines(lines)


def render_outcome(deployment: Deployment, outcome: Outcome) -> tuple[str, bool]:
    """The card's footer, and whether to offer a Roll back button."""
    name, icon = esc(deployment.service), _ICONS.get(outcome.state, "•")
    if deployment.kind is DeploymentKind.DRILL:
        return _drill_outcome(name, outcome), False
    if deployment.kind is DeploymentKind.RESTORE:
        return _restore_outcome(name, outcome), False
    if outcome.ok:
        was = f" (was {code(outcome.previous_version)})" if outcome.previous_version else ""
        text = f"{icon} <b>{name}</b> runs {code(outcome.version)}{was}."
        return text, outcome.previous_version is not None
    reason = esc(outcome.error or "unknown")
    if outcome.state is DeploymentState.ROLLED_BACK and outcome.rolled_back_to:
        what = "⏹ Stopped" if outcome.aborted else f"{icon} {code(outcome.version)} failed"
        return (
            f"{what}: {reason}\n"
            f"Rolled back: <b>{name}</b> runs {code(outcome.rolled_back_to)} again"
            + (f"; {code(outcome.version)} is marked bad." if outcome.marked_bad else "."),
            False,
        )
    if outcome.state is DeploymentState.ROLLBACK_FAILED:
        return f"{icon} {code(outcome.version)} failed and so did the rollback: {reason}", False
    return f"{icon} Nothing was switched: {reason}", False


def _restore_outcome(name: str, outcome: Outcome) -> str:
    point, icon = code(outcome.version), _ICONS.get(outcome.state, "•")
    if outcome.ok:
        return f"{icon} <b>{name}</b>'s database is restored from rollback point {point}; healthy."
    reason = esc(outcome.error or "unknown")
    if outcome.state is DeploymentState.ROLLED_BACK:
        return (
            f"{icon} The restore from {point} failed: {reason}\n"
            f"The database is as it was before (rollback point {code(outcome.rolled_back_to)})."
        )
    if outcome.state is DeploymentState.ROLLBACK_FAILED:
        return f"{icon} The restore from {point} failed, and so did putting it back: {reason}"
    return f"{icon} Nothing was restored: {reason}"


def _drill_outcome(name: str, outcome: Outcome) -> str:
    if outcome.ok and outcome.recovered_s is not None and outcome.forward_s is not None:
        return (
            f"🧯 Drill passed: <b>{name}</b> was healthy on {code(outcome.previous_version or '-')}"
            f" {outcome.recovered_s:.2f} s after the switch (time to recover), and runs"
            f" {code(outcome.version)} again ({outcome.forward_s:.2f} s)."
        )
    reason = esc(outcome.error or "unknown")
    if outcome.state is DeploymentState.ROLLED_BACK and outcome.rolled_back_to:
        return f"❌ Drill failed: {reason}\n<b>{name}</b> runs {code(outcome.rolled_back_to)}."
    if outcome.state is DeploymentState.ROLLBACK_FAILED:
        return f"🚨 Drill failed and so did the way back: {reason}"
    return f"❌ Drill did not start: {reason}"


def render_releases(
    name: str,
    releases: Sequence[ReleaseInfo],
    environment: str = "",
    hosts: Mapping[str, str | None] | None = None,
) -> str:
    if not releases:
        return f"No releases of <b>{esc(name)}</b> on its host yet."
    where = f" in {esc(environment)}" if environment else ""
    lines = [f"<b>Releases of {esc(name)}</b>{where} (oldest first)"]
    if hosts and len(hosts) > 1:
        lines.append(render_versions(hosts))
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


def render_versions(hosts: Mapping[str, str | None]) -> str:
    """ "v2 on 4/4 hosts", or host by host grouped by release when they differ."""
    by_version: dict[str, list[str]] = {}
    for host, version in hosts.items():
        by_version.setdefault(version or "nothing", []).append(host)
    if len(by_version) == 1:
        version = next(iter(by_version))
        return f"{code(version)} on {len(hosts)}/{len(hosts)} hosts"
    return " · ".join(f"{code(v)} on {esc(' '.join(h))}" for v, h in sorted(by_version.items()))


def render_history(
    deployments: Sequence[Deployment], hosts: Mapping[int, Sequence[HostRow]] | None = None
) -> str:
    if not deployments:
        return "No deployments yet."
    lines = ["<b>Recent deployments</b>"]
    for d in deployments:
        when = d.created_at.strftime("%m-%d %H:%M")
        icon = _ICONS.get(d.state, "⏳")
        error = f" — {esc(d.error[:80])}" if d.error else ""
        rows = (hosts or {}).get(d.id) or []
        fleet = f" · {esc(host_summary(rows))}" if rows else ""
        lines.append(
            f"{icon} #{d.id} {when} {esc(d.kind)} <b>{esc(d.service)}</b> {code(d.version)}"
            f" → {esc(d.environment)} ({esc(d.state)}){fleet}{error}"
        )
    return join_lines(lines)


def host_summary(rows: Sequence[HostRow]) -> str:
    """ "4/4 hosts healthy" when they agree, else the grid (✅ h1 h2 · ⏪ h3 ...)."""
    states = {r.state for r in rows}
    if len(states) == 1:
        return f"{len(rows)}/{len(rows)} hosts {next(iter(states)).replace('_', ' ')}"
    return grid(rows)


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
        then = "verifying it again now; it rolls back if it is not healthy."
        if d.state in (DeploymentState.FAILED, DeploymentState.ROLLING_BACK):
            then = "rolling it back now."
        lines.append(f"⚠️ #{d.id} {esc(d.service)} {code(d.version)} was {esc(d.state)}: {then}")
    return join_lines(lines)


def render_waiting_signoff(
    deployment: Deployment, request: ApprovalRequest, asked_in: int | None
) -> str:
    """The answer to a request that waits for sign-off: who must sign, and where."""
    roles = ", ".join(f"{r.role} ×{r.needed}" for r in request.roles)
    where = "below" if request.chat_id == asked_in else "in the approvals chat"
    return (
        f"🕐 #{deployment.id} <b>{esc(deployment.service)}</b> "
        + ("database restore from point " * (deployment.kind is DeploymentKind.RESTORE))
        + f"{code(deployment.version)} waits"
        f" for sign-off {where}: {esc(roles)}."
    )


def render_emergency_notice(deployment: Deployment, who: str) -> str:
    """To the approvers: an emergency deploy went ahead without them (`who` is escaped)."""
    return (
        f"🚨 Emergency deploy #{deployment.id}: <b>{esc(deployment.service)}</b> "
        f"{code(deployment.version)} to {esc(deployment.environment)} by {who}, without "
        f"approval. Review it now; /rollback {esc(deployment.service)} undoes it."
    )
