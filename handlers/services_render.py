"""Pure rendering of service states for chat (HTML; everything from hosts is escaped)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from handlers.render import MESSAGE_LIMIT, code, duration, esc, join_lines
from services.control.controller import RestartOutcome, ServiceDetails, ServiceState
from services.control.health import CheckResult
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


def render_overview(states: Sequence[ServiceState]) -> str:
    if not states:
        return "No services in the ops file yet."
    lines = ["<b>Services</b>"]
    for state in states:
        if state.error is not None:
            detail = f"cannot ask {esc(state.manager)}: {esc(state.error)}"
        else:
            pid = f" · pid {state.main_pid}" if state.main_pid else ""
            detail = f"{esc(state.state)}{_since(state.since)}{pid} · {_health(state.health)}"
        lines.append(f"{_icon(state)} <b>{esc(state.name)}</b> ({esc(state.environment)}) {detail}")
    return join_lines(lines)


def render_details(details: ServiceDetails) -> str:
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
    log = details.log_tail.strip() or "(empty)"
    while len(esc(log)) > LOG_CHARS:  # measured escaped: `&` alone grows fivefold
        log = "…" + log[len(log) // 4 :]
    lines.append(f"<b>Last log lines</b>\n<pre>{esc(log)}</pre>")
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
