"""Flag evaluation: pure and synchronous, one flag and one context in, one answer out.

Rules, first match wins:

     1. no such flag                              -> error FLAG_NOT_FOUND
     2. context not valid                         -> error INVALID_CONTEXT
     3. killed, or not enabled                    -> off, DISABLED
     4. the user (targeting key) or chat excluded -> off, TARGETING_MATCH
     5. chat types set and the chat's not among   -> off, TARGETING_MATCH
     6. the user listed, or in a listed segment   -> on,  TARGETING_MATCH
        (a segment: its keys, or a context matching all its attribute rules)
     7. rollout 100                               -> on,  STATIC or TARGETING_MATCH (below)
     8. rollout 0                                 -> off, DEFAULT
     9. no targeting key                          -> error TARGETING_KEY_MISSING
    10. the user's sticky bucket (bucketing.py)   -> on or off, SPLIT
        (a multi-variant flag: its split's variant for that bucket, SPLIT, from rule 7 on)

The user is the targeting key; the chat is the `chat_id` attribute (compared as text, so
-1001 and "-1001" are the same chat) and its type the `chat_type` attribute.

At 100 the reason is STATIC only when the flag has no exclusions and no chat types, i.e. when
every context gets the same answer. OpenFeature defines STATIC as "no dynamic evaluation", and
flagd's providers cache STATIC answers per flag, ignoring the context: saying STATIC for a flag
that still excludes someone would let such a cache hand them the on value.

Segment names with no entry in `segments` (say, removed from the ops file) match nobody.

Speed: OFREP calls this once per request, so the hot path avoids what is dear in CPython 3.11
without changing an answer: answers are built once per flag and handed out again (`_resolve`),
enum members are looked up once (module constants below), and a plain dict of attributes skips
the `Mapping` ABC check.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from config.inventory import SegmentDecl
from services.flags.bucketing import DEFAULT_SCHEME, BucketingScheme, in_rollout, split_variant
from services.flags.types import (
    MAX_TARGETING_KEY_LENGTH,
    AttributeRule,
    ErrorCode,
    Evaluation,
    EvaluationContext,
    Flag,
    Reason,
    Segment,
)

Segments = Mapping[str, Segment]

# Looked up once: on Python 3.11 each `Reason.SPLIT` is a descriptor call.
_STATIC, _DEFAULT, _TARGETING_MATCH = Reason.STATIC, Reason.DEFAULT, Reason.TARGETING_MATCH
_SPLIT, _DISABLED = Reason.SPLIT, Reason.DISABLED


def segment_sets(raw: Mapping[str, Iterable[str]]) -> dict[str, Segment]:
    """Segments of keys only, as the engine wants them."""
    return {name: Segment(frozenset(str(m) for m in members)) for name, members in raw.items()}


def segments_of(declared: Mapping[str, SegmentDecl]) -> dict[str, Segment]:
    """The ops file's segments (keys and attribute rules) as the engine wants them."""
    return {
        name: Segment(
            frozenset(decl.keys),
            tuple(AttributeRule(r.attribute, r.op, tuple(r.values)) for r in decl.rules),
        )
        for name, decl in declared.items()
    }


def evaluate(
    flag: Flag | None,
    key: str,
    ctx: EvaluationContext,
    segments: Segments,
    scheme: BucketingScheme = DEFAULT_SCHEME,
) -> Evaluation:
    """Evaluate one flag (looked up by the caller under `key`) for one context."""
    if flag is None:
        return _error(key, ErrorCode.FLAG_NOT_FOUND, f"flag {key!r} not found")
    problem = context_problem(ctx)
    if problem is not None:
        return _error(key, ErrorCode.INVALID_CONTEXT, problem)
    return _evaluate(flag, key, ctx, segments, scheme)


def evaluate_all(
    flags: Iterable[Flag],
    ctx: EvaluationContext,
    segments: Segments,
    scheme: BucketingScheme = DEFAULT_SCHEME,
) -> list[Evaluation]:
    """Evaluate every flag for one context, in the order given; the context is checked once."""
    problem = context_problem(ctx)
    if problem is not None:
        return [_error(flag.key, ErrorCode.INVALID_CONTEXT, problem) for flag in flags]
    return [_evaluate(flag, flag.key, ctx, segments, scheme) for flag in flags]


