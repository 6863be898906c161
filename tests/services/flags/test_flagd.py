"""The flagd export, checked by evaluating it the way flagd does (no flagd binary here).

`flagd_resolve` is a small JSONLogic interpreter for the operators the export uses, with
flagd's `fractional` written out from flagd's source (MurmurHash3 via mmh3 directly, not
through services.flags.bucketing), so the agreement test compares two implementations.
"""

import json
import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import mmh3
import pytest

from services.flags.bucketing import BucketingScheme
from services.flags.engine import evaluate, segment_sets
from services.flags.flagd import FLAGD_SCHEMA, FlagdExportError, export_flagd, write_flagd_file
from services.flags.types import EvaluationContext, Flag, Reason, Targeting

SEGMENTS = {"beta": ["u3", "u4", "u5"], "staff": ["u6"]}
TK = {"var": "targetingKey"}


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "") and value != []


def _same(a: Any, b: Any) -> bool:
    """JavaScript's ===, which JSONLogic's `in` uses: "1" is not 1, true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def _fractional(args: list[Any], data: dict[str, Any], flag_key: str) -> Any:
    if isinstance(args[0], str):
        bucket_by, args = args[0], args[1:]
    else:
        if not isinstance(data.get("targetingKey"), str):
            return None  # flagd: no bucketing value, the flag's default variant
        bucket_by = flag_key + data["targetingKey"]
    total = sum(weight for _, weight in args)
    point = (mmh3.hash(bucket_by.encode(), 0, signed=False) * total) >> 32
    running = 0
    for variant, weight in args:
        running += weight
        if point < running:
            return variant
    return None


def jsonlogic(rule: Any, data: dict[str, Any], flag_key: str) -> Any:
    if isinstance(rule, list):
        return [jsonlogic(item, data, flag_key) for item in rule]
    if not isinstance(rule, dict):
        return rule
    [(op, args)] = rule.items()
    if op == "var":
        return data.get(args)
    if op == "fractional":
        return _fractional(args, data, flag_key)
    if op == "if":
        for index in range(0, len(args) - 1, 2):
            if _truthy(jsonlogic(args[index], data, flag_key)):
                return jsonlogic(args[index + 1], data, flag_key)
        return jsonlogic(args[-1], data, flag_key) if len(args) % 2 else None
    if op == "in":
        needle, haystack = jsonlogic(args, data, flag_key)
        return any(_same(needle, item) for item in haystack)
    if op == "!":
        [operand] = jsonlogic(args, data, flag_key)  # canonical form: {"!": [x]}
        return not _truthy(operand)
    raise AssertionError(f"operator {op} is not expected in the export")


def flagd_resolve(document: dict[str, Any], key: str, ctx: EvaluationContext) -> Any:
    """(value, state) as flagd would give it; a DISABLED flag has no value of its own."""
    entry = document["flags"][key]
    if entry["state"] == "DISABLED":
        return None, "DISABLED"
    data = dict(ctx.attributes)
    if ctx.targeting_key is not None:
        data["targetingKey"] = ctx.targeting_key
    variant = jsonlogic(entry["targeting"], data, key) if "targeting" in entry else None
    return entry["variants"][variant if variant is not None else entry["defaultVariant"]], "ENABLED"


def flag(key: str, percent: float, **targeting: Any) -> Flag:
    return Flag(key, enabled=True, rollout_percent=percent, targeting=Targeting(**targeting))


FLAGS = [
    flag("plain", 25.0),
    flag(
        "busy",
        2.5,
        user_ids=frozenset({"u1", "u2"}),
        segments=("beta", "missing"),
        excluded_users=frozenset({"u2", "u3"}),
        excluded_chats=frozenset({"-1001"}),
        chat_types=frozenset({"group", "supergroup"}),
    ),
    flag("nearly", 99.9, segments=("staff",), excluded_users=frozenset({"u6"})),
    flag("zero", 0.0, user_ids=frozenset({"u7"})),
    flag("full", 100.0, excluded_chats=frozenset({"-1002"})),
    replace(flag("off", 50.0), enabled=False),
    replace(flag("killed", 100.0), killed=True),
    Flag(
        "words",
        enabled=True,
        rollout_percent=50.0,
        variants={"new": "v2", "old": "v1"},
        on_variant="new",
        off_variant="old",
    ),
]
CHATS = [-1001, "-1001", -1001.0, -1002, "-1003", None]
CHAT_TYPES = ["group", "private", "supergroup", None]


def contexts(count: int) -> list[EvaluationContext]:
    result = []
    for i in range(count):
        attributes: dict[str, Any] = {}
        if (chat := CHATS[i % len(CHATS)]) is not None:
            attributes["chat_id"] = chat
        if (chat_type := CHAT_TYPES[i % len(CHAT_TYPES)]) is not None:
            attributes["chat_type"] = chat_type
        result.append(EvaluationContext(f"u{i}", attributes))
    return result


def test_flagd_and_the_engine_agree_for_10000_users() -> None:
    document = export_flagd(FLAGS, SEGMENTS)
    segments = segment_sets(SEGMENTS)
    for f in FLAGS:
        on = 0
        for ctx in contexts(10_000):
            ours = evaluate(f, f.key, ctx, segments)
            value, state = flagd_resolve(document, f.key, ctx)
            if ours.reason is Reason.DISABLED:
                assert state == "DISABLED"
            else:
                assert (value, ours.error_code) == (ours.value, None), (f.key, ctx)
                on += ours.variant == f.on_variant
        if f.key == "plain":
            assert 2300 < on < 2700  # the rollout really splits, and by the same users


def test_without_a_targeting_key_flagd_serves_the_default() -> None:
    document = export_flagd(FLAGS, SEGMENTS)
    # The engine calls this TARGETING_KEY_MISSING; flagd answers with the off variant.
    assert flagd_resolve(document, "plain", EvaluationContext())[0] is False
    assert flagd_resolve(document, "full", EvaluationContext())[0] is True


def test_document_shape() -> None:
    checkout = Flag("checkout_v2", "New checkout", True, 25.0, version=3)
    document = export_flagd([checkout, flag("all", 100.0)], {})
    assert document["$schema"] == FLAGD_SCHEMA == "https://flagd.dev/schema/v0/flags.json"
    assert document["flags"]["checkout_v2"] == {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "off",
        "targeting": {"fractional": [["on", 250], ["off", 750]]},
        "metadata": {"version": 3, "description": "New checkout"},
    }
    assert document["flags"]["all"] == {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "on",
        "metadata": {"version": 0},
    }
    json.dumps(document)  # plain JSON all the way down


def test_the_document_declares_its_bucketing_scheme() -> None:
    assert export_flagd(FLAGS, SEGMENTS)["metadata"] == {"bucketing": "flagd-v2"}
    v2 = export_flagd(FLAGS, SEGMENTS, scheme=BucketingScheme.V2)
    v3 = export_flagd(FLAGS, SEGMENTS, scheme=BucketingScheme.V3)
    assert (v2["metadata"], v3["metadata"]) == (
        {"bucketing": "flagd-v2"},
        {"bucketing": "flagd-v3"},
    )
    # The evaluator picks the hashing, not the file: the flags themselves are the same.
    assert v2["flags"] == v3["flags"]
    assert export_flagd(FLAGS, SEGMENTS, scheme="flagd-v3") == v3  # type: ignore[arg-type]


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="flagd-v1"):
        export_flagd(FLAGS, SEGMENTS, scheme="flagd-v1")  # type: ignore[arg-type]


def test_rules_come_in_the_engine_order() -> None:
    [busy] = [f for f in FLAGS if f.key == "busy"]
    rule = export_flagd([busy], SEGMENTS)["flags"]["busy"]["targeting"]
    fractional = {"fractional": [["on", 25], ["off", 975]]}
    members = {"if": [{"in": [TK, ["u1", "u2", "u3", "u4", "u5"]]}, "on", fractional]}
    not_group = {"!": [{"in": [{"var": "chat_type"}, ["group", "supergroup"]]}]}
    types = {"if": [not_group, "off", members]}
    chats = {"if": [{"in": [{"var": "chat_id"}, ["-1001", -1001]]}, "off", types]}
    assert rule == {"if": [{"in": [TK, ["u2", "u3"]]}, "off", chats]}


def test_disabled_and_killed_flags_are_disabled() -> None:
    flags = export_flagd(FLAGS, SEGMENTS)["flags"]
    assert (flags["off"]["state"], flags["killed"]["state"]) == ("DISABLED", "DISABLED")
    assert flags["plain"]["state"] == "ENABLED"


@pytest.mark.parametrize(
    "bad",
    [
        Flag("mixed", variants={"on": True, "off": "no"}),
        Flag("lost", on_variant="shiny"),
    ],
)
def test_flags_flagd_cannot_express_are_refused(bad: Flag) -> None:
    with pytest.raises(FlagdExportError, match=bad.key):
        export_flagd([bad], {})


def test_write_is_complete_and_readable(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    document = export_flagd(FLAGS, SEGMENTS)
    write_flagd_file(path, document)
    assert json.loads(path.read_text()) == document
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["flags.json"]  # no temporary file left behind


def test_rewrite_replaces_and_keeps_permissions(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_text("old")
    path.chmod(0o640)
    inode = path.stat().st_ino
    write_flagd_file(path, {"flags": {}})
    assert json.loads(path.read_text()) == {"flags": {}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.stat().st_ino != inode  # a new file renamed over, not rewritten in place


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.mkdir()  # the rename cannot replace a directory
    with pytest.raises(OSError):
        write_flagd_file(path, {"flags": {}})
    assert os.listdir(tmp_path) == ["flags.json"] and path.is_dir()
