"""Flags kept in SQLite, with an in-memory snapshot that evaluations read instead of the database.

Every write commits the new definition, one `flag_changes` row per changed field and an audit
event in one transaction before the method returns, then publishes a fresh snapshot. Each write
bumps the flag's version; a caller that showed someone an older version (a button drawn
earlier) passes `if_version` and gets StaleFlag instead of overwriting a newer change. A write
that changes nothing returns the flag as it was: no version bump, no record. Errors are the
FlagError tree in types.py. Call `await store.load()` at start-up, before `snapshot()`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from functools import partial
from types import MappingProxyType
from typing import Any, Literal

from config.inventory import NAME_PATTERN
from services.flags import types as t
from services.flags.types import Flag, FlagChange, FlagSnapshot, Targeting
from services.records.audit import AuditLog, utc_now
from services.records.storage import INTEGRITY_ERRORS, Storage

_NUMBER_RE = re.compile(r"([-+]?)([0-9]+)(?:\.([0-9]+))?")  # ASCII only: float() takes "٢٥"
_SEGMENT_RE = re.compile(NAME_PATTERN)
_SCALARS: tuple[str, ...] = ("description", "enabled", "rollout_percent", "killed", "variants")
_SCALARS += ("on_variant", "off_variant", "split")
_SETS = ("user_ids", "chat_types", "excluded_chats", "excluded_users")
_UPDATE = (
    "UPDATE flags SET definition = ?, version = ?, updated_at = ?, updated_by = ?"
    " WHERE key = ? AND version = ?"
)
_INSERT = (
    "INSERT INTO flags (definition, version, updated_at, updated_by, key, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_BUCKETING_KEY = "flag_bucketing"  # in bot_state: the scheme rollouts were bucketed with
Change = Callable[[Flag], Flag]
Kind = Literal["chat", "user"]
Version = int | None  # if_version: write only if the flag is still at this version


def parse_percentage(text: str) -> float:
    """Chat text to a rollout percentage: `25`, `2.5`, `25%`; 0 to 100 in steps of 0.1."""
    cleaned = text.strip().removesuffix("%").rstrip()
    match = _NUMBER_RE.fullmatch(cleaned)
    if match is None or match.group(1) == "+":
        raise t.InvalidPercentage(f"{text[:20]!r} is not a percentage (e.g. 25 or 2.5)")
    if (match.group(1) == "-" and float(cleaned) != 0) or float(cleaned) > 100:
        raise t.InvalidPercentage(f"{text[:20]!r}: a percentage is between 0 and 100")
    if len((match.group(3) or "").rstrip("0")) > 1:
        raise t.InvalidPercentage(f"{text[:20]!r}: at most one decimal (steps of 0.1)")
    return t.check_percentage(float(cleaned))


def _as_dict(flag: Flag) -> dict[str, Any]:
    """The stored definition (all but key and version), flat: also the change trail's fields."""
    data = {name: getattr(flag, name) for name in _SCALARS}
    data["variants"] = dict(flag.variants)
    data["split"] = [[variant, weight] for variant, weight in flag.split]
    data |= {name: sorted(getattr(flag.targeting, name)) for name in _SETS}
    data["segments"] = list(flag.targeting.segments)  # in the order given
    return data


def _to_json(flag: Flag) -> str:
    return json.dumps(_as_dict(flag), sort_keys=True, separators=(",", ":"))


def _from_json(key: str, text: str, version: int) -> Flag:
    data: dict[str, Any] = json.loads(text)
    sets = {name: frozenset(data.pop(name, ())) for name in _SETS}
    targeting = Targeting(segments=tuple(data.pop("segments", ())), **sets)
    known = {name: data[name] for name in _SCALARS if name in data}  # older rows: defaults
    known["split"] = tuple((str(v), int(w)) for v, w in known.get("split", ()))
    return Flag(key=key, targeting=targeting, version=version, **known)


