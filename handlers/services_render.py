"""Pure rendering of service states for chat (HTML; everything from hosts is escaped)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from config.inventory import LOCAL_HOST, Service, memory_percent_limit
from handlers.deploy_render import render_versions
from handlers.render import MESSAGE_LIMIT, code, duration, esc, join_lines
from services.control.controller import RestartOutcome, ServiceDetails, ServiceState
from services.control.health import CheckResult
from services.deploy.placements import Placement
from services.records.audit import utc_now

LOG_CHARS = 2500  # leaves room for the header within Telegram's 4096


def _health(result: CheckResult | None) -> str:
    if result is None:
        return "no health check"
    latency = f"{result.latency_s * 1000:.0f} ms"
    if result.ok:
        return f"healthy {latency}"
    return f"unhealthy: {esc(result.reason)}"


def _icon(state: ServiceState) -> str:
    if state.error is not None:
        return "⚪"
    if state.running and (state.health is None or state.health.ok):
        return "🟢"
    return "🟡" if state.running else "🔴"


def _since(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return f" for {duration((utc_now() - moment).total_seconds())}"


def _state_detail(state: ServiceState) -> str:
    if state.error is not None:
        return f"cannot ask {esc(state.manager)}: {esc(state.error)}"
    pid = f" · pid {state.main_pid}" if state.main_pid else ""
    return f"{esc(state.state)}{_since(state.since)}{pid} · {_health(state.health)}"


def render_overview(placements: Sequence[Placement]) -> str:
    if not placements:
        return "No services in the ops file yet."
    lines = ["<b>Services</b>"]
    for placement in placements:
        lines += render_placement(placement)
    return join_lines(lines)


def render_placement(placement: Placement) -> list[str]:
    """One line for one host, or for a fleet whose hosts agree; else the hosts that differ."""
    states = placement.states
    head = f"<b>{esc(placement.service)}</b> ({esc(placement.environment)})"
    if len(states) == 1:
        return [f"{_icon(states[0])} {head} {_state_detail(states[0])}"]
    healthy, total = len(placement.healthy), len(states)
    versions = render_versions(placement.versions) if any(placement.versions.values()) else ""
    if placement.agree:
        on = versions or f"{total}/{total} hosts"
        return [f"🟢 {head}: {on}, all healthy"]
    icon = "🔴" if healthy == 0 else "🟡"
    lines = [
        f"{icon} {head}: {healthy}/{total} hosts healthy" + (f"; {versions}" if versions else "")
    ]
    lines += [
        f"    {_icon(state)} {esc(state.host)} {_state_detail(state)}"
        for state in states
        if state.host not in placement.healthy
    ]
    return lines


def _from(source: str) -> str:
    return f" ({esc(source)})" if source else ""


def render_limits(service: Service, environment: str) -> list[str]:
    """The safety limits a deploy is watched by, each with where it came from: the ops file
    or the seeds' numbers (applied where the data to check them exists)."""
    lines = []
    if service.health is not None and service.health.latency_limit_s is not None:
        limit, source = service.health.latency_limit_s, service.health.latency_limit_source
        lines.append(f"Response time: at most {limit:g} s{_from(source)}")
    deploy = service.deploy
    if deploy is None:
        return lines
    local = all(h == LOCAL_HOST for h in service.hosts_in(environment))
    percent, source = memory_percent_limit(deploy, local)
    memory = [f"{deploy.max_memory_mib} MiB (ops file)"] if deploy.max_memory_mib else []
    memory += [f"{percent:g}%{_from(source)}"] if percent is not None else []
    if memory:
        lines.append(f"Memory while watched: at most {' and '.join(memory)}")
    if deploy.error_rate is not None:
        gate = deploy.error_rate
        lines.append(
            f"Errors while watched: at most {gate.max_ratio:.0%}{_from(gate.max_ratio_source)}"
        )
    lines.append(f"Watch after a deploy: {duration(deploy.watch_s)}")
    return lines


def render_details(details: ServiceDetails, limits: Sequence[str] = ()) -> str:
    state = details.state
    lines = [
        f"{_icon(state)} <b>{esc(state.name)}</b> ({esc(state.environment)}) — "
        f"{esc(state.manager)} {code(state.control_name)}",
    ]
    if state.error is not None:
        lines.append(f"Cannot ask {esc(state.manager)}: {esc(state.error)}")
    else:
        lines.append(f"State: {esc(state.state)}{_since(state.since)}")
        facts = [f"main pid {state.main_pid or '-'}"]
        if state.restarts is not None:
            facts.append(f"restarts {state.restarts}")
        if details.process is not None:
            facts.append(f"RSS {details.process.rss_bytes / 2**20:.1f} MiB")
            if details.process.cpu_percent is not None:
                facts.append(f"CPU {details.process.cpu_percent:.1f}%")
        lines.append(" · ".join(facts))
    health = state.health
    lines.append(f"Health: {_health(health)}" + (f" ({esc(health.target)})" if health else ""))
    lines += limits
    log = details.log_tail.strip() or "(empty)"
    while len(esc(log)) > LOG_CHARS:  # measured escaped: `&` alone grows fivefold
        log = "…" + log[len(log) // 4 :]
    lines.append(f"<b>Last log lines</b>\n<pre>{esc(log)}</pre>")
    return join_lines(lines, limit=MESSAGE_LIMIT)


def render_fleet_details(
    placement: Placement, details: ServiceDetails, limits: Sequence[str] = ()
) -> str:
    """A fleet: every host's state, then the log of the host `details` is about."""
    lines = render_placement(placement)
    lines += [
        f"    {_icon(s)} {esc(s.host)} {esc(placement.versions.get(s.host) or '-')}"
        f" {_state_detail(s)}"
        for s in placement.states
        if s.host in placement.healthy
    ]
    lines += limits
    log = details.log_tail.strip() or "(empty)"
    while len(esc(log)) > LOG_CHARS // 2:
        log = "…" + log[len(log) // 4 :]
    lines.append(f"<b>Last log lines on {esc(details.state.host)}</b>\n<pre>{esc(log)}</pre>")
    return join_lines(lines, limit=MESSAGE_LIMIT)


def restart_footer(name: str, outcome: RestartOutcome, elapsed_s: float) -> str:
    pids = f"pid {outcome.old_pid or '-'} → {outcome.new_pid or '-'}"
    if outcome.ok:
        return f"✅ <b>{esc(name)}</b> restarted and healthy ({pids}) in {elapsed_s:.1f} s."
    reason = esc(outcome.error or "unknown")
    return (
        f"❌ Restart of <b>{esc(name)}</b> failed: {reason}\n"
        f"See <code>/service {esc(name)}</code> for its state and log."
    )
