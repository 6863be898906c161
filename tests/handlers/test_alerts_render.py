"""Alert messages: a digest or a group never hides an alert, however many or long."""

from __future__ import annotations

from datetime import UTC, datetime

from config.opsfile import parse_ops_text
from handlers.alerts_render import render_digest, render_group_message
from handlers.render import MESSAGE_LIMIT
from services.alerts.model import Alert, AlertGroup, AlertStatus

AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def alert(n: int, summary: str, name: str = "DiskFull") -> Alert:
    labels = {"alertname": name, "severity": "warning", "instance": f"db-{n:04d}.prod"}
    return Alert(
        f"fp{n}", 1, labels, {"summary": summary}, "generic", AlertStatus.FIRING, AT, None, AT, AT
    )


def test_a_long_digest_names_what_fits_and_attaches_every_alert() -> None:
    alerts = [alert(n, "x" * 120 + " <disk> & more") for n in range(120)]
    rendered = render_digest(alerts, [])
    assert len(rendered.text) <= MESSAGE_LIMIT
    assert rendered.text.startswith("📦 <b>Digest</b>: 120 alert change(s), 120 firing")
    assert "By alert: DiskFull ×120" in rendered.text
    assert "📎 All 120 alerts are in the attached list." in rendered.text
    assert "&lt;disk&gt; &amp; more" in rendered.text  # escaped, like everything from a sender
    assert rendered.full_list is not None
    for n in range(120):  # the list names each once, with its summary as sent (plain text)
        assert rendered.full_list.count(f"instance=db-{n:04d}.prod") == 1
    assert rendered.full_list.count("<disk> & more") == 120


def test_a_short_digest_is_one_message_naming_them_all() -> None:
    rendered = render_digest([alert(n, "full") for n in range(5)], [])
    assert rendered.full_list is None
    assert all(f"instance=db-{n:04d}.prod" in rendered.text for n in range(5))


def test_a_group_of_300_names_every_alert() -> None:
    alerts = [alert(n, "Disk /var is 95% full", name=f"Disk{n % 3}") for n in range(300)]
    group = AlertGroup(
        7, "k", {"job": "db"}, -1002, 0, None, None, None, 0, None, None, tuple(alerts)
    )
    ops = parse_ops_text("")
    rendered = render_group_message(group, ops, [], reserve=200)
    assert len(rendered.text) <= MESSAGE_LIMIT - 200
    assert "By alert: Disk0 ×100, Disk1 ×100, Disk2 ×100" in rendered.text
    assert rendered.full_list is not None
    named = {f"db-{n:04d}" for n in range(300) if f"instance=db-{n:04d}.prod" in rendered.full_list}
    assert len(named) == 300
