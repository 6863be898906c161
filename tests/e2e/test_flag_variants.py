"""Multi-variant flags (string, number, JSON) with weighted, sticky splits: declared in the
ops file, served over OFREP with their own types to the real OpenFeature SDK, re-weighted from
the chat, and exported to flagd, whose own Python provider serves every key the same."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from openfeature import api
from openfeature.evaluation_context import EvaluationContext as SdkContext

from bot.dev.sandbox import SandboxClient
from services.flags.bucketing import BucketingScheme
from services.flags.flagd import export_flagd, write_flagd_file
from services.flags.types import EvaluationContext
from tests.e2e.conftest import BOB, CAROL, DEPLOYS, OPS_TEXT, OfrepClient, StartOpsgate

API_TOKEN = "variants-e2e-token"
FLAGS = """
[flags]
bucketing = "flagd-v3"
[flags.banner]
description = "which banner colour"
variants = { blue = "blue", green = "green", red = "red" }
split = { blue = 70, green = 20, red = 10 }
default = "blue"
[flags.page_size]
variants = { small = 10, large = 100 }
split = { small = 50, large = 50 }
default = "small"
[flags.layout]
variants = { wide = { columns = 3, dense = false }, narrow = { columns = 1, dense = true } }
split = { wide = 1, narrow = 1 }
default = "narrow"
"""


def keys(count: int) -> list[str]:
    return [f"user-{i}" if i % 3 else f"Пользователь-{i}-🙂" for i in range(count)]


async def test_a_three_variant_string_flag_is_split_by_its_weights_and_served_typed(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path, ofrep_client: OfrepClient
) -> None:
    ops_file.write_text(FLAGS + OPS_TEXT)
    opsgate = await start_opsgate(api_token=API_TOKEN)
    source = opsgate.services.flag_source

    # The shares over 100,000 keys, through the same evaluation OFREP serves.
    shares = Counter(
        source.evaluate("banner", EvaluationContext(key)).value for key in keys(100_000)
    )
    for variant, weight in (("blue", 70), ("green", 20), ("red", 10)):
        assert abs(shares[variant] / 1000 - weight) < 0.5, shares

    # Over HTTP to the real SDK, typed: every key gets what the engine gives it.
    sdk = ofrep_client(opsgate, API_TOKEN)

    def served(key: str) -> tuple[str, int, dict[str, object]]:
        ctx = SdkContext(key)
        colour = sdk.get_string_details("banner", "none", ctx)
        size = sdk.get_integer_details("page_size", 0, ctx)
        layout = sdk.get_object_details("layout", {}, ctx)
        for details in (colour, size, layout):
            assert details.error_code is None, details.error_message
            assert details.reason == "SPLIT"
        return colour.value, size.value, layout.value  # type: ignore[return-value]

    sample = keys(1_500)
    answers = await asyncio.to_thread(lambda: [served(k) for k in sample])
    for key, (colour, size, layout) in zip(sample, answers, strict=True):
        ctx = EvaluationContext(key)
        assert colour == source.evaluate("banner", ctx).value
        assert size == source.evaluate("page_size", ctx).value
        assert layout == source.evaluate("layout", ctx).value
    assert {size for _, size, _ in answers} == {10, 100}
    assert {layout["columns"] for _, _, layout in answers} == {1, 3}  # type: ignore[index]
    mismatch = await asyncio.to_thread(
        sdk.get_boolean_details, "banner", False, SdkContext("user-1")
    )
    assert mismatch.error_code == "TYPE_MISMATCH" and mismatch.value is False

    # Re-weighted from the chat: red is served to nobody any more, the rest stay sticky.
    moved = await client.reply_after(CAROL, DEPLOYS, "/flag banner split blue=50,green=50,red=0")
    assert moved.text == (
        "🚩 banner changed by carol:\n• split: blue=70,green=20,red=10 → blue=50,green=50,red=0"
    )
    after = Counter(source.evaluate("banner", EvaluationContext(key)).value for key in keys(20_000))
    assert after["red"] == 0 and abs(after["blue"] / 200 - 50) < 1.5
    refused = await client.reply_after(CAROL, DEPLOYS, "/flag banner 25")
    assert refused.text == "⚠️ banner has variants: set its split instead. Nothing was changed."
    shown = (await client.reply_after(BOB, DEPLOYS, "/flag banner")).text
    assert shown.startswith("🟢 blue 50% · green 50% · red 0% banner (version")
    assert '(variants: blue = "blue", green = "green", red = "red";' in shown
    assert "2. everyone: blue 50% · green 50% · red 0%, sticky per user" not in shown
    assert "1. everyone: blue 50% · green 50% · red 0%, sticky per user" in shown


async def test_flagds_own_provider_serves_the_exported_variants_alike(
    start_opsgate: StartOpsgate, ops_file: Path, tmp_path: Path
) -> None:
    from openfeature.contrib.provider.flagd import FlagdProvider
    from openfeature.contrib.provider.flagd.config import ResolverType

    ops_file.write_text(FLAGS + OPS_TEXT)
    opsgate = await start_opsgate(api_token=API_TOKEN)
    source = opsgate.services.flag_source
    flags = await opsgate.services.flags.all()
    path = tmp_path / "flags.json"
    write_flagd_file(path, export_flagd(flags, {}, scheme=BucketingScheme.V3))
    provider = FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=str(path))
    api.set_provider_and_wait(provider, "variants-flagd")
    flagd = api.get_client("variants-flagd")
    try:
        for key in keys(3_000):
            ctx = EvaluationContext(key)
            assert flagd.get_string_value("banner", "none", SdkContext(key)) == (
                source.evaluate("banner", ctx).value
            )
            assert flagd.get_integer_value("page_size", 0, SdkContext(key)) == (
                source.evaluate("page_size", ctx).value
            )
    finally:
        provider.shutdown()
        api.clear_providers()
