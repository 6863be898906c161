"""Pure rendering of flags, plans and plan events for chat (HTML, everything escaped)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from config.inventory import SegmentDecl
from config.opsfile import OpsConfig
from handlers.callbacks import CallbackData
from handlers.render import code, duration, esc, join_lines
from services.flags.four_eyes import ChangeRequest
from services.flags.plans import Phase, Plan, PlanEvent, PlanState
from services.flags.types import Flag, FlagChange
from services.flags.usage import VariantUse
from services.records.audit import utc_now


def _state(flag: Flag) -> str:
    if flag.killed:
        return "🛑 killed"
    if not flag.enabled:
        return "⚪ off"
    if flag.split:
        return f"🟢 {esc(split_text(flag))}"
    return f"🟢 {flag.rollout_percent:g}%"


def split_text(flag: Flag) -> str:
    """'control 70% · treatment 20% · off 10%': each variant's share of users."""
    total = sum(weight for _, weight in flag.split) or 1
    return " · ".join(f"{name} {100 * weight / total:g}%" for name, weight in flag.split)


def _steps(plan: Plan) -> str:
    marked = [
        f"<b>{step:g}</b>" if index == plan.index else f"{step:g}"
        for index, step in enumerate(plan.steps)
    ]
    return " → ".join(marked)


def _phase(phase: Phase, current: bool) -> str:
    step = f"<b>{phase.percent:g}</b>" if current else f"{phase.percent:g}"
    needs = []
    if phase.max_error_ratio is not None:
        needs.append(f"errors ≤ {phase.max_error_ratio:.1%}")
    if phase.query is not None and phase.query_max is not None:
        needs.append(f"{esc(phase.query[:60])} ≤ {phase.query_max:g}")
    if phase.min_evaluations:
        needs.append(f"≥ {phase.min_evaluations:,} evaluations")
    return step + (f" ({'; '.join(needs)})" if needs else "")


def render_plan(plan: Plan) -> str:
    if not plan.equal_steps:  # phases with their own durations and criteria
        last = len(plan.phases) - 1
        parts = [
            _phase(p, i == plan.index)
            + ("" if i == last else f" {duration(p.duration.total_seconds())}")
            for i, p in enumerate(plan.phases)
        ]
        text = f"plan {' → '.join(parts)}, {plan.state.value}"
    else:
        text = (
            f"plan {_steps(plan)} every {duration(plan.every.total_seconds())}, {plan.state.value}"
        )
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


def _listed(values: frozenset[str] | tuple[str, ...], limit: int = 10) -> str:
    shown = sorted(values)
    more = f" and {len(shown) - limit} more" if len(shown) > limit else ""
    return esc(", ".join(shown[:limit])) + more


def _segment_note(segment: SegmentDecl | None) -> str:
    if segment is None:
        return "not in the ops file: matches nobody"
    parts = [f"{len(segment.keys)} member(s)"] if segment.keys or not segment.rules else []
    tests = [f"{r.attribute} {r.op.replace('_', ' ')} {', '.join(r.values)}" for r in segment.rules]
    if tests:
        parts.append(("or " if parts else "") + " and ".join(tests))
    return esc(" ".join(parts))


def render_targeting(flag: Flag, segments: Mapping[str, SegmentDecl]) -> list[str]:
    """Who gets the flag, in the order the rules are asked (engine.py), first match wins."""
    if flag.killed:
        return ["Killed: off for everyone until /flag KEY unkill."]
    if not flag.enabled:
        return ["Off for everyone until /flag KEY on."]
    tg = flag.targeting
    rules = []
    if tg.excluded_users:
        rules.append(f"users {_listed(tg.excluded_users)}: off (excluded)")
    if tg.excluded_chats:
        rules.append(f"chats {_listed(tg.excluded_chats)}: off (excluded)")
    if tg.chat_types:
        rules.append(f"chats not of type {_listed(tg.chat_types)}: off")
    on = "on" if not flag.split else esc(flag.on_variant)
    if tg.user_ids:
        rules.append(f"users {_listed(tg.user_ids)}: {on} (allow list)")
    for name in tg.segments:
        rules.append(f"segment {esc(name)} ({_segment_note(segments.get(name))}): {on}")
    everyone = "everyone else" if rules else "everyone"
    share = esc(split_text(flag)) if flag.split else f"{flag.rollout_percent:g}%"
    rules.append(f"{everyone}: {share}, sticky per user")
    lines = [
        "<b>Who gets it</b> (first match wins)",
        *(f"{i}. {r}" for i, r in enumerate(rules, 1)),
    ]
    if flag.split:
        values = ", ".join(f"{esc(n)} = {esc(json.dumps(v))}" for n, v in flag.variants.items())
        lines.append(f"(variants: {values}; served when off or excluded: {esc(flag.off_variant)})")
    return lines


def render_flag(
    flag: Flag,
    plan: Plan | None,
    changes: Sequence[FlagChange],
    names: Mapping[str, str] | None = None,
    segments: Mapping[str, SegmentDecl] | None = None,
    served: Sequence[VariantUse] = (),
) -> str:
    """`names` maps actors (user ids as text) to the ops file's names; `segments` are the ops
    file's, for their sizes."""
    lines = [f"{_state(flag)} <b>{esc(flag.key)}</b> (version {flag.version})"]
    if flag.description:
        lines.append(esc(flag.description))
    lines += render_targeting(flag, segments or {})
    if plan is not None:
        lines.append(f"• {render_plan(plan)}")
    lines.append(render_served(served))
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


def render_served(served: Sequence[VariantUse]) -> str:
    """'Served in the last hour: on to 1,204 users (3,310 evaluations) · off to ...'"""
    if not served:
        return "Served in the last hour: nothing over OFREP."
    parts = [
        f"{esc(use.variant)} to {'≥' if use.capped else ''}{use.users:,} user(s)"
        f" ({use.evaluations:,} evaluation(s))"
        for use in served
    ]
    return "Served in the last hour: " + " · ".join(parts)


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


NS_FOUR_EYES = "fe"  # a four-eyes request's Approve (ok) / Reject (no)


def render_request(request: ChangeRequest, ops: OpsConfig) -> str:
    """A flag change waiting for a second person, or what became of it."""
    key, what = f"<b>{esc(request.flag_key)}</b>", esc(request.summary)
    asked = esc(ops.name_of_actor(request.requested_by) or request.requested_by)
    decided = esc(ops.name_of_actor(request.decided_by or "") or request.decided_by or "")
    match request.state:
        case "approved":
            return f"✅ {key}: {what}, asked by {asked}, approved by {decided} and applied."
        case "rejected":
            return f"✖ {key}: {what}, asked by {asked}, rejected by {decided}. Nothing changed."
        case "stale":
            return f"⌛ {key}: {what}, asked by {asked}: the flag changed since. Ask again."
    return (
        f"👀 {key}: {what} needs a second person (four eyes), asked by {asked}.\n"
        f"Someone else with the flags role: Approve or Reject (or /flag {esc(request.flag_key)}"
        f" approve {request.id})."
    )


def request_buttons(request: ChangeRequest) -> InlineKeyboardMarkup:
    def button(label: str, action: str) -> InlineKeyboardButton:
        data = CallbackData(NS_FOUR_EYES, action, request.id).encode()
        return InlineKeyboardButton(label, callback_data=data)

    return InlineKeyboardMarkup([[button("✅ Approve", "ok"), button("✖ Reject", "no")]])