def context_problem(ctx: EvaluationContext) -> str | None:
    """Why the context cannot be evaluated, or None when it can."""
    targeting_key: object = ctx.targeting_key
    if targeting_key is not None:
        if not isinstance(targeting_key, str):
            return "targeting key must be a string"
        if len(targeting_key) > MAX_TARGETING_KEY_LENGTH:
            return f"targeting key is longer than {MAX_TARGETING_KEY_LENGTH} characters"
        if not targeting_key.isascii():
            try:
                targeting_key.encode("utf-8")  # lone surrogates cannot be hashed
            except UnicodeEncodeError:
                return "targeting key is not valid Unicode text"
    attributes: object = ctx.attributes
    if type(attributes) is not dict and not isinstance(attributes, Mapping):  # dict: no ABC
        return "context attributes must be an object"
    for name, value in attributes.items():
        if not isinstance(name, str):
            return "context attribute names must be strings"
        if value is None or isinstance(value, (str, int)):  # bool is an int
            continue
        if isinstance(value, float) and math.isfinite(value):
            continue
        return f"context attribute {name[:64]!r} must be a string, number, boolean or null"
    return None


def _evaluate(
    flag: Flag, key: str, ctx: EvaluationContext, segments: Segments, scheme: BucketingScheme
) -> Evaluation:
    if flag.killed or not flag.enabled:
        return _resolve(flag, key, flag.off_variant, _DISABLED)
    targeting = flag.targeting
    user = ctx.targeting_key or None  # an empty key identifies nobody
    if user is not None and user in targeting.excluded_users:
        return _resolve(flag, key, flag.off_variant, _TARGETING_MATCH)
    if targeting.excluded_chats:
        chat = id_text(ctx.attributes.get("chat_id"))
        if chat is not None and chat in targeting.excluded_chats:
            return _resolve(flag, key, flag.off_variant, _TARGETING_MATCH)
    if targeting.chat_types and ctx.attributes.get("chat_type") not in targeting.chat_types:
        return _resolve(flag, key, flag.off_variant, _TARGETING_MATCH)
    if (user is not None and user in targeting.user_ids) or (
        targeting.segments and _in_a_segment(targeting.segments, segments, user, ctx)
    ):
        return _resolve(flag, key, flag.on_variant, _TARGETING_MATCH)
    if flag.split:  # a multi-variant flag: its weights, bucketed as a rollout is
        if user is None:
            return _error(key, ErrorCode.TARGETING_KEY_MISSING, "a split needs a targeting key")
        variant = split_variant(flag.key, user, flag.split, scheme)
        return _resolve(flag, key, variant or flag.off_variant, _SPLIT)
    percent = flag.rollout_percent
    if percent >= 100:
        same_for_all = not (
            targeting.excluded_users or targeting.excluded_chats or targeting.chat_types
        )
        reason = _STATIC if same_for_all else _TARGETING_MATCH
        return _resolve(flag, key, flag.on_variant, reason)
    if not percent > 0:  # also NaN: a broken definition rolls out to nobody
        return _resolve(flag, key, flag.off_variant, _DEFAULT)
    if user is None:
        return _error(
            key, ErrorCode.TARGETING_KEY_MISSING, "a partial rollout needs a targeting key"
        )
    on = in_rollout(flag.key, user, percent, scheme)  # the weights the flagd export writes
    return _resolve(flag, key, flag.on_variant if on else flag.off_variant, _SPLIT)


def _in_a_segment(
    names: Iterable[str], segments: Segments, user: str | None, ctx: EvaluationContext
) -> bool:
    for name in names:
        segment = segments.get(name)
        if segment is not None and segment.matches(user, ctx.attributes):
            return True
    return False


def id_text(value: object) -> str | None:
    """A chat or user id as text: -1001, -1001.0 and "-1001" are one id; bools are none."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else None
    if isinstance(value, str):
        return value
    return None


# Answers are immutable and a flag has only a few (a variant and a reason each), so each is
# built once per Flag object and handed out again: building the frozen dataclass costs more
# than the rest of an evaluation. A Flag is never changed in place (every change makes a new
# one), so its id names its answers; the entry holds the Flag, so the id cannot be reused while
# the entry lives. Cleared whole when full: old Flags are let go, and answers rebuilt.
_answers: dict[tuple[int, str, str, Reason], tuple[Flag, Evaluation]] = {}
_MAX_ANSWERS = 4096


def _resolve(flag: Flag, key: str, variant: str, reason: Reason) -> Evaluation:
    memo = (id(flag), key, variant, reason)
    known = _answers.get(memo)
    if known is not None and known[0] is flag:
        return known[1]
    value = flag.variants.get(variant)
    if value is None:
        return _error(key, ErrorCode.GENERAL, f"flag {key!r} has no variant {variant!r}")
    answer = Evaluation(key=key, value=value, variant=variant, reason=reason)
    if len(_answers) >= _MAX_ANSWERS:
        _answers.clear()
    _answers[memo] = (flag, answer)
    return answer


def _error(key: str, code: ErrorCode, message: str) -> Evaluation:
    return Evaluation(
        key=key,
        value=None,
        variant=None,
        reason=Reason.ERROR,
        error_code=code,
        error_message=message,
    )
