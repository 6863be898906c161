"""Export the flags as a flagd flag-definition file, for teams that run flagd.

Each flag's targeting is nested JSONLogic `if`s that ask the engine's questions in the engine's
order (engine.py): excluded user -> off, excluded chat -> off, chat type not listed -> off,
listed user or segment member -> on, then the rollout: a plain variant at 0 and 100, otherwise
`{"fractional": [["on", w], ["off", 1000 - w]]}` without a bucketing value, so the flagd
evaluator hashes its own default: the flag key and the targeting key.

flagd has no setting that picks the hashing: each evaluator version hashes that default one way
(bucketing.py), and no bucketing value written in JSONLogic makes one version hash the way
another does. So the file is the same for both schemes and declares the one it was made for in
the flag-set metadata, `"metadata": {"bucketing": "flagd-v2"}` (flagd copies flag-set metadata
into every evaluation's flag metadata). It puts exactly the same users in the rollout as
opsgate with:
- `flagd-v2` (the default): flagd (Go) 0.15.0 to 0.16.1 (core/pkg/evaluator/fractional.go as of
  7190878f, PR #1909, to 670c91cd, unchanged on main at bbb05d4b), and the Python in-process
  provider openfeature-provider-flagd 0.5.x (openfeature-flagd-core 1.0.0);
- `flagd-v3`: openfeature-provider-flagd 0.6.x (openfeature-flagd-core 2.0.0, CBOR hashing),
  and flagd (Go) once PR #2011 (head 5b3c62a8, not merged at bbb05d4b) is released.
Given to the other kind of evaluator, a partial rollout still splits in the same proportions,
but among different users (about half of them change sides at 50%).

The values agree everywhere; some reasons and edge cases cannot, flagd being flagd:
- a partial rollout without a targeting key is an error here, the default (off) in flagd;
- flagd reports TARGETING_MATCH where the engine says SPLIT, and STATIC for a flag at 0%
  without rules where the engine says DEFAULT;
- a killed or disabled flag is `"state": "DISABLED"`, which flagd >= 0.16 answers with reason
  DISABLED and the caller's default value rather than the off variant.
Segments are written out as the members' targeting keys, so the file stands alone.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from services.flags.bucketing import DEFAULT_SCHEME, TOTAL_WEIGHT, BucketingScheme, rollout_weight
from services.flags.types import AttributeRule, Flag, FlagError, Segment

FLAGD_SCHEMA = "https://flagd.dev/schema/v0/flags.json"
# The flag-set metadata key that names the bucketing scheme the file was written for.
BUCKETING_METADATA_KEY = "bucketing"
_TARGETING_KEY = {"var": "targetingKey"}
_INTEGER_RE = re.compile(r"-?[0-9]{1,19}")


class FlagdExportError(FlagError, ValueError):
    """A flag that flagd's format cannot express (e.g. variants of mixed types)."""


def export_flagd(
    flags: Iterable[Flag],
    segments: Mapping[str, Segment | Iterable[str]],
    scheme: BucketingScheme = DEFAULT_SCHEME,
) -> dict[str, Any]:
    """A flagd flag-definition document (a dict ready for json.dumps) for these flags, for
    the flagd evaluators that bucket by `scheme` (see the module docstring)."""
    scheme = BucketingScheme(scheme)  # refuses an unknown name before anything is written
    members = {
        name: found if isinstance(found, Segment) else Segment(frozenset(str(m) for m in found))
        for name, found in segments.items()
    }
    document: dict[str, Any] = {
        "$schema": FLAGD_SCHEMA,
        "metadata": {BUCKETING_METADATA_KEY: scheme.value},
        "flags": {},
    }
    for flag in sorted(flags, key=lambda f: f.key):
        document["flags"][flag.key] = _flag(flag, members)
    return document


