"""Every press passes the access gate: forged data and presses without the role change nothing."""

from __future__ import annotations

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update

from bot.dev.sandbox import SandboxClient
from config.permissions import Action
from handlers.buttons import ButtonRoute
from handlers.callbacks import CallbackData
from handlers.commands import Command
from handlers.context import OpsContext
from tests.e2e.conftest import (
    BOB,
    CAROL,
    DEPLOYS,
    STRANGER,
    UNLISTED,
    StartOpsgate,
    callback_answer_text,
)


async def ask(update: Update, context: OpsContext) -> None:
    assert update.effective_message is not None
    button = InlineKeyboardButton("Go", callback_data=CallbackData("tst", "go", 7).encode())
    await update.effective_message.reply_text(
        "Ready?", reply_markup=InlineKeyboardMarkup([[button]])
    )


async def go(update: Update, context: OpsContext) -> None:
    query = update.callback_query
    assert query is not None and query.data is not None
    await query.answer("done")
    await query.edit_message_text(f"Gone by {query.from_user.id} ({query.data})")


async def start_with_button(start_opsgate: StartOpsgate) -> None:
    await start_opsgate(
        extra_commands=[Command("ask", "test", ask)],
        extra_buttons=[ButtonRoute("tst", go, action=Action.DEPLOY)],
    )


async def test_press_needs_the_role_and_valid_data(
    start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    await start_with_button(start_opsgate)
    prompt = await client.reply_after(BOB, DEPLOYS, "/ask")
    assert [b.data for row in prompt.buttons for b in row] == ["tst:go:7"]

    refused = await client.press_button(BOB, DEPLOYS, prompt.message_id, 1)
    assert await callback_answer_text(client, refused) == "This needs the role sre."
    for forged in ("zz:go:7", "tst:go", '{"service": "web"}', "tst:go:7:extra"):
        callback_id = await client.press(CAROL, DEPLOYS, prompt.message_id, forged)
        assert await callback_answer_text(client, callback_id) == "This button is no longer valid."
    stranger = await client.press(STRANGER, DEPLOYS, prompt.message_id, "tst:go:7")
    assert await callback_answer_text(client, stranger) == "This needs the role sre."

    unchanged = await client.messages(DEPLOYS)
    assert [m.text for m in unchanged if m.message_id == prompt.message_id] == ["Ready?"]

    accepted = await client.press_button(CAROL, DEPLOYS, prompt.message_id, 1)
    assert await callback_answer_text(client, accepted) == "done"
    edited = await client.wait_for(
        DEPLOYS,
        lambda ms: next((m for m in ms if m.message_id == prompt.message_id and m.edits), None),
    )
    assert edited.text == f"Gone by {CAROL} (tst:go:7)"
    assert edited.buttons == []


async def test_press_in_unlisted_chat_is_refused(
    start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    await start_with_button(start_opsgate)
    sent = await client.send(CAROL, UNLISTED, "hello")
    callback_id = await client.press(CAROL, UNLISTED, sent, "tst:go:7")
    assert await callback_answer_text(client, callback_id) == "This button is no longer valid."
