"""Bot API methods through a real telegram.Bot over HTTP against the session sandbox."""

import datetime as dtm
import struct
import zlib

import pytest
from telegram import (
    Bot,
    BotCommand,
    BotCommandScopeChat,
    InlineKeyboardButton,
    MenuButtonCommands,
    MenuButtonWebApp,
    WebAppInfo,
)
from telegram import InlineKeyboardMarkup as Markup
from telegram.error import BadRequest, RetryAfter

from bot.dev.sandbox import SandboxClient

ANN = 42


def keyboard(*data: str) -> Markup:
    return Markup([[InlineKeyboardButton(d, callback_data=d) for d in data]])


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" + b"\x00\x00\x00" * width * 1) * height
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)


async def test_get_me_is_the_opsgate_bot(bot: Bot) -> None:
    me = await bot.get_me()
    assert (me.id, me.username, me.first_name, me.is_bot) == (
        7000000001,
        "opsgate_bot",
        "opsgate",
        True,
    )
    assert me.can_join_groups is True


async def test_send_message_is_parsed_and_recorded(bot: Bot, client: SandboxClient) -> None:
    sent = await bot.send_message(
        ANN, "<b>Deploy</b> api?", parse_mode="HTML", reply_markup=keyboard("d:1")
    )
    assert sent.text == "Deploy api?"
    assert sent.entities[0].type == "bold"
    assert sent.from_user is not None and sent.from_user.is_bot
    assert sent.chat.type == "private" and sent.chat.first_name == "Ann"
    assert sent.reply_markup == keyboard("d:1")
    [stored] = await client.messages(ANN)
    assert (stored.text, stored.html, stored.from_bot) == (
        "Deploy api?",
        "<b>Deploy</b> api?",
        True,
    )
    assert stored.buttons[0][0].data == "d:1"


async def test_text_limit_counts_characters_after_parsing(bot: Bot) -> None:
    await bot.send_message(ANN, f"<b>{'a' * 4096}</b>", parse_mode="HTML")
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(ANN, f"<b>{'a' * 4097}</b>", parse_mode="HTML")
    with pytest.raises(BadRequest, match=r"(?i)message text is empty"):
        await bot.send_message(ANN, "<b> </b>", parse_mode="HTML")


async def test_html_errors_are_cant_parse_entities(bot: Bot) -> None:
    with pytest.raises(BadRequest) as caught:
        await bot.send_message(ANN, "Status: <foo>ok</foo>", parse_mode="HTML")
    assert (
        'can\'t parse entities: unsupported start tag "foo" at byte offset 8'
        in caught.value.message.lower()
    )
    # Without a parse mode the same text is sent as it is.
    assert (await bot.send_message(ANN, "Status: <foo>ok</foo>")).text == "Status: <foo>ok</foo>"


async def test_callback_data_is_limited_to_64_bytes(bot: Bot) -> None:
    await bot.send_message(ANN, "ok", reply_markup=keyboard("é" * 32))
    with pytest.raises(BadRequest, match=r"(?i)BUTTON_DATA_INVALID"):
        await bot.send_message(ANN, "too long", reply_markup=keyboard("é" * 32 + "x"))


async def test_edit_rules(bot: Bot, client: SandboxClient) -> None:
    sent = await bot.send_message(ANN, "<b>v1</b>", parse_mode="HTML", reply_markup=keyboard("a"))
    with pytest.raises(
        BadRequest, match=r"(?i)message is not modified: specified new message content"
    ):
        await bot.edit_message_text(
            "<b>v1</b>", ANN, sent.message_id, parse_mode="HTML", reply_markup=keyboard("a")
        )
    # Same text, different formatting is a real change; no reply_markup drops the keyboard.
    edited = await bot.edit_message_text("v1", ANN, sent.message_id)
    assert isinstance(edited, type(sent)) and edited.reply_markup is None and edited.edit_date
    again = await bot.edit_message_reply_markup(ANN, sent.message_id, reply_markup=keyboard("b"))
    assert again.reply_markup == keyboard("b")  # type: ignore[union-attr]
    [stored] = await client.messages(ANN)
    assert (stored.text, stored.edits, stored.buttons[0][0].data) == ("v1", 2, "b")
    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await bot.edit_message_text("x", ANN, 999)


