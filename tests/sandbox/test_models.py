"""The stored objects serialise to what PTB parses strictly."""

import datetime as dtm

from telegram import CallbackQuery, ChatFullInfo, Message, Update, User

from bot.dev.sandbox.html import Entity
from bot.dev.sandbox.models import BOT, Chat, StoredFile, StoredMessage, Webhook

ANN = User(42, "Ann", is_bot=False, username="ann")


def test_bot_message_round_trips_through_ptb() -> None:
    chat = Chat(-100, "supergroup", "ops")
    asked = StoredMessage(1, chat, BOT, 1_700_000_000, text="q")
    markup = {"inline_keyboard": [[{"text": "Go", "callback_data": "go"}]]}
    message = StoredMessage(
        2,
        chat,
        BOT,
        1_700_000_000,
        text="Deploy api",
        entities=[Entity("bold", 0, 6)],
        reply_markup=markup,
        reply_to=asked,
        edit_date=1_700_000_100,
    )
    parsed = Message.de_json(message.to_api(), None)
    assert parsed.chat.title == "ops" and parsed.from_user is not None and parsed.from_user.is_bot
    assert parsed.date == dtm.datetime.fromtimestamp(1_700_000_000, dtm.UTC)
    assert parsed.entities[0].type == "bold" and parsed.reply_markup is not None
    assert parsed.reply_to_message is not None and parsed.reply_to_message.text == "q"
    assert parsed.edit_date is not None and parsed.api_kwargs == {}


def test_private_chat_and_files() -> None:
    from bot.dev.sandbox.models import User as SandboxUser

    ann = SandboxUser(42, "Ann", "ann")
    chat = Chat(42, "private", peer=ann)
    photo = StoredFile("photo", "AgAC1", "AQAD1", "c.png", "image/png", b"12345", 3, 2)
    message = StoredMessage(1, chat, BOT, 1_700_000_000, caption="chart", file=photo)
    parsed = Message.de_json(message.to_api(), None)
    assert parsed.chat.username == "ann" and parsed.chat.first_name == "Ann"
    assert [(p.width, p.height, p.file_size) for p in parsed.photo] == [(3, 2, 5)]
    assert parsed.caption == "chart" and parsed.text is None
    assert message.to_control()["photo"] == {
        "name": "c.png",
        "size": 5,
        "mime_type": "image/png",
        "data": "MTIzNDU=",
    }
    full = ChatFullInfo.de_json(chat.to_full_api(), None)
    assert full.id == 42 and full.api_kwargs == {}


def test_callback_query_update_parses() -> None:
    chat = Chat(42, "private", peer=None, title=None)
    message = StoredMessage(1, chat, BOT, 1_700_000_000, text="pick")
    update = Update.de_json(
        {
            "update_id": 1,
            "callback_query": {
                "id": "9",
                "from": ANN.to_dict(),
                "chat_instance": "1",
                "data": "go",
                "message": message.to_api(),
            },
        },
        None,
    )
    assert isinstance(update.callback_query, CallbackQuery) and update.callback_query.data == "go"


def test_webhook_info_shape() -> None:
    hook = Webhook("https://x/hook", "s", ["message"], last_error_date=5, last_error_message="boom")
    assert hook.to_api(3) == {
        "url": "https://x/hook",
        "has_custom_certificate": False,
        "pending_update_count": 3,
        "max_connections": 40,
        "last_error_date": 5,
        "last_error_message": "boom",
        "allowed_updates": ["message"],
    }
