"""Alert messages: a group with its alerts, who acknowledged it, what changed lately."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from config.opsfile import OpsConfig
from handlers.callbacks import CallbackData
from handlers.render import MESSAGE_LIMIT, code, esc, join_lines, who
from services.alerts.changes import RecentDeploy, RecentFlagChange
from services.alerts.links import Link
from services.alerts.listing import AlertFilter, Page
from services.alerts.model import Alert, AlertGroup, AlertStatus, Silence
from services.alerts.outbox import MAX_LABEL_CHARS, MAX_SUMMARY_CHARS
from services.alerts.silences import SilenceEntry

NS_ALERT = "al"
NS_PAGE = "alp"  # /alerts paging: alp:pN:<id of the alerts.listed record>
ICONS = {"critical": "🔥", "warning": "⚠️", "info": "ℹ️"}
HIDDEN = ("alertname", "severity")  # said in the line itself
MAX_LINES = 40  # alerts listed in one group message; the rest are counted


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
    # A resolution without an end time (some senders) ended when it was last reported.
    when = (alert.ends_at or alert.last_seen) if alert.status is AlertStatus.RESOLVED else None
    return f"{line} ({_hm(when or alert.starts_at)})"


def alert_plain(alert: Alert) -> str:
    """One alert as plain text, for the attached list: everything it carries, untruncated."""
    status = "resolved" if alert.status is AlertStatus.RESOLVED else "firing"
    when = alert.ends_at if alert.status is AlertStatus.RESOLVED else alert.starts_at
    labels = " ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
    summary = f" | {alert.summary}" if alert.summary else ""
    since = when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else "-"
    return f"{status}\t{since}\t{labels}{summary}"


@dataclass(frozen=True)
class AlertText:
    """A message that names every alert it carries; when they cannot all fit one message,
    `full_list` is every alert as plain text, sent with it as a document."""

    text: str
    full_list: str | None = None


def fit_alerts(
    head: str,
    alerts: Sequence[Alert],
    silences: Sequence[Silence],
    tail: Sequence[str] = (),
    reserve: int = 0,
) -> AlertText:
    """`head`, one line per alert, `tail`: as one message when it fits (less `reserve` for
    what the sender adds); else a compact form (counts by alert name, the lines that fit)
    with the full list to attach. An on-call engineer reads the message and searches the
    file; a list cut into five messages would spend the chat's budget and still scroll."""
    limit = MESSAGE_LIMIT - reserve
    lines = [alert_line(a, silences) for a in alerts]
    whole = "\n".join([head, *lines, *tail])
    if len(whole) <= limit:
        return AlertText(whole)
    names = Counter(a.name for a in alerts).most_common()
    by_name = ", ".join(f"{esc(name[:60])} ×{n}" for name, n in names[:10])
    if len(names) > 10:
        by_name += f", and {len(names) - 10} more name(s)"
    note = f"📎 All {len(alerts)} alerts are in the attached list."
    top = [head, f"By alert: {by_name}"]
    room = limit - sum(len(x) + 1 for x in [*top, note, *tail])
    shown: list[str] = []
    for line in lines:
        if len(line) + 1 > room:
            break
        shown.append(line)
        room -= len(line) + 1
    text = "\n".join([*top, *shown, note, *tail])
    return AlertText(text, "\n".join(alert_plain(a) for a in alerts) + "\n")


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
    """The group in short, for /alerts and redraws: its first alerts, the rest counted."""
    head, tail = _group_frame(group, ops, kind, deploy, flag)
    alerts = _firing_first(group)
    lines = [head, *(alert_line(a, silences) for a in alerts[:MAX_LINES])]
    if len(alerts) > MAX_LINES:
        lines.append(f"… and {len(alerts) - MAX_LINES} more: /alerts")
    return join_lines([*lines, *tail])


def render_group_message(
    group: AlertGroup,
    ops: OpsConfig,
    silences: Sequence[Silence],
    *,
    kind: str = "notify",
    deploy: RecentDeploy | None = None,
    flag: RecentFlagChange | None = None,
    reserve: int = 0,
) -> AlertText:
    """The group's message for the chat: every alert named, in it or in its attached list."""
    head, tail = _group_frame(group, ops, kind, deploy, flag)
    return fit_alerts(head, _firing_first(group), silences, tail, reserve)


def _firing_first(group: AlertGroup) -> list[Alert]:
    return sorted(group.alerts, key=lambda a: (a.status is AlertStatus.RESOLVED, a.first_seen))


