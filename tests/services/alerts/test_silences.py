"""SilenceBook against a real Alertmanager on loopback, checked with the real amtool: silences
made there with the person's name, expired there, amtool's own listed and mirrored, and the
local fallback when Alertmanager cannot be reached."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.dev.harness.alertmanager import Alertmanager, amtool
from config.opsfile import OpsConfig, parse_ops_text
from services.alerts.alertmanager import SilenceRefused
from services.alerts.engine import AlertEngine
from services.alerts.model import parse_matchers
from services.alerts.silences import FALLBACK, SilenceBook, SilenceNotFound
from services.records.audit import AuditLog
from services.records.storage import Storage

OPS = """
[people]
1001 = "alice"
[roles]
sre = [1001]
"""


def ops_with(url: str | None) -> OpsConfig:
    extra = f'[alertmanager]\nurl = "{url}"\n' if url else ""
    return parse_ops_text(OPS + extra)


async def query(am: Alertmanager, alertname: str, *extra: str) -> list[dict[str, Any]]:
    """amtool's silences that name this alertname (the Alertmanager is shared by the tests)."""
    found = json.loads(await amtool(am, "silence", "query", "-o", "json", *extra))
    assert isinstance(found, list)
    return [s for s in found if {"name": "alertname", "value": alertname} in _names(s)]


def _names(silence: dict[str, Any]) -> list[dict[str, str]]:
    return [{"name": m["name"], "value": m["value"]} for m in silence["matchers"]]


def about(items: list[Any], *names: str) -> list[Any]:
    """Entries or local silences whose matchers name one of these alertnames."""
    texts = {f"alertname={n}" for n in names}
    return [i for i in items if texts & {str(m) for m in i.matchers}]


class World:
    def __init__(self, storage: Storage, http: httpx.AsyncClient, url: str | None) -> None:
        self.storage = storage
        self.ops = ops_with(url)
        self.audit = AuditLog(storage)
        self.engine = AlertEngine(storage, self.audit, lambda: self.ops)
        self.book = SilenceBook(self.engine, storage, self.audit, lambda: self.ops, http)


@pytest.fixture
async def storage(tmp_path: Path, database: str) -> AsyncIterator[Storage]:
    """On both databases: for the tests of opsgate's own silences."""
    async with Storage(database) as storage:
        yield storage


@pytest.fixture
async def am_storage(tmp_path: Path) -> AsyncIterator[Storage]:
    """SQLite only, for the tests against the session's Alertmanager: they name their silences
    for themselves, and a second run on another database would find the first run's there."""
    async with Storage(tmp_path / "opsgate.db") as storage:
        yield storage


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def test_a_silence_is_made_in_alertmanager_with_the_persons_name(
    am_storage: Storage, http: httpx.AsyncClient, alertmanager: Alertmanager
) -> None:
    world = World(am_storage, http, alertmanager.url)
    matchers = parse_matchers("alertname=DiskFull service=~api|web")
    made = await world.book.create(matchers, timedelta(hours=2), "1001", "disk swap")
    assert made.unreachable is None and made.entry.where == "alertmanager"
    [silence] = await query(alertmanager, "DiskFull")
    assert silence["id"] == made.entry.id
    assert silence["createdBy"] == "alice"
    assert silence["comment"] == "opsgate: disk swap"
    assert {(m["name"], m["value"], m["isRegex"]) for m in silence["matchers"]} == {
        ("alertname", "DiskFull", False),
        ("service", "api|web", True),
    }
    [event] = await world.audit.events(kind="alert.silenced")
    assert event.actor == "1001" and event.data["silence"] == made.entry.id
    # Mirrored, so opsgate's own scheduler and monitor alerts honour it too...
    [mirror] = about(await world.engine.silences(), "DiskFull")
    assert mirror.matches({"alertname": "DiskFull", "service": "web"})
    # ...but listed once, as Alertmanager's.
    entries, unreachable = await world.book.active()
    assert unreachable is None and [e.id for e in about(entries, "DiskFull")] == [made.entry.id]

    ended = await world.book.expire(made.entry.id[:8], "1001")
    assert ended.id == made.entry.id
    assert await query(alertmanager, "DiskFull") == []  # amtool lists active ones only
    [expired] = await query(alertmanager, "DiskFull", "--expired")
    assert expired["id"] == made.entry.id
    assert about(await world.engine.silences(), "DiskFull") == []
    [event] = await world.audit.events(kind="alert.unsilenced")
    assert event.data == {"where": "alertmanager", "silence": made.entry.id}


