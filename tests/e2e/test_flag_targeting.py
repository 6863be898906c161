"""Flag targeting set from the chat, the API and the ops file, and read back by the real
OpenFeature SDK with its OFREP provider against the running opsgate: segments, chat types,
exclusions and their removal, the allow list. Every reply says exactly what moved."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext as SdkContext

from bot.dev.sandbox import SandboxClient
from services.flags.bucketing import BucketingScheme, in_rollout
from tests.e2e.conftest import ALICE, BOB, CAROL, DEPLOYS, OPS_TEXT, OfrepClient, StartOpsgate

API_TOKEN = "targeting-e2e-token"
FLAGS = """
[segments]
beta = ["u-beta", 1002]
[segments.groups]
rules = [{ attribute = "chat_type", op = "in", values = ["group", "supergroup"] },
         { attribute = "chat_id", op = "not_in", values = [-100999] }]
[flags.checkout]
description = "new checkout"
[flags.vip_only]
allow = ["u-vip"]
chat_types = ["private"]
exclude_chats = [-100500]
"""
GROUP, PRIVATE = {"chat_type": "group", "chat_id": -100400}, {"chat_type": "private"}


async def value(client: OpenFeatureClient, flag: str, user: str, attrs: dict[str, Any]) -> bool:
    details = await asyncio.to_thread(
        client.get_boolean_details, flag, False, SdkContext(user, attrs)
    )
    assert details.error_code is None, details.error_message
    return bool(details.value)


async def test_targeting_from_chat_and_api_is_what_the_sdk_gets(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path, ofrep_client: OfrepClient
) -> None:
    ops_file.write_text(FLAGS + OPS_TEXT)
    opsgate = await start_opsgate(api_token=API_TOKEN)
    of = ofrep_client(opsgate, API_TOKEN)
    assert not await value(of, "checkout", "u-beta", GROUP)  # 0%, no targeting

    async def chat(text: str) -> str:
        return (await client.reply_after(CAROL, DEPLOYS, f"/flag checkout {text}")).text

    assert await chat("segment add beta") == "🚩 checkout changed by carol:\n• segments: + beta"
    assert await value(of, "checkout", "u-beta", GROUP)
    assert await value(of, "checkout", "1002", GROUP)  # a whole number in the file
    assert not await value(of, "checkout", "u-other", GROUP)

    refused = await chat("segment add nope")
    assert refused.startswith("⚠️ unknown segment 'nope' (known: beta, groups).")
    assert refused.endswith("Nothing was changed.")

    assert await chat("chats group,supergroup") == (
        "🚩 checkout changed by carol:\n• chat types: + group + supergroup"
    )
    assert not await value(of, "checkout", "u-beta", PRIVATE)
    assert await value(of, "checkout", "u-beta", GROUP)

    assert await chat("exclude user u-beta") == (
        "🚩 checkout changed by carol:\n• excluded users: + u-beta"
    )
    assert not await value(of, "checkout", "u-beta", GROUP)
    assert await chat("unexclude user u-beta") == (
        "🚩 checkout changed by carol:\n• excluded users: − u-beta"
    )
    assert await value(of, "checkout", "u-beta", GROUP)

    assert await chat("exclude chat -100400") == (
        "🚩 checkout changed by carol:\n• excluded chats: + -100400"
    )
    assert not await value(of, "checkout", "u-beta", GROUP)
    await chat("unexclude chat -100400")
    assert await value(of, "checkout", "u-beta", GROUP)

    assert await chat("allow u-vip") == "🚩 checkout changed by carol:\n• always on: + u-vip"
    assert await value(of, "checkout", "u-vip", GROUP)
    assert await chat("disallow u-vip") == "🚩 checkout changed by carol:\n• always on: − u-vip"
    assert not await value(of, "checkout", "u-vip", GROUP)
    again = await chat("disallow u-vip")
    assert again == "🚩 checkout is already so (0%); nothing changed."

    shown = (await client.reply_after(BOB, DEPLOYS, "/flag checkout")).text
    assert "Who gets it (first match wins)" in shown
    assert "1. chats not of type group, supergroup: off" in shown
    assert "2. segment beta (2 member(s)): on" in shown
    assert "3. everyone else: 0%, sticky per user" in shown

    refused_role = await client.reply_after(BOB, DEPLOYS, "/flag checkout chats all")
    assert refused_role.text.startswith("⛔")

    base = f"http://127.0.0.1:{opsgate.http_port}/api/flags/checkout"
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    before = await opsgate.services.flags.get("checkout")
    async with httpx.AsyncClient(headers=auth) as http:
        bad = await http.post(base, json={"action": "chats", "chat_types": ["groups"],
                                          "requested_by": CAROL})  # fmt: skip
        assert bad.status_code == 422 and "unknown chat type groups" in bad.json()["error"]
        no_role = await http.post(base, json={"action": "segment_remove", "segment": "beta",
                                              "requested_by": BOB})  # fmt: skip
        assert no_role.status_code == 403
        assert await opsgate.services.flags.get("checkout") == before
        removed = await http.post(base, json={"action": "segment_remove", "segment": "beta",
                                              "requested_by": CAROL})  # fmt: skip
        assert removed.status_code == 200, removed.text
        assert removed.json()["targeting"]["segments"] == []
        every = await http.post(base, json={"action": "chats", "chat_types": [],
                                            "requested_by": CAROL})  # fmt: skip
        assert every.json()["targeting"]["chat_types"] == []
    assert not await value(of, "checkout", "u-beta", GROUP)

    # A segment of rules on the context: any user, in a group that is not -100999.
    assert await chat("segment add groups") == "🚩 checkout changed by carol:\n• segments: + groups"
    assert await value(of, "checkout", "u-anyone", GROUP)
    assert not await value(of, "checkout", "u-anyone", PRIVATE)
    assert not await value(of, "checkout", "u-anyone", {"chat_type": "group", "chat_id": "-100999"})
    shown = (await client.reply_after(BOB, DEPLOYS, "/flag checkout")).text
    assert "segment groups (chat_type in group, supergroup and chat_id not in -100999): on" in shown


async def test_an_ops_file_gives_a_new_flag_its_first_targeting(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path, ofrep_client: OfrepClient
) -> None:
    ops_file.write_text(FLAGS + OPS_TEXT)
    opsgate = await start_opsgate(api_token=API_TOKEN)
    of = ofrep_client(opsgate, API_TOKEN)
    assert await value(of, "vip_only", "u-vip", PRIVATE)
    assert not await value(of, "vip_only", "u-vip", GROUP)  # only private chats
    assert not await value(of, "vip_only", "u-vip", {**PRIVATE, "chat_id": -100500})
    assert not await value(of, "vip_only", "u-other", PRIVATE)
    changes = await opsgate.services.flags.changes("vip_only")
    assert {c.actor for c in changes} == {"opsfile"}


async def test_rollouts_bucket_by_the_ops_files_scheme_and_a_rebucketing_reload_is_refused(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    flagd_file = ops_file.parent / "flagd.json"
    head = f'[bot]\nplan_check_s = 0.1\nflagd_file = "{flagd_file}"\n'
    ops_file.write_text(head + '[flags]\nbucketing = "flagd-v3"\n' + FLAGS + OPS_TEXT)
    opsgate = await start_opsgate(api_token=API_TOKEN)
    await client.reply_after(CAROL, DEPLOYS, "/flag checkout 50")
    keys = [f"user-{i}" for i in range(300)] + ["u2@example.com", "Жанна", "用户", "🙂", "e\u0301"]
    url = f"http://127.0.0.1:{opsgate.http_port}/ofrep/v1/evaluate/flags/checkout"

    async def served() -> dict[str, bool]:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {API_TOKEN}"}) as http:
            answers = [await http.post(url, json={"context": {"targetingKey": k}}) for k in keys]
        return {k: a.json()["value"] for k, a in zip(keys, answers, strict=True)}

    seen = await served()
    assert seen == {k: in_rollout("checkout", k, 50, BucketingScheme.V3) for k in keys}
    moved = sum(seen[k] != in_rollout("checkout", k, 50, BucketingScheme.V2) for k in keys)
    assert moved > 50  # the schemes differ: this test would see the wrong one
    for _ in range(100):  # the plan job writes the flagd file every 0.1 s
        if flagd_file.exists() and "checkout" in flagd_file.read_text():
            break
        await asyncio.sleep(0.1)
    assert json.loads(flagd_file.read_text())["metadata"]["bucketing"] == "flagd-v3"

    ops_file.write_text(head + FLAGS + OPS_TEXT)  # back to the default, flagd-v2
    refused = (await client.reply_after(ALICE, DEPLOYS, "/reload")).text
    assert refused == (
        "⚠️ Kept the old ops file: [flags] bucketing flagd-v3 → flagd-v2 would move users in"
        " and out of the rollouts of checkout: take them to 0 or 100% first, or set [flags]"
        " bucketing_force = true."
    )
    assert opsgate.services.ops.flag_bucketing == "flagd-v3"
    assert await served() == seen


async def test_what_ofrep_served_is_counted_on_metrics_and_shown_per_variant(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    ops_file.write_text(FLAGS + OPS_TEXT)
    opsgate = await start_opsgate(api_token=API_TOKEN)
    await client.reply_after(CAROL, DEPLOYS, "/flag checkout 50")
    base = f"http://127.0.0.1:{opsgate.http_port}"
    users = [f"user-{i}" for i in range(40)]
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {API_TOKEN}"}
    ) as http:
        for user in [*users, *users]:  # each user twice: 80 evaluations, 40 users
            await http.post(
                "/ofrep/v1/evaluate/flags/checkout", json={"context": {"targetingKey": user}}
            )
        metrics = (await http.get("/metrics")).text
    on = [u for u in users if in_rollout("checkout", u, 50)]
    series = 'opsgate_flag_evaluations_total{{flag="checkout",reason="SPLIT",variant="{}"}} {}'
    assert series.format("on", f"{2 * len(on)}.0") in metrics
    off = len(users) - len(on)
    assert series.format("off", f"{2 * off}.0") in metrics
    shown = (await client.reply_after(BOB, DEPLOYS, "/flag checkout")).text
    assert (
        f"Served in the last hour: off to {off} user(s) ({2 * off} evaluation(s))"
        f" · on to {len(on)} user(s) ({2 * len(on)} evaluation(s))"
    ) in shown