async def test_users_messages_cannot_be_edited(bot: Bot, client: SandboxClient) -> None:
    mine = await client.send(ANN, ANN, "hello")
    with pytest.raises(BadRequest, match=r"(?i)message can't be edited"):
        await bot.edit_message_text("changed", ANN, mine)


async def test_delete_message(bot: Bot, client: SandboxClient) -> None:
    sent = await bot.send_message(ANN, "bye")
    assert await bot.delete_message(ANN, sent.message_id) is True
    [stored] = await client.messages(ANN)
    assert stored.deleted
    with pytest.raises(BadRequest, match=r"(?i)message to delete not found"):
        await bot.delete_message(ANN, sent.message_id)


async def test_unknown_chats_are_not_found(bot: Bot, client: SandboxClient) -> None:
    with pytest.raises(BadRequest, match=r"(?i)chat not found"):
        await bot.send_message(-100123, "hi")
    await client.add_chat(-100123, "supergroup", "ops")
    chat = await bot.get_chat(-100123)
    assert (chat.type, chat.title) == ("supergroup", "ops")


async def test_send_document_and_photo_store_files(bot: Bot, client: SandboxClient) -> None:
    doc = await bot.send_document(
        ANN, b"line\r\n\x00\xff", filename="deploy.log", caption="<i>log</i>", parse_mode="HTML"
    )
    assert doc.document is not None and doc.document.file_size == 8 and doc.caption == "log"
    image = png(3, 2)
    photo = await bot.send_photo(ANN, image, filename="chart.png")
    assert [(p.width, p.height) for p in photo.photo] == [(3, 2)]
    again = await bot.send_document(ANN, doc.document.file_id)
    assert again.document is not None and again.document.file_id == doc.document.file_id
    stored = await client.messages(ANN)
    assert stored[0].document is not None
    assert (stored[0].document.name, stored[0].document.data) == ("deploy.log", b"line\r\n\x00\xff")
    assert stored[0].caption == "log"
    assert stored[1].photo is not None and stored[1].photo.data == image
    with pytest.raises(BadRequest, match=r"(?i)message caption is too long"):
        await bot.send_document(ANN, b"x", filename="x.txt", caption="c" * 1025)
    with pytest.raises(BadRequest, match=r"(?i)IMAGE_PROCESS_FAILED"):
        await bot.send_photo(ANN, b"not an image", filename="x.png")


async def test_replies_link_to_the_message(bot: Bot, client: SandboxClient) -> None:
    asked = await client.send(ANN, ANN, "/status")
    reply = await bot.send_message(ANN, "all green", reply_to_message_id=asked)
    assert reply.reply_to_message is not None and reply.reply_to_message.text == "/status"
    assert (await client.messages(ANN))[1].reply_to_message_id == asked
    with pytest.raises(BadRequest, match=r"(?i)message to be replied not found"):
        await bot.send_message(ANN, "?", reply_to_message_id=555)


async def test_answer_callback_query_rules(bot: Bot, client: SandboxClient) -> None:
    sent = await bot.send_message(ANN, "go?", reply_markup=keyboard("go"))
    query = await client.press(ANN, ANN, sent.message_id, "go")
    with pytest.raises(BadRequest, match=r"(?i)MESSAGE_TOO_LONG"):
        await bot.answer_callback_query(query, "x" * 201)
    assert await client.callback_answer(query) is None
    assert await bot.answer_callback_query(query, "Started", show_alert=True)
    assert await client.callback_answer(query) == {
        "text": "Started",
        "show_alert": True,
        "url": None,
        "cache_time": 0,
    }
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await bot.answer_callback_query(query, "twice")


