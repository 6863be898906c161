"""Alert messages: a group with its alerts, who acknowledged it, what changed lately."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from config.opsfile import OpsConfig
from handlers.callbacks import CallbackData
from handlers.render import code, esc, join_lines, who
from services.alerts.changes import RecentDeploy, RecentFlagChange
from services.alerts.model import Alert, AlertGroup, AlertStatus, Silence
from services.alerts.outbox import MAX_LABEL_CHARS, MAX_SUMMARY_CHARS

NS_ALERT = "al"
ICONS = {"critical": "🔥", "warning": "⚠️", "info": "ℹ️"}
HIDDEN = ("alertname", "severity")  # said in the line itself
MAX_LINES = 40  # alerts listed in one group message; the rest are counted
DIGEST_LIMIT = 4000  # HTML characters of one digest message (Telegram: 4096 after parsing)


def labels_text(labels: Mapping[str, str], skip: Sequence[str] = HIDDEN) -> str:
    shown = [f"{k}={v}" for k, v in sorted(labels.items()) if k not in skip]
    return " ".join(shown)


def alert_line(alert: Alert, silences: Sequence[Silence]) -> str:
    icon = "✅" if alert.status is AlertStatus.RESOLVED else ICONS.get(alert.severity, "⚠️")
    muted = " 🔕" if any(s.matches(alert.labels) for s in silences) else ""
    labels = labels_text(alert.labels)[:MAX_LABEL_CHARS]
    line = f"{icon} <b>{esc(alert.name[:80])}</b> {esc(labels)}{muted}".rstrip()
    if alert.summary:
        line += f" — {esc(alert.summary[:MAX_SUMMARY_CHARS])}"
    when = alert.ends_at if alert.status is AlertStatus.RESOLVED else alert.starts_at
    return f"{line} ({_hm(when)})"


def _hm(at: datetime | None) -> str:
    return at.strftime("%H:%M UTC") if at else "-"


def render_group(
    group: AlertGroup,
    ops: OpsConfig,
    silences: Sequence[Silence],
    *,
    kind: str = "notify",
    deploy: RecentDeploy | None = None,
    flag: RecentFlagChange | None = None,
) -> str:
    firing = group.firing
    if firing:
        head = f"{ICONS.get(group.severity, '⚠️')} <b>{esc(group.severity.upper())}</b>"
        head += f" — {len(firing)} firing"
    else:
        head = "✅ <b>RESOLVED</b>"
    if kind == "repeat":
        head = "🔁 Still firing: " + head
    scope = labels_text(group.labels, skip=())
    lines = [f"{head} {esc(scope)}".rstrip()]
    alerts = sorted(group.alerts, key=lambda a: (a.status is AlertStatus.RESOLVED, a.first_seen))
    lines += [alert_line(a, silences) for a in alerts[:MAX_LINES]]
    if len(alerts) > MAX_LINES:
        lines.append(f"… and {len(alerts) - MAX_LINES} more: /alerts")
    if group.acked_by and firing:
        lines.append(f"👀 {who(ops, group.acked_by)} is on it (since {_hm(group.acked_at)})")
    if deploy is not None:
        lines.append(
            f"🔗 {esc(deploy.service)} {code(deploy.version)} was deployed at"
            f" {_hm(deploy.at)} (#{deploy.deployment_id}; before: {code(deploy.previous_version)})"
        )
    if flag is not None:
        lines.append(
            f"🔗 flag {code(flag.key)} was set to {esc(flag.to_value)}% at {_hm(flag.at)}"
            f" by {who(ops, flag.actor)}"
        )
    return join_lines(lines)


def group_keyboard(
    group: AlertGroup, deploy: RecentDeploy | None, flag: RecentFlagChange | None
) -> InlineKeyboardMarkup | None:
    if not group.firing:
        return None  # resolved: nothing left to do on it

    def data(action: str, row_id: int) -> str:
        return CallbackData(NS_ALERT, action, row_id).encode()

    rows = [
        [
            InlineKeyboardButton("👀 Ack", callback_data=data("ack", group.id)),
            InlineKeyboardButton("🔕 1h", callback_data=data("s1", group.id)),
            InlineKeyboardButton("🔕 24h", callback_data=data("s24", group.id)),
        ]
    ]
    if deploy is not None:
        label = f"↩️ Roll back to {deploy.previous_version}"[:48]
        rows.append([InlineKeyboardButton(label, callback_data=data("rb", deploy.deployment_id))])
    if flag is not None:
        label = f"🚩 Set {flag.key} to 0%"[:48]
        rows.append([InlineKeyboardButton(label, callback_data=data("f0", group.id))])
    return InlineKeyboardMarkup(rows)


def render_digest(alerts: Sequence[Alert], silences: Sequence[Silence]) -> list[str]:
    """The digest as one message, or more when its text would pass Telegram's limit: every
    alert it carries is named, none dropped."""
    firing = sum(a.status is AlertStatus.FIRING for a in alerts)
    head = f"📦 <b>Digest</b>: {len(alerts)} alert change(s), {firing} firing"
    parts: list[list[str]] = [[head]]
    size = len(head)
    for alert in alerts:
        line = alert_line(alert, silences)
        if size + len(line) + 1 > DIGEST_LIMIT:
            parts.append(["📦 <b>Digest</b> (continued)"])
            size = len(parts[-1][0])
        parts[-1].append(line)
        size += len(line) + 1
    return ["\n".join(part) for part in parts]


def render_silence(silence: Silence, ops: OpsConfig) -> str:
    matchers = " ".join(str(m) for m in silence.matchers)
    text = f"🔕 #{silence.id} {code(matchers)} until {silence.ends_at:%Y-%m-%d %H:%M} UTC"
    text += f" by {who(ops, silence.created_by)}"
    return text + (f": {esc(silence.comment)}" if silence.comment else "")
