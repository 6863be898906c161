"""flagd's own evaluators against opsgate's bucketing, over 100,000 targeting keys.

- `flagd-v2`: the exported file (read back as JSON, numbers as Go's float64) evaluated by
  `go_fractional`, flagd's Go `fractional.go` rewritten here line by line, for flags at 5, 25
  and 50%, against the engine's own evaluation (which buckets by v2).
- `flagd-v3`: the exported file loaded by the REAL flagd Python in-process provider
  (openfeature-provider-flagd 0.6.1, file mode, openfeature-flagd-core 2.0.0) behind the real
  OpenFeature SDK client: every one of the 100,000 keys is evaluated through the SDK for each
  of the three flags (no shortcut through flagd-core's `fractional`), against
  `in_rollout(..., scheme=flagd-v3)`. The engine itself is not scheme-aware yet.
Both directions can fail: the tests also count how many keys each flagd evaluator puts on the
other side when given the other scheme's file, and require that to be many.

Two thirds of the keys are not ASCII (Cyrillic, CJK, emoji with ZWJ sequences, combining
marks), and their lengths cross CBOR's one- and two-byte length heads (24 and 256 bytes).
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mmh3
import pytest

from bot.dev.harness.daemons import require
from services.flags.bucketing import BucketingScheme, cbor_text_array, in_rollout
from services.flags.engine import evaluate
from services.flags.flagd import export_flagd, write_flagd_file
from services.flags.types import AttributeRule, EvaluationContext, Flag, Segment, Targeting

try:
    import cbor2
    from openfeature import api
    from openfeature.contrib.provider.flagd import FlagdProvider
    from openfeature.contrib.provider.flagd.config import ResolverType
    from openfeature.evaluation_context import EvaluationContext as OFContext
    from openfeature.flag_evaluation import Reason as OFReason
    from openfeature.provider import ProviderStatus

    MISSING = None
except ImportError as error:  # the dev extra installs it: pip install -e '.[dev]'
    MISSING = f"openfeature-provider-flagd is not installed ({error}); run make install"

V2, V3 = BucketingScheme.V2, BucketingScheme.V3
# Flag keys of 11, 10 and 30 bytes: CBOR heads of one byte and of two.
FLAGS = [
    Flag("checkout_v2", enabled=True, rollout_percent=5.0),
    Flag("new_search", enabled=True, rollout_percent=25.0),
    Flag("payments.retry-with-backoff_v3", enabled=True, rollout_percent=50.0),
]
COUNT = 100_000


def targeting_keys(count: int = COUNT) -> list[str]:
    forms = (
        lambda i: f"user-{i}",
        lambda i: f"u{i}@example.com",
        lambda i: f"пользователь-{i}",  # Cyrillic
        lambda i: f"用户{i}号",  # CJK
        lambda i: f"😀{i}👩\u200d💻🏳️\u200d🌈",  # emoji, ZWJ sequences
        lambda i: f"e\u0301{i}a\u0308\u0323",  # combining marks
        lambda i: f"{i}:" + "ж" * (i % 140),  # 2 to about 290 bytes
    )
    return [forms[i % len(forms)](i) for i in range(count)]


KEYS = targeting_keys()


def test_the_keys_are_what_the_docstring_says() -> None:
    assert len(set(KEYS)) == COUNT
    non_ascii = sum(not key.isascii() for key in KEYS)
    assert non_ascii > COUNT * 0.6
    sizes = {len(key.encode()) for key in KEYS}
    assert min(sizes) < 24 <= 255 < 256 < max(sizes)


# --- flagd-v2: flagd's Go evaluator ---------------------------------------------------------
# Rewritten from open-feature/flagd core/pkg/evaluator/fractional.go at commit
# bbb05d4bc3903ea8bf5123a88b1cf558750a22ab (main, 2026-07-31; the file last changed in
# 670c91cdca80c29fd1cee378d1ea228c4ef36935 and is the same in flagd/v0.16.1). Go's
# murmur3.StringSum32 is MurmurHash3 x86_32 seed 0 over the string's bytes (UTF-8 from JSON).
MAX_INT32 = 2**31 - 1


def go_fractional(values: Any, data: dict[str, Any]) -> Any:
    """(*Fractional).Evaluate: a variant, or None (Go's nil) on any error."""
    # parseFractionalEvaluationData
    if not isinstance(values, list) or len(values) < 1:
        return None
    flag_key = data["$flagd"]["flagKey"]
    if isinstance(values[0], str):
        bucket_by, values = values[0], values[1:]
    else:
        if values[0] is None:
            values = values[1:]
        targeting_key = data.get("targetingKey")
        if targeting_key is None or not isinstance(targeting_key, str) or targeting_key == "":
            return None
        bucket_by = f"{flag_key}{targeting_key}"  # fmt.Sprintf("%s%s", ...)
    # parseFractionalEvaluationDistributions
    weighted: list[tuple[Any, int]] = []
    total = 0
    for distribution in values:
        if not isinstance(distribution, list) or not distribution:
            return None
        variant = distribution[0]
        if not (variant is None or isinstance(variant, str | bool | float)):
            return None
        weight = 1
        if len(distribution) >= 2:
            raw = distribution[1]
            if isinstance(raw, float):
                if raw != float(int(raw)):
                    return None  # "weights must be integers"
                weight = int(raw)
            elif raw is not None:
                return None  # "weight must be a number"
        if weight > MAX_INT32:
            return None
        weight = max(weight, 0)  # negative weights clamped to 0
        total += weight
        weighted.append((variant, weight))
    if total > MAX_INT32:
        return None
    hash_value = mmh3.hash(bucket_by.encode("utf-8"), 0, signed=False)  # uint32(StringSum32)
    # distributeValue
    if total == 0:
        return None
    bucket = (hash_value * total) >> 32  # uint64: hash < 2**32, total < 2**31, no overflow
    range_end = 0
    for variant, weight in weighted:
        range_end += weight
        if bucket < range_end:
            return variant
    return None


def go_resolve(document: dict[str, Any], flag_key: str, targeting_key: str) -> Any:
    """flagd's value for a flag whose targeting is a bare `fractional` (what the export
    writes for a partial rollout without rules)."""
    entry = document["flags"][flag_key]
    assert entry["state"] == "ENABLED"
    [(operator, args)] = entry["targeting"].items()
    assert operator == "fractional"
    data = {"targetingKey": targeting_key, "$flagd": {"flagKey": flag_key}}
    variant = go_fractional(args, data)
    return entry["variants"][entry["defaultVariant"] if variant is None else variant]


def as_go_reads_it(document: dict[str, Any]) -> dict[str, Any]:
    """The document through JSON, numbers as float64 the way encoding/json gives them."""
    loaded: dict[str, Any] = json.loads(json.dumps(document), parse_int=float)
    return loaded


def test_go_fractional_matches_the_testbed_v2_vectors() -> None:
    # flagd-testbed, evaluator/gherkin/fractional.feature @fractional-v2: the rewrite is flagd.
    suits = [["clubs", 25.0], ["diamonds", 25.0], ["hearts", 25.0], ["spades", 25.0]]
    data = {"$flagd": {"flagKey": "fractional-flag"}}
    assert go_fractional(["fractional-flagjack", *suits], data) == "hearts"
    assert go_fractional(["fractional-flagnine", *suits], data) == "diamonds"
    shorthand = {"$flagd": {"flagKey": "fractional-flag-shorthand"}}
    heads_tails = [["heads"], ["tails", 1.0]]
    assert go_fractional(heads_tails, {**shorthand, "targetingKey": "jon@company.com"}) == "heads"
    assert go_fractional(heads_tails, {**shorthand, "targetingKey": "jane@company.com"}) == "tails"


@pytest.fixture(scope="module")
def v2_document() -> dict[str, Any]:
    return as_go_reads_it(export_flagd(FLAGS, {}, scheme=V2))


@pytest.mark.parametrize("flag", FLAGS, ids=lambda f: f"{f.rollout_percent:g}%")
def test_flagd_go_v2_and_opsgate_agree_on_every_key(
    v2_document: dict[str, Any], flag: Flag
) -> None:
    agree = on = 0
    for key in KEYS:
        ours = evaluate(flag, flag.key, EvaluationContext(key), {})
        theirs = go_resolve(v2_document, flag.key, key)
        agree += theirs == ours.value == in_rollout(flag.key, key, flag.rollout_percent, V2)
        on += theirs is True
    assert agree == COUNT
    assert abs(100 * on / COUNT - flag.rollout_percent) < 0.5  # the split really splits


def test_flagd_go_v2_disagrees_with_opsgate_v3(v2_document: dict[str, Any]) -> None:
    flag = FLAGS[2]  # 50%
    differ = sum(
        go_resolve(v2_document, flag.key, key) != in_rollout(flag.key, key, 50.0, V3)
        for key in KEYS
    )
    assert differ > COUNT * 0.45  # a v2 flagd given a v3 deployment: about half move


# --- flagd-v3: flagd's Python in-process provider ------------------------------------------


def test_cbor_encoder_agrees_with_cbor2_canonical() -> None:
    require(MISSING)
    # cbor2 is what openfeature-flagd-core 2.0.0 encodes with (`canonical=True`).
    for flag in FLAGS:
        for key in KEYS[:7000]:
            assert cbor_text_array((flag.key, key)) == cbor2.dumps([flag.key, key], canonical=True)


def start_provider(path: Path, domain: str) -> Iterator[Any]:
    require(MISSING)
    provider = FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=str(path))
    api.set_provider_and_wait(provider, domain)
    client = api.get_client(domain)
    assert client.get_provider_status() is ProviderStatus.READY
    try:
        yield client
    finally:
        provider.shutdown()  # stops the file watcher's thread at its next poll