def _group_frame(
    group: AlertGroup,
    ops: OpsConfig,
    kind: str,
    deploy: RecentDeploy | None,
    flag: RecentFlagChange | None,
) -> tuple[str, list[str]]:
    firing = group.firing
    if firing:
        head = f"{ICONS.get(group.severity, '⚠️')} <b>{esc(group.severity.upper())}</b>"
        head += f" — {len(firing)} firing"
    else:
        head = "✅ <b>RESOLVED</b>"
    if kind == "repeat":
        head = "🔁 Still firing: " + head
    scope = labels_text(group.labels, skip=())
    tail = []
    if group.acked_by and firing:
        tail.append(f"👀 {who(ops, group.acked_by)} is on it (since {_hm(group.acked_at)})")
    if deploy is not None:
        tail.append(
            f"🔗 {esc(deploy.service)} {code(deploy.version)} was deployed at"
            f" {_hm(deploy.at)} (#{deploy.deployment_id}; before: {code(deploy.previous_version)})"
        )
    if flag is not None:
        tail.append(
            f"🔗 flag {code(flag.key)} was set to {esc(flag.to_value)}% at {_hm(flag.at)}"
            f" by {who(ops, flag.actor)}"
        )
    return f"{head} {esc(scope)}".rstrip(), tail


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


def render_digest(alerts: Sequence[Alert], silences: Sequence[Silence]) -> AlertText:
    """The digest: every alert it carries named, in it or in its attached list."""
    firing = sum(a.status is AlertStatus.FIRING for a in alerts)
    head = f"📦 <b>Digest</b>: {len(alerts)} alert change(s), {firing} firing"
    return fit_alerts(head, alerts, silences)


def render_silence(silence: Silence, ops: OpsConfig) -> str:
    matchers = " ".join(str(m) for m in silence.matchers)
    text = f"🔕 #{silence.id} {code(matchers)} until {silence.ends_at:%Y-%m-%d %H:%M} UTC"
    text += f" by {who(ops, silence.created_by)}"
    return text + (f": {esc(silence.comment)}" if silence.comment else "")


def render_entry(entry: SilenceEntry, ops: OpsConfig) -> str:
    """One silence in force: where it lives, what it matches, until when, who and why."""
    matchers = " ".join(entry.matchers)
    text = f"🔕 {esc(entry.short_id)} {code(matchers)} until {entry.ends_at:%Y-%m-%d %H:%M} UTC"
    if entry.where == "alertmanager":
        text += f" by {esc(entry.created_by[:60])} in Alertmanager"
    else:
        text += f" by {who(ops, entry.created_by)}"
    return text + (f": {esc(entry.comment[:200])}" if entry.comment else "")


def render_page(page: Page, where: AlertFilter, ops: OpsConfig, silences: Sequence[Silence]) -> str:
    """One page of /alerts: a head naming the filter and the page, then its groups."""
    scope = f" matching {code(where)}" if where.matchers else ""
    if not page.groups:
        return f"✅ Nothing is firing{scope}."
    head = f"📋 {page.total} group(s) firing{scope}"
    if page.pages > 1:
        head += f", page {page.number}/{page.pages}"
    texts = [render_group(g, ops, silences) for g in page.groups]
    return join_lines([head, *texts], limit=MESSAGE_LIMIT - 100)


def page_keyboard(page: Page, listed_id: int) -> InlineKeyboardMarkup | None:
    """◀️ Previous / Next ▶️, pointing at the record of the listing (re-read on press)."""
    buttons = []
    if page.number > 1:
        data = CallbackData(NS_PAGE, f"p{page.number - 1}", listed_id).encode()
        buttons.append(InlineKeyboardButton("◀️ Previous", callback_data=data))
    if page.number < page.pages:
        data = CallbackData(NS_PAGE, f"p{page.number + 1}", listed_id).encode()
        buttons.append(InlineKeyboardButton("Next ▶️", callback_data=data))
    return InlineKeyboardMarkup([buttons]) if buttons else None


def with_links(
    markup: InlineKeyboardMarkup | None, links: Sequence[Link]
) -> InlineKeyboardMarkup | None:
    """The group's buttons, then its links as URL buttons, two a row (a resolved group has
    no other buttons, and keeps its runbooks and dashboards)."""
    buttons = [InlineKeyboardButton(x.label, url=x.url) for x in links]
    rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    if not rows:
        return markup
    return InlineKeyboardMarkup([*(markup.inline_keyboard if markup else ()), *rows])


def framed(opening: str, details: str) -> tuple[list[str], list[str]]:
    """The lines above a group's message (its route's filled template, bold) and below it
    (the alerts' shared description): the same on sending and on every redraw."""
    before = [f"<b>{esc(opening)}</b>"] if opening else []
    after = [f"📝 {esc(details)}"] if details else []
    return before, after
