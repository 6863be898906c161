from pathlib import Path

import aiosqlite

from services.records.audit import AuditLog
from services.records.storage import Storage


async def test_record_is_durable_before_return(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    async with Storage(path) as storage:
        audit = AuditLog(storage)
        event = await audit.record("deploy.requested", "111", "web", {"version": "v1.2.3"})
        # A second connection sees it at once: the write was committed, not buffered.
        async with aiosqlite.connect(path) as other:
            rows = await other.execute_fetchall("SELECT kind, actor, subject, data FROM events")
        assert list(rows) == [("deploy.requested", "111", "web", '{"version": "v1.2.3"}')]
        assert event.data == {"version": "v1.2.3"}


async def test_events_filter_and_order(tmp_path: Path, database: str) -> None:
    async with Storage(database) as storage:
        audit = AuditLog(storage)
        first = await audit.record("a", "1", "web")
        await audit.record("b", "1", "api")
        await audit.record("a", "2", "web", {"n": 3})
        by_subject = await audit.events(subject="web")
        assert [(e.kind, e.actor) for e in by_subject] == [("a", "1"), ("a", "2")]
        assert [e.subject for e in await audit.events(kind="b")] == ["api"]
        later = await audit.events(after_id=first.id)
        assert [e.kind for e in later] == ["b", "a"]
        assert later[-1].data == {"n": 3}
        assert later[0].at.tzinfo is not None
