"""Alerts linked to changes: an alert about a service deployed (or whose flag moved) in the last
hour names that change and offers to undo it with one press, role-gated."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bot.dev.harness.systemd import SystemdSandbox
from bot.dev.sandbox import SandboxClient
from bot.runner import Opsgate
from handlers.buttons import NO_LONGER_VALID
from tests.e2e.conftest import BOB, CAROL, DEPLOYS, StartOpsgate, callback_answer_text
from tests.e2e.deploy_app import DeployApp, installed_app
from tests.e2e.test_alerts import TOKEN, bot_message
from tests.e2e.test_deploy_controls import deploy_and_wait, ops_text, served_version

WARNING = -100301
ALERTS = f"""
[chats.alerts]
warning = {WARNING}
[alerts]
tick_s = 0.1
group_wait_s = 0.1
[flags.checkout]
service = "app"
"""


@pytest.fixture
async def app(
    systemd_sandbox: SystemdSandbox, tmp_path: Path, ops_file: Path
) -> AsyncIterator[DeployApp]:
    async with installed_app(
        systemd_sandbox, systemd_sandbox.work_dir / f"links-{tmp_path.name}"
    ) as deployed:
        text = ops_text(systemd_sandbox, deployed)
        ops_file.write_text(
            text.replace("[environments.production]", ALERTS + "[environments.production]", 1)
        )
        yield deployed


async def fire(opsgate: Opsgate, instance: str) -> None:
    labels = {"alertname": "SlowCheckout", "severity": "warning", "service": "app"}
    body = {"alerts": [{"labels": {**labels, "instance": instance}}]}
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"http://127.0.0.1:{opsgate.http_port}/webhooks/generic",
            json=body,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert response.status_code == 200, response.text


async def test_an_alert_after_a_deploy_offers_its_rollback_and_a_flag_reset(
    app: DeployApp, start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    await client.add_chat(WARNING, "supergroup", "Warnings")
    opsgate = await start_opsgate(alerts_token=TOKEN)
    await deploy_and_wait(client, CAROL, "/deploy app v1")
    await deploy_and_wait(client, CAROL, "/deploy app v2")
    moved = await client.reply_after(CAROL, DEPLOYS, "/flag checkout 25")
    assert "25" in moved.text, moved.text

    await fire(opsgate, "a")
    message = await client.wait_for(WARNING, bot_message("SlowCheckout"))
    assert "🔗 app v2 was deployed at" in message.text and "before: v1" in message.text
    assert "🔗 flag checkout was set to 25" in message.text
    labels = [b.text for row in message.buttons for b in row]
    assert labels == ["👀 Ack", "🔕 1h", "🔕 24h", "↩️ Roll back to v1", "🚩 Set checkout to 0%"]

    # Both undo buttons need the role sre, like /rollback and /flag.
    refused = await client.press_button(BOB, WARNING, message.message_id, 4)
    assert await callback_answer_text(client, refused) == "This needs the role sre."
    zero = await client.press_button(CAROL, WARNING, message.message_id, 5)
    assert await callback_answer_text(client, zero) == "checkout is at 0% now."
    flag = await opsgate.services.flags.get("checkout")
    assert flag is not None and flag.rollout_percent == 0

    back = await client.press_button(CAROL, WARNING, message.message_id, 4)
    assert await callback_answer_text(client, back) == "Rolling back to v1…"
    done = await client.wait_for(WARNING, bot_message("app runs v1"), timeout=60)
    assert "✅ app runs v1 (was v2)." in done.text
    assert await served_version(app) == "v1"
    # The deploy it named is no longer the one to undo: its old button is stale.
    again = await client.press_button(CAROL, WARNING, message.message_id, 4)
    assert await callback_answer_text(client, again) == NO_LONGER_VALID