@pytest.fixture(scope="module")
def v3_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    path = tmp_path_factory.mktemp("flagd-v3") / "flags.json"
    write_flagd_file(path, export_flagd(FLAGS, {}, scheme=V3))
    yield from start_provider(path, "opsgate-flagd-interop-v3")


@pytest.fixture(scope="module")
def v2_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    path = tmp_path_factory.mktemp("flagd-v2") / "flags.json"
    write_flagd_file(path, export_flagd(FLAGS, {}, scheme=V2))
    yield from start_provider(path, "opsgate-flagd-interop-v2")


def test_the_provider_reads_the_declared_scheme(v3_client: Any) -> None:
    details = v3_client.get_boolean_details("new_search", False, OFContext("u2@example.com"))
    assert details.error_code is None
    assert details.reason == OFReason.TARGETING_MATCH
    assert details.flag_metadata == {"bucketing": "flagd-v3", "version": 0}
    assert details.value is in_rollout("new_search", "u2@example.com", 25.0, V3)


@pytest.mark.parametrize("flag", FLAGS, ids=lambda f: f"{f.rollout_percent:g}%")
def test_flagd_python_provider_and_opsgate_v3_agree_on_every_key(
    v3_client: Any, flag: Flag
) -> None:
    agree = on = 0
    for key in KEYS:
        details = v3_client.get_boolean_details(flag.key, False, OFContext(key))
        ours = in_rollout(flag.key, key, flag.rollout_percent, V3)
        agree += details.error_code is None and details.value == ours
        on += details.value is True
    assert agree == COUNT
    assert abs(100 * on / COUNT - flag.rollout_percent) < 0.5