def _flag(flag: Flag, segments: Mapping[str, Segment]) -> dict[str, Any]:
    kinds = {type(value) for value in flag.variants.values()}
    if len(kinds) != 1:
        raise FlagdExportError(f"{flag.key}: flagd needs variants of one type")
    for variant in (flag.on_variant, flag.off_variant):
        if variant not in flag.variants:
            raise FlagdExportError(f"{flag.key}: no variant {variant!r}")
    entry: dict[str, Any] = {
        "state": "ENABLED" if flag.enabled and not flag.killed else "DISABLED",
        "variants": dict(flag.variants),
        "defaultVariant": flag.off_variant,
    }
    targeting = targeting_rule(flag, segments)
    if isinstance(targeting, str):
        entry["defaultVariant"] = targeting  # no rule needed: the same variant for everyone
    else:
        entry["targeting"] = targeting
    metadata: dict[str, str | int] = {"version": flag.version}
    if flag.description:
        metadata["description"] = flag.description
    entry["metadata"] = metadata
    return entry


def targeting_rule(flag: Flag, segments: Mapping[str, Segment]) -> dict[str, Any] | str:
    """The flag's targeting as JSONLogic, or just a variant name when it is the same for all."""
    t, on, off = flag.targeting, flag.on_variant, flag.off_variant
    branches: list[tuple[dict[str, Any], str]] = []
    if t.excluded_users:
        branches.append(({"in": [_TARGETING_KEY, sorted(t.excluded_users)]}, off))
    if t.excluded_chats:
        branches.append(({"in": [{"var": "chat_id"}, _id_forms(t.excluded_chats)]}, off))
    if t.chat_types:
        branches.append(({"!": [{"in": [{"var": "chat_type"}, sorted(t.chat_types)]}]}, off))
    always = set(t.user_ids)
    ruled: list[dict[str, Any]] = []
    for name in t.segments:
        segment = segments.get(name)
        if segment is not None:
            always.update(segment.keys)
            if segment.rules:
                ruled.append({"and": [_attribute_rule(rule) for rule in segment.rules]})
    if flag.rollout_percent < 100 or flag.split:  # at 100 they are on anyway
        if always:
            branches.append(({"in": [_TARGETING_KEY, sorted(always)]}, on))
        branches += [(condition, on) for condition in ruled]
    rule: dict[str, Any] | str = _rollout(flag)
    # Nested rather than one chained `if`: every JSONLogic implementation reads it the same.
    for condition, variant in reversed(branches):
        rule = {"if": [condition, variant, rule]}
    return rule


def _attribute_rule(rule: AttributeRule) -> dict[str, Any]:
    """A segment's rule as JSONLogic; ids match as text or number, as in the engine."""
    var = {"var": rule.attribute}
    if rule.op in ("in", "not_in"):
        test: dict[str, Any] = {"in": [var, _id_forms(rule.values)]}
        return test if rule.op == "in" else {"!": [test]}
    return {"or": [{rule.op: [var, value]} for value in rule.values]}  # starts_/ends_with


def _rollout(flag: Flag) -> dict[str, Any] | str:
    if flag.split:  # a multi-variant flag: its weights, bucketed as a rollout is
        live = [(variant, weight) for variant, weight in flag.split if weight > 0]
        if len(live) == 1:
            return live[0][0]
        return {"fractional": [[variant, weight] for variant, weight in live]}
    percent = flag.rollout_percent
    if percent >= 100:
        return flag.on_variant
    if not percent > 0:
        return flag.off_variant
    weight = rollout_weight(percent)
    # No bucketing value given: the evaluator's default over the flag key and the targeting
    # key, which is what bucketing.py computes for the scheme that evaluator implements.
    return {"fractional": [[flag.on_variant, weight], [flag.off_variant, TOTAL_WEIGHT - weight]]}


def _id_forms(ids: Iterable[str]) -> list[str | int]:
    """Each id as text and, if numeric, as a number: a JSON context may send either."""
    forms: list[str | int] = []
    for ident in sorted(ids):
        forms.append(ident)
        if _INTEGER_RE.fullmatch(ident):
            forms.append(int(ident))
    return forms


def write_flagd_file(path: Path, document: Mapping[str, Any]) -> None:
    """Write the document so readers see the old file or the new one, never a part.

    Blocking (it fsyncs): from async code, run it with `asyncio.to_thread`.
    """
    path = Path(path)
    data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")
    try:
        mode = path.stat().st_mode & 0o777  # keep the permissions flagd was given
    except FileNotFoundError:
        mode = 0o644  # flag definitions are not secret; flagd may run as another user
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)
