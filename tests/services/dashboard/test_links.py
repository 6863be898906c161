"""One-time login links: the first visit signs the person in; a second, or a late one, not."""

from datetime import datetime, timedelta
from pathlib import Path

from services.dashboard.links import LoginLinks
from services.records.audit import AuditLog
from services.records.storage import Storage

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=datetime.now().astimezone().tzinfo)


async def test_a_link_works_once_and_only_while_fresh(tmp_path: Path, database: str) -> None:
    now = [T0]
    async with Storage(database) as storage:
        links = LoginLinks(storage, AuditLog(storage), lambda: now[0])
        token = await links.issue(1001, ttl_s=300)
        assert await links.redeem(token) == 1001
        assert await links.redeem(token) is None  # replayed
        late = await links.issue(1002, ttl_s=300)
        now[0] = T0 + timedelta(seconds=301)
        assert await links.redeem(late) is None
        assert await links.redeem("x" * 43) is None and await links.redeem("") is None
        stored = await storage.db.execute_fetchall("SELECT token_sha256 FROM dashboard_links")
        assert token not in {row[0] for row in stored}  # only the hash is kept
        kinds = await storage.db.execute_fetchall("SELECT kind, actor FROM events")
        assert [tuple(row) for row in kinds] == [("dashboard.signed_in", "1001")]