def test_flagd_python_provider_disagrees_with_opsgate_v2(v2_client: Any) -> None:
    flag = FLAGS[2]  # 50%
    differ = 0
    for key in KEYS:
        details = v2_client.get_boolean_details(flag.key, False, OFContext(key))
        assert details.error_code is None
        differ += details.value != in_rollout(flag.key, key, 50.0, V2)
    assert differ > COUNT * 0.45, f"only {differ} of {COUNT} keys on the other side"


def test_targeting_exported_to_flagd_answers_as_the_engine_does(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Exclusions, chat types, the allow list and segments of keys and of rules, read by the
    real flagd provider from opsgate's export, against opsgate's engine, context by context."""
    segments = {
        "beta": Segment(frozenset({"u-beta", "1002"})),
        "teams": Segment(
            frozenset(),
            (
                AttributeRule("chat_type", "in", ("group", "supergroup")),
                AttributeRule("chat_id", "not_in", ("-100999",)),
                AttributeRule("locale", "starts_with", ("en", "de")),
            ),
        ),
    }
    targeting = Targeting(
        user_ids=frozenset({"u-vip"}),
        segments=("beta", "teams"),
        chat_types=frozenset({"private", "group", "supergroup"}),
        excluded_chats=frozenset({"-100500"}),
        excluded_users=frozenset({"u-banned"}),
    )
    flag = Flag("targeted", enabled=True, rollout_percent=30.0, targeting=targeting)
    path = tmp_path_factory.mktemp("flagd-targeting") / "flags.json"
    write_flagd_file(path, export_flagd([flag], segments, scheme=V3))
    users = ["u-vip", "u-beta", "1002", "u-banned", "u-other", "u2@example.com", "Жанна"]
    contexts: list[dict[str, Any]] = [
        {},
        {"chat_type": "private"},
        {"chat_type": "channel"},
        {"chat_type": "group", "chat_id": -100400, "locale": "en-GB"},
        {"chat_type": "group", "chat_id": "-100400", "locale": "de"},
        {"chat_type": "supergroup", "chat_id": -100999, "locale": "en"},
        {"chat_type": "group", "chat_id": -100500, "locale": "en"},
        {"chat_type": "group", "chat_id": -100400, "locale": "fr"},
        {"chat_type": "group", "chat_id": -100400},
    ]
    for client in start_provider(path, "opsgate-flagd-targeting"):
        for user in users:
            for attributes in contexts:
                ours = evaluate(flag, flag.key, EvaluationContext(user, attributes), segments, V3)
                theirs = client.get_boolean_details(flag.key, False, OFContext(user, attributes))
                assert theirs.error_code is None, (user, attributes, theirs.error_message)
                assert theirs.value == ours.value, (user, attributes)
