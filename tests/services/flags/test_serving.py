"""LiveFlagSource and FlagdExporter over a real FlagStore; ops files swap as on /reload."""

from __future__ import annotations

import json
from pathlib import Path

from config.opsfile import OpsConfig, parse_ops_text
from services.flags.serving import FlagdExporter, LiveFlagSource
from services.flags.store import FlagStore
from services.flags.types import EvaluationContext, Reason
from services.records.audit import AuditLog
from services.records.storage import Storage


def ops(segment_members: str, flagd_file: Path | None = None) -> OpsConfig:
    bot = f'[bot]\nflagd_file = "{flagd_file}"\n' if flagd_file else ""
    return parse_ops_text(f"{bot}[segments]\nbeta = [{segment_members}]\n")


async def test_segments_from_the_current_ops_file_and_etag(tmp_path: Path, database: str) -> None:
    async with Storage(database) as storage:
        store = FlagStore(storage, AuditLog(storage))
        await store.load()
        await store.create("checkout", "", "1")
        await store.set_segments("checkout", ["beta"], "1")
        current = {"ops": ops('"42"')}
        source = LiveFlagSource(store, lambda: current["ops"])
        tag = source.etag()
        member = source.evaluate("checkout", EvaluationContext("42"))
        assert (member.value, member.reason) == (True, Reason.TARGETING_MATCH)
        current["ops"] = ops('"7"')  # /reload moved user 42 out of the segment
        assert source.etag() != tag
        assert source.evaluate("checkout", EvaluationContext("42")).value is False
        assert [e.key for e in source.evaluate_all(EvaluationContext("7"))] == ["checkout"]


async def test_flagd_export_written_when_something_changed(tmp_path: Path, database: str) -> None:
    target = tmp_path / "flagd.json"
    async with Storage(database) as storage:
        store = FlagStore(storage, AuditLog(storage))
        await store.load()
        await store.create("checkout", "", "1")
        exporter = FlagdExporter(store, lambda: ops('"42"', target))
        assert await exporter.export_if_changed() == target
        assert await exporter.export_if_changed() is None  # nothing changed since
        await store.set_rollout("checkout", 30, "1")
        assert await exporter.export_if_changed() == target
        document = json.loads(target.read_text())
        assert '["on", 300]' in json.dumps(document["flags"]["checkout"]["targeting"])
        assert await FlagdExporter(store, lambda: ops('"42"')).export_if_changed() is None