async def test_flood_control_answers_retry_after(bot: Bot, client: SandboxClient) -> None:
    await client.add_chat(-5, "group", "g")
    await client.set_flood(global_per_second=1)
    await bot.send_message(-5, "a")
    with pytest.raises(RetryAfter):
        await bot.send_message(ANN, "b")
    await client.set_flood(per_chat_per_minute=2)
    first = await bot.send_message(ANN, "1")
    await bot.edit_message_text("1b", ANN, first.message_id)  # edits count per chat
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(ANN, "3")
    wait = caught.value.retry_after
    assert isinstance(wait, dtm.timedelta) and 1 <= wait.total_seconds() <= 60
    await bot.send_message(-5, "other chats still go through")
    await client.set_flood()
    await bot.send_message(ANN, "limits off")


async def test_commands_by_scope(bot: Bot, client: SandboxClient) -> None:
    await bot.set_my_commands([BotCommand("deploy", "Deploy a service")])
    await bot.set_my_commands([BotCommand("admin", "Admin only")], scope=BotCommandScopeChat(ANN))
    assert [c.command for c in await bot.get_my_commands()] == ["deploy"]
    assert [c.command for c in await bot.get_my_commands(scope=BotCommandScopeChat(ANN))] == [
        "admin"
    ]
    assert '{"type": "default"}/' in (await client.bot_info())["commands"]
    assert await bot.delete_my_commands()
    assert await bot.get_my_commands() == ()
    with pytest.raises(BadRequest, match=r"(?i)BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand("Bad-Name", "x")])


async def test_get_updates_confirms_by_offset(bot: Bot, client: SandboxClient) -> None:
    await client.send(ANN, ANN, "/one")
    await client.send(ANN, ANN, "two")
    first = await bot.get_updates()
    assert [u.message.text for u in first if u.message] == ["/one", "two"]
    assert first[0].message is not None and first[0].message.entities[0].type == "bot_command"
    again = await bot.get_updates(offset=first[0].update_id + 1)
    assert [u.update_id for u in again] == [first[1].update_id]  # unconfirmed stays pending
    assert await bot.get_updates(offset=first[1].update_id + 1, timeout=0) == ()


async def test_web_app_buttons_open_https_pages_in_private_chats_only(
    bot: Bot, client: SandboxClient
) -> None:
    page = InlineKeyboardButton("app", web_app=WebAppInfo("https://ops.example.test/app/"))
    sent = await bot.send_message(ANN, "ok", reply_markup=Markup([[page]]))
    assert sent.reply_markup is not None
    plain = InlineKeyboardButton("app", web_app=WebAppInfo("http://ops.example.test/app/"))
    with pytest.raises(BadRequest, match=r"(?i)only https links are allowed"):
        await bot.send_message(ANN, "no", reply_markup=Markup([[plain]]))
    await client.add_chat(-100777, "supergroup", "Ops")
    with pytest.raises(BadRequest, match=r"(?i)BUTTON_TYPE_INVALID"):
        await bot.send_message(-100777, "no", reply_markup=Markup([[page]]))


async def test_the_menu_button_is_set_and_read_back(bot: Bot) -> None:
    assert isinstance(await bot.get_chat_menu_button(), MenuButtonCommands)
    await bot.set_chat_menu_button(
        menu_button=MenuButtonWebApp("Dashboard", WebAppInfo("https://ops.example.test/app/"))
    )
    button = await bot.get_chat_menu_button(ANN)
    assert isinstance(button, MenuButtonWebApp) and button.web_app.url.endswith("/app/")
    with pytest.raises(BadRequest, match=r"(?i)only https"):
        await bot.set_chat_menu_button(
            menu_button=MenuButtonWebApp("Dashboard", WebAppInfo("http://x/app/"))
        )
