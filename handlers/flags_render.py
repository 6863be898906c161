"""Pure rendering of flags, plans and plan events for chat (HTML, everything escaped)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from handlers.render import code, duration, esc, join_lines
from services.flags.plans import Plan, PlanEvent, PlanState
from services.flags.types import Flag, FlagChange
from services.records.audit import utc_now


def _state(flag: Flag) -> str:
    if flag.killed:
        return "🛑 killed"
    if not flag.enabled:
        return "⚪ off"
    return f"🟢 {flag.rollout_percent:g}%"


def _steps(plan: Plan) -> str:
    marked = [
        f"<b>{step:g}</b>" if index == plan.index else f"{step:g}"
        for index, step in enumerate(plan.steps)
    ]
    return " → ".join(marked)


def render_plan(plan: Plan) -> str:
    text = f"plan {_steps(plan)} every {duration(plan.every.total_seconds())}, {plan.state.value}"
    if plan.state is PlanState.ACTIVE and plan.next_at is not None:
        wait = max(0.0, (plan.next_at - utc_now()).total_seconds())
        text += f", next step in {duration(wait)}"
    if plan.reason:
        text += f" ({esc(plan.reason)})"
    return text


def render_flags(flags: Sequence[Flag], plans: Mapping[str, Plan | None]) -> str:
    if not flags:
        return "No feature flags yet. Declare them under [flags] in the ops file."
    lines = ["<b>Feature flags</b>"]
    for flag in flags:
        plan = plans.get(flag.key)
        suffix = f" · {render_plan(plan)}" if plan is not None else ""
        lines.append(f"{_state(flag)} <b>{esc(flag.key)}</b>{suffix}")
    return join_lines(lines)


def _ids(label: str, values: frozenset[str] | tuple[str, ...]) -> str | None:
    return f"{label}: {esc(', '.join(sorted(values)))}" if values else None


def render_flag(
    flag: Flag,
    plan: Plan | None,
    changes: Sequence[FlagChange],
    names: Mapping[str, str] | None = None,
) -> str:
    """`names` maps actors (user ids as text) to the ops file's names."""
    targeting = flag.targeting
    lines = [f"{_state(flag)} <b>{esc(flag.key)}</b> (version {flag.version})"]
    if flag.description:
        lines.append(esc(flag.description))
    facts = [
        _ids("always on", targeting.user_ids),
        _ids("segments", targeting.segments),
        _ids("chat types", targeting.chat_types),
        _ids("excluded chats", targeting.excluded_chats),
        _ids("excluded users", targeting.excluded_users),
    ]
    lines += [f"• {fact}" for fact in facts if fact]
    if plan is not None:
        lines.append(f"• {render_plan(plan)}")
    if changes:
        lines.append("<b>Last changes</b>")
        for change in changes:
            when = change.at.strftime("%Y-%m-%d %H:%M")
            who = esc((names or {}).get(change.actor, change.actor))
            note = f" ({esc(change.note)})" if change.note else ""
            what = (
                "created"
                if change.field == "created"
                else f"{esc(change.field)} {code(change.from_value)} → {code(change.to_value)}"
            )
            lines.append(f"{when} {who}: {what}{note}")
    return join_lines(lines)


def render_plan_event(event: PlanEvent) -> str:
    key = f"<b>{esc(event.plan.flag_key)}</b>"
    if event.kind == "halted":
        return (
            f"🛑 Plan for {key} halted: {esc(event.reason)}.\n"
            f"Rolled back to {event.percent:g}%. Fix the cause, then start a new plan."
        )
    if event.kind == "done":
        return f"✅ Plan for {key} finished at {event.percent:g}%."
    step = f"step {event.plan.index + 1}/{len(event.plan.steps)}"
    return f"📈 Plan for {key}: {step}, now {event.percent:g}%."
