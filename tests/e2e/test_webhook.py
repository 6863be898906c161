"""Webhook mode: the sandbox posts updates to opsgate's HTTP side with the secret header."""

from __future__ import annotations

import json

import httpx

from bot.dev.sandbox import SandboxClient
from bot.http.server import free_port
from bot.runner import Opsgate
from config.settings import UpdateMode
from tests.e2e.conftest import ALICE, DEPLOYS, StartOpsgate

SECRET = "webhook-secret-for-tests_0123456789"


async def start_webhook_opsgate(start_opsgate: StartOpsgate) -> tuple[Opsgate, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/hook"
    opsgate = await start_opsgate(
        mode=UpdateMode.WEBHOOK,
        http_addr=f"127.0.0.1:{port}",
        webhook_url=url,
        webhook_secret=SECRET,
    )
    return opsgate, url


def forged_update(update_id: int, text: str) -> dict[str, object]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": 999,
            "date": 1_700_000_000,
            "chat": {"id": DEPLOYS, "type": "supergroup", "title": "Deploys"},
            "from": {"id": ALICE, "is_bot": False, "first_name": "Alice"},
            "text": text,
            "entities": [{"type": "bot_command", "offset": 0, "length": len(text)}],
        },
    }


async def test_updates_arrive_by_webhook(
    start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    _, url = await start_webhook_opsgate(start_opsgate)
    info = await client.bot_info()
    assert info["webhook"]["url"] == url
    reply = await client.reply_after(ALICE, DEPLOYS, "/status")
    assert "Services known: 2" in reply.text


async def test_requests_without_the_secret_are_refused(
    start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    opsgate, url = await start_webhook_opsgate(start_opsgate)
    async with httpx.AsyncClient() as http:
        missing = await http.post(url, json=forged_update(900001, "/reload"))
        wrong = await http.post(
            url,
            json=forged_update(900002, "/reload"),
            headers={"X-Telegram-Bot-Api-Secret-Token": "guess"},
        )
        malformed = await http.post(
            url, content=b"{not json", headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
        )
        not_an_update = await http.post(
            url,
            content=json.dumps({"hello": 1}),
            headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
        )
    assert (missing.status_code, wrong.status_code) == (403, 403)
    assert (malformed.status_code, not_an_update.status_code) == (400, 400)
    # Nothing was processed: a real update sent after them is the only one answered.
    sentinel = await client.reply_after(ALICE, DEPLOYS, "/status")
    assert [m.message_id for m in await client.messages(DEPLOYS) if m.from_bot] == [
        sentinel.message_id
    ]
    assert await opsgate.services.audit.events(kind="config.reloaded") == []


async def test_health_endpoint(opsgate: Opsgate) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{opsgate.http_port}/health")
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "healthy"
    assert body["database_writable"] is True
    assert body["version"] == opsgate.services.version
