"""/lock, /unlock and /locks through the real bot; a locked environment refuses deploys."""

from __future__ import annotations

import pytest

from bot.dev.sandbox import SandboxClient
from bot.runner import Opsgate
from services.deploy.deployments import EnvironmentLocked
from tests.e2e.conftest import ALICE, BOB, CAROL, DEPLOYS


async def test_lock_names_who_why_and_since_and_refuses_deploys(
    opsgate: Opsgate, client: SandboxClient
) -> None:
    refused = await client.reply_after(BOB, DEPLOYS, "/lock production freeze")
    assert refused.text.startswith("⛔ /lock needs the role sre.")
    locked = await client.reply_after(CAROL, DEPLOYS, "/lock production <b>Black Friday</b>")
    assert locked.text.startswith("🔒 production by carol since ")
    assert locked.text.endswith(": <b>Black Friday</b>\nDeploys there are refused until /unlock.")
    again = await client.reply_after(ALICE, DEPLOYS, "/lock production twice")
    assert again.text.startswith("⚠️ production is locked by carol since")  # a name, as /locks
    listed = await client.reply_after(BOB, DEPLOYS, "/locks")
    assert listed.text.startswith("🔒 production by carol")

    with pytest.raises(EnvironmentLocked, match="Black Friday"):
        await opsgate.services.deployments.request("web", "production", "v1", "1001")

    unknown = await client.reply_after(CAROL, DEPLOYS, "/lock prod freeze")
    assert unknown.text == "Unknown environment prod. Known: production."
    usage = await client.reply_after(CAROL, DEPLOYS, "/lock production")
    assert usage.text.startswith("Usage: /lock ENVIRONMENT reason")
    unlocked = await client.reply_after(ALICE, DEPLOYS, "/unlock production")
    assert unlocked.text == "🔓 production unlocked by alice."
    assert (await client.reply_after(BOB, DEPLOYS, "/locks")).text == "No environment is locked."
    deployment = await opsgate.services.deployments.request("web", "production", "v1", "1001")
    assert deployment.version == "v1"