def _text(value: Any) -> str:
    """A field's value as the change trail shows it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return t.format_percent(value)
    if isinstance(value, list) and all(isinstance(v, list) and len(v) == 2 for v in value):
        return ",".join(f"{name}={weight}" for name, weight in value)  # a split
    if isinstance(value, list):
        return ",".join(map(str, value))
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _diff(before: Flag, after: Flag) -> list[tuple[str, str, str]]:
    old, new = _as_dict(before), _as_dict(after)
    return [(name, _text(old[name]), _text(new[name])) for name in old if old[name] != new[name]]


def changed_fields(before: Flag, after: Flag) -> list[tuple[str, str, str]]:
    """(field, from, to) for each field a change moved, as the change trail records them."""
    return _diff(before, after)


def _targeting(flag: Flag, **fields: Any) -> Flag:
    return replace(flag, targeting=replace(flag.targeting, **fields))


def _membership(kind: str, value: str, exclude: bool) -> Change:
    """The targeting change of exclude() (exclude=True) or include() (exclude=False)."""

    def change(flag: Flag) -> Flag:
        tg = flag.targeting
        if kind == "chat":
            chats = tg.excluded_chats | {value} if exclude else tg.excluded_chats - {value}
            return _targeting(flag, excluded_chats=chats)
        users = tg.excluded_users | {value} if exclude else tg.excluded_users - {value}
        always = tg.user_ids - {value} if exclude else tg.user_ids | {value}
        return _targeting(flag, excluded_users=users, user_ids=always)

    return change


def check_split(
    split: Sequence[tuple[str, int]], variants: Mapping[str, t.FlagValue]
) -> tuple[tuple[str, int], ...]:
    """Known variants, each once, whole weights from 0 summing to more than 0."""
    names = [name for name, _ in split]
    unknown = [name for name in names if name not in variants]
    if unknown:
        known = ", ".join(sorted(variants))
        raise t.InvalidTargeting(f"unknown variant {unknown[0][:40]!r} (known: {known})")
    if len(set(names)) != len(names) or not split:
        raise t.InvalidTargeting("name each variant once, e.g. control=50,treatment=50")
    if any(weight < 0 or weight > 1_000_000 for _, weight in split) or not sum(
        weight for _, weight in split
    ):
        raise t.InvalidTargeting("weights are whole numbers from 0, not all 0")
    return tuple((name, int(weight)) for name, weight in split)


def _segment_name(name: object) -> str:
    if not isinstance(name, str) or _SEGMENT_RE.fullmatch(name) is None:
        raise t.InvalidTargeting(f"{str(name)[:40]!r} is not a segment name")
    return name


def _without_user(flag: Flag, value: str) -> Flag:
    return _targeting(flag, user_ids=flag.targeting.user_ids - {value})


class FlagStore:
    def __init__(self, storage: Storage, audit: AuditLog) -> None:
        self._storage = storage
        self._audit = audit
        self._flags: dict[str, Flag] | None = None
        self._snapshot: FlagSnapshot | None = None
        self._lock = asyncio.Lock()  # one writer at a time, and never a load mid-write
        self._mark: tuple[int, int] | None = None  # (flags, sum of versions) at the last look

    async def load(self) -> FlagSnapshot:
        """(Re)read every flag from the database and publish a snapshot of them."""
        async with self._lock:
            await self._load()
            return self.snapshot()

    async def reload_if_changed(self) -> bool:
        """Read every flag again if the table changed since the last look (a following
        opsgate keeps its copy in step with the leader's writes so); whether it did."""
        rows = list(
            await self._storage.db.execute_fetchall(
                "SELECT count(*), coalesce(sum(version), 0) FROM flags"  # versions only grow
            )
        )
        mark = (int(rows[0][0]), int(rows[0][1]))
        if mark == self._mark and self._snapshot is not None:
            return False
        await self.load()
        self._mark = mark
        return True

    def snapshot(self) -> FlagSnapshot:
        """Every flag, from memory: what evaluations read. Replaced, never mutated, on writes."""
        if self._snapshot is None:
            raise t.NotLoaded("the flag store is not loaded yet (await FlagStore.load())")
        return self._snapshot

    async def get(self, key: str) -> Flag | None:
        t.check_flag_key(key)
        async with self._lock:
            return (await self._loaded()).get(key)

    async def all(self) -> list[Flag]:
        async with self._lock:
            return list((await self._loaded()).values())  # sorted by key, as published

    async def create(self, key: str, description: str, actor: str) -> Flag:
        """A new boolean flag, enabled at 0%: on for nobody until targeted or rolled out."""
        flag = Flag(
            t.check_flag_key(key), t.check_text(description, "description"), True, version=1
        )
        return await asyncio.shield(self._commit(flag, actor, flag.description, "flag.created"))

    async def create_variants(
        self,
        key: str,
        description: str,
        variants: Mapping[str, t.FlagValue],
        default: str,
        split: Sequence[tuple[str, int]],
        actor: str,
    ) -> Flag:
        """A multi-variant flag (string, number or JSON values), enabled, split as given;
        `default` is what the off state, exclusions and errors serve."""
        if default not in variants:
            raise t.InvalidTargeting(f"default {default!r} is not one of the variants")
        # The allow list and segments get the first variant the split names besides default.
        chosen = next((name for name, _ in split if name != default), default)
        flag = Flag(
            t.check_flag_key(key),
            t.check_text(description, "description"),
            True,
            variants=dict(variants),
            on_variant=chosen,
            off_variant=default,
            version=1,
            split=check_split(split, variants),
        )
        return await asyncio.shield(self._commit(flag, actor, flag.description, "flag.created"))

    async def set_split(self, key: str, split: Sequence[tuple[str, int]], actor: str) -> Flag:
        """New weights for a multi-variant flag's variants (e.g. an A/B test 50/50 -> 80/20)."""

        def change(flag: Flag) -> Flag:
            if not flag.split:
                raise t.InvalidTargeting(f"{flag.key} is a boolean flag: set a percentage")
            return replace(flag, split=check_split(split, flag.variants))

        return await self._update(key, actor, "", None, change, "flag.changed")

    async def set_rollout(
        self, key: str, percent: float, actor: str, note: str = "", *, if_version: Version = None
    ) -> Flag:
        percent = t.check_percentage(percent)

        def change(flag: Flag) -> Flag:
            if flag.split:
                raise t.InvalidTargeting(f"{flag.key} has variants: set its split instead.")
            return replace(flag, rollout_percent=percent)

        return await self._update(key, actor, note, if_version, change, "flag.changed")

    async def set_enabled(
        self, key: str, on: bool, actor: str, *, if_version: Version = None
    ) -> Flag:
        change = partial(replace, enabled=bool(on))
        return await self._update(key, actor, "", if_version, change, "flag.changed")

    async def kill(self, key: str, actor: str, reason: str, *, if_version: Version = None) -> Flag:
        """The emergency switch: off for everyone until unkill(), whatever else is set."""
        reason = t.check_text(reason, "reason", required=True)
        change = partial(replace, killed=True)
        return await self._update(key, actor, reason, if_version, change, "flag.killed")

    async def unkill(self, key: str, actor: str, *, if_version: Version = None) -> Flag:
        """Back to what the rest of the flag says (enabled, targeting, rollout)."""
        change = partial(replace, killed=False)
        return await self._update(key, actor, "", if_version, change, "flag.unkilled")

    async def exclude(self, key: str, kind: Kind, ident: str | int, actor: str) -> Flag:
        """Off for this chat, or for this user (who also leaves the always-on list)."""
        change = _membership(kind, t.check_ident(kind, ident), exclude=True)
        return await self._update(key, actor, "", None, change, "flag.changed")

    async def include(self, key: str, kind: Kind, ident: str | int, actor: str) -> Flag:
        """Undo exclude(); a user also joins the always-on list (chat exclusions still apply)."""
        change = _membership(kind, t.check_ident(kind, ident), exclude=False)
        return await self._update(key, actor, "", None, change, "flag.changed")

    async def include_user(self, key: str, user_id: str | int, actor: str) -> Flag:
        return await self.include(key, "user", user_id, actor)

    async def unexclude(self, key: str, kind: Kind, ident: str | int, actor: str) -> Flag:
        """Undo exclude() only: the chat or user goes back to what the rest of the flag says."""
        value = t.check_ident(kind, ident)
        field = "excluded_chats" if kind == "chat" else "excluded_users"

        def change(flag: Flag) -> Flag:
            return _targeting(flag, **{field: getattr(flag.targeting, field) - {value}})

        return await self._update(key, actor, "", None, change, "flag.changed")

    async def allow(self, key: str, user_id: str | int, actor: str) -> Flag:
        """Always on for this user (the allow list); an exclusion of them is lifted."""
        return await self.include(key, "user", user_id, actor)

    async def disallow(self, key: str, user_id: str | int, actor: str) -> Flag:
        """Off the allow list: the user gets what the rollout gives them."""
        value = t.check_ident("user", user_id)
        change = partial(_without_user, value=value)
        return await self._update(key, actor, "", None, change, "flag.changed")

    async def add_segment(self, key: str, segment: str, actor: str) -> Flag:
        """Members of this ops-file segment always get the flag (unless excluded)."""
        name = _segment_name(segment)

        def change(flag: Flag) -> Flag:
            names = tuple(dict.fromkeys([*flag.targeting.segments, name]))
            return _targeting(flag, segments=names)

        return await self._update(key, actor, "", None, change, "flag.changed")

    async def remove_segment(self, key: str, segment: str, actor: str) -> Flag:
        name = _segment_name(segment)

        def change(flag: Flag) -> Flag:
            names = tuple(n for n in flag.targeting.segments if n != name)
            return _targeting(flag, segments=names)

        return await self._update(key, actor, "", None, change, "flag.changed")

    async def set_chat_types(self, key: str, chat_types: Iterable[str], actor: str) -> Flag:
        """Only chats of these types get the flag; none given: every chat type."""
        wanted = frozenset(chat_types)
        if not wanted <= t.CHAT_TYPES:
            bad = ", ".join(sorted(str(name)[:20] for name in wanted - t.CHAT_TYPES))
            known = ", ".join(sorted(t.CHAT_TYPES))
            raise t.InvalidTargeting(f"unknown chat type {bad} (known: {known})")
        change = partial(_targeting, chat_types=wanted)
        return await self._update(key, actor, "", None, change, "flag.changed")

    async def set_targeting(self, key: str, targeting: Targeting, actor: str) -> Flag:
        """The whole targeting at once (an ops file's first targeting of a flag it creates)."""
        for name in targeting.segments:
            _segment_name(name)
        if not targeting.chat_types <= t.CHAT_TYPES:
            raise t.InvalidTargeting("unknown chat type")
        change = partial(replace, targeting=targeting)
        return await self._update(key, actor, "from the ops file", None, change, "flag.changed")

    async def set_segments(self, key: str, segments: Iterable[str], actor: str) -> Flag:
        """Ops-file segments whose members always get the flag (unless excluded)."""
        names = tuple(dict.fromkeys(_segment_name(name) for name in segments))  # in order
        change = partial(_targeting, segments=names)
        return await self._update(key, actor, "", None, change, "flag.changed")

    async def adopt_bucketing(self, scheme: str, force: bool, actor: str) -> bool:
        """Take `scheme` as the bucketing of every rollout; True when it changed. A change
        would re-bucket the users of every flag between 0 and 100%: refused
        (BucketingChangeRefused) while there is one, unless `force`. Before any scheme was
        recorded, flagd-v2 was in use."""
        async with self._lock:
            flags = await self._loaded()
            rows = await self._storage.db.execute_fetchall(
                "SELECT value FROM bot_state WHERE key = ?", (_BUCKETING_KEY,)
            )
            was = next((str(row[0]) for row in rows), "flagd-v2")
            if was == scheme:
                return False
            partial = [f.key for f in flags.values() if f.enabled and 0 < f.rollout_percent < 100]
            if partial and not force:
                raise t.BucketingChangeRefused(
                    f"[flags] bucketing {was} → {scheme} would move users in and out of the"
                    f" rollouts of {', '.join(partial[:5])}"
                    + (f" and {len(partial) - 5} more" if len(partial) > 5 else "")
                    + ": take them to 0 or 100% first, or set [flags] bucketing_force = true"
                )
            async with self._storage.transaction() as db:
                await db.execute(
                    "INSERT INTO bot_state (key, value, updated_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
                    " updated_at = excluded.updated_at",
                    (_BUCKETING_KEY, scheme, utc_now().isoformat()),
                )
                data = {"from": was, "to": scheme, "forced": bool(partial), "partial": partial}
                await self._audit.record("flags.bucketing_changed", actor, "", data)
            return True

    async def changes(self, key: str, limit: int = 10) -> list[FlagChange]:
        """The flag's last changes, newest first."""
        rows = await self._storage.db.execute_fetchall(
            "SELECT flag_key, at, actor, field, from_value, to_value, note, version"
            " FROM flag_changes WHERE flag_key = ? ORDER BY id DESC LIMIT ?",
            (t.check_flag_key(key), max(1, min(int(limit), 1000))),
        )
        return [FlagChange(r[0], datetime.fromisoformat(r[1]), *r[2:]) for r in rows]

    async def _update(
        self, key: str, actor: str, note: str, if_version: Version, change: Change, kind: str
    ) -> Flag:
        t.check_flag_key(key)
        note = t.check_text(note, "note")
        # Shielded: a caller cancelled mid-write cannot leave the database and memory apart.
        return await asyncio.shield(self._commit((key, change, if_version), actor, note, kind))

    async def _commit(
        self, what: Flag | tuple[str, Change, Version], actor: str, note: str, kind: str
    ) -> Flag:
        """Create `what` (a Flag), or apply (key, change, if_version) to a flag; then publish."""
        async with self._lock:
            flags = await self._loaded()
            if isinstance(what, Flag):
                if what.key in flags:
                    raise t.FlagExists(f"there is already a flag {what.key!r}")
                flag, rows = what, [("created", "", "created")]
            else:
                key, change, if_version = what
                current = flags.get(key)
                if current is None:
                    raise t.UnknownFlag(f"no flag {key!r}")
                if if_version is not None and if_version != current.version:
                    raise t.StaleFlag(f"{key} has changed since version {if_version}")
                flag = replace(change(current), version=current.version + 1)
                rows = _diff(current, flag)
                if not rows:
                    return current
            await self._write(flag, actor, note, kind, rows)
            flags[flag.key] = flag
            self._publish(flags)
            return flag

    async def _write(
        self, flag: Flag, actor: str, note: str, kind: str, rows: list[tuple[str, str, str]]
    ) -> None:
        """The definition, its change rows and the audit event, in one transaction."""
        at = utc_now().isoformat()
        created = kind == "flag.created"
        params = (_to_json(flag), flag.version, at, actor, flag.key)
        try:
            async with self._storage.transaction() as db:
                if created:
                    await db.execute(_INSERT, (*params, at))
                else:
                    cursor = await db.execute(_UPDATE, (*params, flag.version - 1))
                    if cursor.rowcount != 1:  # another process wrote this flag meanwhile
                        raise t.StaleFlag(f"{flag.key} was changed elsewhere; reload and retry")
                await db.executemany(
                    "INSERT INTO flag_changes (flag_key, version, at, actor, field, from_value,"
                    " to_value, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(flag.key, flag.version, at, actor, *row, note) for row in rows],
                )
                changes = [{"field": f, "from": a, "to": b} for f, a, b in rows]
                data = {"version": flag.version, "changes": changes, "note": note}
                await self._audit.record(kind, actor, flag.key, data)
        except INTEGRITY_ERRORS:
            if not created:
                raise
            raise t.FlagExists(f"there is already a flag {flag.key!r}") from None  # elsewhere

    async def _loaded(self) -> dict[str, Flag]:
        return self._flags if self._flags is not None else await self._load()

    async def _load(self) -> dict[str, Flag]:
        rows = await self._storage.db.execute_fetchall("SELECT key, definition, version FROM flags")
        return self._publish({r[0]: _from_json(r[0], r[1], r[2]) for r in rows})

    def _publish(self, flags: dict[str, Flag]) -> dict[str, Flag]:
        """Keep `flags` and publish a snapshot of them, whose etag hashes every definition."""
        self._flags = dict(sorted(flags.items()))
        digest = hashlib.sha256()
        for key, flag in self._flags.items():
            digest.update(f"{key}\0{flag.version}\0{_to_json(flag)}\n".encode())
        self._snapshot = FlagSnapshot(MappingProxyType(dict(self._flags)), digest.hexdigest()[:32])
        return self._flags
