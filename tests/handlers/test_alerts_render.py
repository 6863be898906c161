"""Alert messages: a digest never drops an alert, however long its lines."""

from __future__ import annotations

from datetime import UTC, datetime

from handlers.alerts_render import DIGEST_LIMIT, render_digest
from services.alerts.model import Alert, AlertStatus

AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def alert(n: int, summary: str) -> Alert:
    labels = {"alertname": "DiskFull", "severity": "warning", "instance": f"db-{n:04d}.prod"}
    return Alert(
        f"fp{n}", 1, labels, {"summary": summary}, "generic", AlertStatus.FIRING, AT, None, AT, AT
    )


def test_a_long_digest_is_split_and_names_every_alert_once() -> None:
    alerts = [alert(n, "x" * 120 + " <disk> & more") for n in range(120)]
    parts = render_digest(alerts, [])
    assert len(parts) > 1
    assert all(len(part) <= DIGEST_LIMIT for part in parts)
    assert parts[0].startswith("📦 <b>Digest</b>: 120 alert change(s), 120 firing")
    assert all(part.startswith("📦 <b>Digest</b> (continued)") for part in parts[1:])
    text = "\n".join(parts)
    for n in range(120):
        assert text.count(f"instance=db-{n:04d}.prod") == 1
    assert "&lt;disk&gt; &amp; more" in text  # escaped, like everything from a sender


def test_a_short_digest_is_one_message() -> None:
    assert len(render_digest([alert(n, "full") for n in range(5)], [])) == 1
