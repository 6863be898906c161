"""The control API's JSON contract, over HTTP."""

from collections.abc import AsyncIterator

import httpx
import pytest
from telegram import Bot
from telegram.error import RetryAfter

from bot.dev.sandbox import SandboxClient, SandboxThread


@pytest.fixture
async def http(sandbox: SandboxThread, client: SandboxClient) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.control_url) as session:
        yield session


async def test_send_and_press_return_ids(http: httpx.AsyncClient) -> None:
    await http.post("/chats", json={"id": -1001, "type": "supergroup", "title": "ops"})
    sent = (await http.post("/send", json={"user_id": 5, "chat_id": -1001, "text": "/help"})).json()
    assert set(sent) == {"message_id", "update_id"} and sent["message_id"] == 1
    pressed = await http.post(
        "/press", json={"user_id": 5, "chat_id": -1001, "message_id": 1, "data": "x"}
    )
    assert pressed.json()["update_id"] == sent["update_id"] + 1
    assert (
        await http.get(f"/callback_answers/{pressed.json()['callback_query_id']}")
    ).status_code == 404
    [message] = (await http.get("/chats/-1001/messages")).json()
    assert message["entities"] == [{"type": "bot_command", "offset": 0, "length": 5}]


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/send", {"user_id": 5, "chat_id": -7, "text": "x"}, 404),  # unknown group
        ("/send", {"user_id": 5, "text": "x"}, 400),  # missing chat_id
        ("/chats", {"id": 1, "type": "channel"}, 400),
        ("/users", [1, 2], 400),
        ("/press", {"user_id": 5, "chat_id": 5, "message_id": 9, "data": "d"}, 404),
    ],
)
async def test_bad_requests(http: httpx.AsyncClient, path: str, body: object, status: int) -> None:
    response = await http.post(path, json=body)
    assert response.status_code == status and "error" in response.json()


async def test_wait_returns_on_change_or_timeout(http: httpx.AsyncClient) -> None:
    version = (await http.get("/version")).json()["version"]
    assert (await http.get("/wait", params={"since": version, "timeout": 0.05})).json() == {
        "version": version
    }
    assert (await http.get("/wait", params={"since": version - 1, "timeout": 5})).json() == {
        "version": version
    }


async def test_flood_settings_are_partial_updates(http: httpx.AsyncClient, bot: Bot) -> None:
    await http.post("/flood", json={"per_chat_per_minute": 1})
    await http.post("/flood", json={"global_per_second": 10})  # leaves the per-chat limit alone
    await http.post("/users", json={"id": 3, "first_name": "Cy"})
    sent = [
        await http.post("/send", json={"user_id": 3, "chat_id": 3, "text": str(i)})
        for i in range(2)
    ]
    assert all(r.status_code == 200 for r in sent)  # users are never throttled, only the bot
    await bot.send_message(3, "one")
    with pytest.raises(RetryAfter):
        await bot.send_message(3, "two")
