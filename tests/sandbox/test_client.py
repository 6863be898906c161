"""SandboxClient against the session sandbox, with a real telegram.Bot playing the bot."""

import asyncio
import time

import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup

from bot.dev.sandbox import Button, SandboxClient, SandboxError, SandboxMessage

ANN = 42


async def later(delay: float, action: object) -> None:
    await asyncio.sleep(delay)
    await action  # type: ignore[misc]


async def test_messages_are_typed(bot: Bot, client: SandboxClient) -> None:
    markup = InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("Yes", callback_data="y"),
                InlineKeyboardButton("Docs", url="https://d.io"),
            ]
        ]
    )
    asked = await client.send(ANN, ANN, "/start")
    await bot.send_message(
        ANN, "<b>Hi</b>", parse_mode="HTML", reply_markup=markup, reply_to_message_id=asked
    )
    user, reply = await client.messages(ANN)
    assert (user.from_id, user.from_bot, user.text) == (ANN, False, "/start")
    assert reply == SandboxMessage(
        message_id=2,
        from_id=7000000001,
        from_bot=True,
        text="Hi",
        html="<b>Hi</b>",
        buttons=[[Button("Yes", data="y"), Button("Docs", url="https://d.io")]],
        edits=0,
        deleted=False,
        parse_mode="HTML",
        reply_to_message_id=asked,
    )
    assert str(reply) == "#2 bot: Hi [Yes | Docs]"


async def test_control_errors_raise(client: SandboxClient) -> None:
    with pytest.raises(SandboxError, match="404"):
        await client.send(ANN, -999, "nobody here")
    with pytest.raises(SandboxError, match="404"):
        await client.press(ANN, ANN, 77, "x")


async def test_unknown_users_are_created_on_first_message(bot: Bot, client: SandboxClient) -> None:
    await client.send(7, 7, "hi")
    [update] = await bot.get_updates()
    assert update.effective_user is not None and update.effective_user.first_name == "user7"
    assert (await bot.send_message(7, "hello user7")).chat.id == 7


async def test_press_button_by_index(bot: Bot, client: SandboxClient) -> None:
    rows = [
        [
            InlineKeyboardButton("A", callback_data="a"),
            InlineKeyboardButton("B", callback_data="b"),
        ],
        [
            InlineKeyboardButton("C", callback_data="c"),
            InlineKeyboardButton("Web", url="https://x.io"),
        ],
    ]
    sent = await bot.send_message(ANN, "pick", reply_markup=InlineKeyboardMarkup(rows))
    query_id = await client.press_button(ANN, ANN, sent.message_id, 3)
    [update] = await bot.get_updates()
    query = update.callback_query
    assert query is not None and (query.id, query.data) == (query_id, "c")
    assert query.message is not None and query.message.message_id == sent.message_id
    forged = await client.press(ANN, ANN, sent.message_id, "not-on-keyboard")
    assert forged != query_id
    for index in (0, 4, 5):  # out of range, or a URL button
        with pytest.raises(LookupError):
            await client.press_button(ANN, ANN, sent.message_id, index)


async def test_wait_for_returns_the_predicates_value(bot: Bot, client: SandboxClient) -> None:
    sender = asyncio.create_task(later(0.1, bot.send_message(ANN, "deployed api")))
    found = await client.wait_for(
        ANN, lambda ms: next((m for m in ms if "deployed" in m.text), None), 5
    )
    assert found.text == "deployed api"
    await sender
    transcript = await client.wait_for(ANN, lambda ms: len(ms) == 1)
    assert [m.text for m in transcript] == ["deployed api"]


async def test_wait_for_times_out_with_the_transcript(bot: Bot, client: SandboxClient) -> None:
    await bot.send_message(ANN, "still waiting")
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="still waiting"):
        await client.wait_for(ANN, lambda ms: any(m.deleted for m in ms), timeout=0.3)
    assert 0.25 < time.monotonic() - started < 2


async def test_wait_idle_and_wait_change(bot: Bot, client: SandboxClient) -> None:
    version = await client.version()
    assert await client.wait_change(version, 0.05) == version
    burst = asyncio.create_task(later(0.05, bot.send_message(ANN, "one")))
    assert await client.wait_change(version, 5) > version
    await burst
    started = time.monotonic()
    await client.wait_idle(quiet=0.2)
    assert time.monotonic() - started >= 0.2


async def test_reply_after_skips_earlier_bot_messages(bot: Bot, client: SandboxClient) -> None:
    await bot.send_message(ANN, "old news")

    async def answer() -> None:
        [update] = await bot.get_updates(timeout=5)
        await bot.send_message(ANN, f"pong to {update.message.text if update.message else '?'}")

    responder = asyncio.create_task(answer())
    reply = await client.reply_after(ANN, ANN, "ping", timeout=5)
    await responder
    assert reply.text == "pong to ping"


async def test_flood_outage_reset_and_bot_info(bot: Bot, client: SandboxClient) -> None:
    await bot.set_my_commands([("status", "Show status")])
    info = await client.bot_info()
    assert info["commands"] == {
        '{"type": "default"}/': [{"command": "status", "description": "Show status"}]
    }
    assert info["webhook"] is None and info["pending_update_count"] == 0
    await client.set_outage(True)
    await client.reset()  # clears the outage too
    assert (await bot.get_me()).username == "opsgate_bot"
    assert (await client.bot_info())["commands"] == {}