async def test_silences_made_with_amtool_are_listed_and_mirrored(
    am_storage: Storage, http: httpx.AsyncClient, alertmanager: Alertmanager
) -> None:
    world = World(am_storage, http, alertmanager.url)
    out = await amtool(
        alertmanager, "silence", "add", "alertname=Flappy", "--author=bob", "--comment=noisy",
        "--duration=1h",
    )  # fmt: skip
    am_id = out.strip()
    await amtool(
        alertmanager, "silence", "add", "alertname=Other", "host!=a", "--author=bob",
        "--comment=negative", "--duration=1h",
    )  # fmt: skip
    entries = about((await world.book.active())[0], "Flappy", "Other")
    assert {e.created_by for e in entries} == {"bob"}
    assert {e.matchers for e in entries} == {("alertname=Flappy",), ("alertname=Other", "host!=a")}
    # The equality one is mirrored; the negative one is left to Alertmanager alone.
    [mirror] = about(await world.engine.silences(), "Flappy", "Other")
    assert mirror.matches({"alertname": "Flappy"}) and mirror.comment == f"alertmanager:{am_id}"
    await amtool(alertmanager, "silence", "expire", am_id)
    await world.book.sync()
    assert about(await world.engine.silences(), "Flappy") == []
    # A mirror's local number ends the silence in Alertmanager, not just the copy.
    await amtool(
        alertmanager, "silence", "add", "alertname=Again", "--author=bob", "--comment=x",
        "--duration=1h",
    )  # fmt: skip
    await world.book.sync()
    [again] = about(await world.engine.silences(), "Again")
    await world.book.expire(str(again.id), "1001")
    assert await query(alertmanager, "Again") == []
    assert [s["comment"] for s in await query(alertmanager, "Other")] == ["negative"]


async def test_alertmanager_unreachable_falls_back_to_a_local_silence(
    storage: Storage, http: httpx.AsyncClient
) -> None:
    world = World(storage, http, "http://127.0.0.1:9")  # nothing listens on the discard port
    made = await world.book.create(parse_matchers("alertname=X"), timedelta(hours=1), "1001", "y")
    assert made.unreachable and "cannot reach Alertmanager" in made.unreachable
    assert made.entry.where == "fallback" and made.entry.comment == f"{FALLBACK}; y"
    [local] = await world.engine.silences()
    assert local.matches({"alertname": "X"})
    entries, unreachable = await world.book.active()
    assert unreachable and [e.short_id for e in entries] == [f"#{local.id}"]
    await world.book.expire(f"#{local.id}", "1001")
    assert await world.engine.silences() == []


async def test_without_alertmanager_silences_are_local(
    storage: Storage, http: httpx.AsyncClient
) -> None:
    world = World(storage, http, None)
    made = await world.book.create(parse_matchers("alertname=X"), timedelta(hours=1), "1001")
    assert made.unreachable is None and made.entry.where == "local"
    assert (await world.book.active())[0] == [made.entry]
    with pytest.raises(SilenceNotFound):
        await world.book.expire("deadbeef00", "1001")
    with pytest.raises(SilenceNotFound):
        await world.book.expire("#999", "1001")


async def test_an_all_digit_id_prefix_is_alertmanagers(
    am_storage: Storage, http: httpx.AsyncClient, alertmanager: Alertmanager
) -> None:
    """A uuid can begin with 8 digits: with 8 or more, a bare number is Alertmanager's."""
    world = World(am_storage, http, alertmanager.url)
    await world.book.create(parse_matchers("alertname=Digits"), timedelta(hours=1), "1001")
    with pytest.raises(SilenceNotFound, match="in Alertmanager"):
        await world.book.expire("12345678", "1001")
    assert len(await query(alertmanager, "Digits")) == 1


async def test_unknown_ids_change_nothing_in_alertmanager(
    am_storage: Storage, http: httpx.AsyncClient, alertmanager: Alertmanager
) -> None:
    world = World(am_storage, http, alertmanager.url)
    kept = f"Kept{uuid.uuid4().hex[:8]}"  # the session's Alertmanager outlives this test
    await world.book.create(parse_matchers(f"alertname={kept}"), timedelta(hours=1), "1001")
    with pytest.raises(SilenceNotFound):
        await world.book.expire("00000000-0000", "1001")
    assert len(await query(alertmanager, kept)) == 1
    assert await world.audit.events(kind="alert.unsilenced") == []


async def test_a_matcher_alertmanager_refuses_changes_nothing(
    am_storage: Storage, http: httpx.AsyncClient, alertmanager: Alertmanager
) -> None:
    world = World(am_storage, http, alertmanager.url)
    lookahead = parse_matchers("alertname=~(?=x)x")  # Python reads it; Go's RE2 does not
    with pytest.raises(SilenceRefused):
        await world.book.create(lookahead, timedelta(hours=1), "1001")
    assert await query(alertmanager, "(?=x)x") == []
    assert await world.engine.silences() == []
    assert await world.audit.events(kind="alert.silenced") == []
