"""The Bot API methods opsgate uses, with Telegram's rules and error texts.

Each method takes the state and the request's parameters and returns the ``result`` value, or
raises ApiError carrying the HTTP status and description Telegram would answer with.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bot.dev.sandbox import rules
from bot.dev.sandbox.models import BOT, JSON, Chat, StoredFile, StoredMessage, Webhook
from bot.dev.sandbox.rules import ApiError, Params, Upload, bad_request
from bot.dev.sandbox.state import PollConflict, SandboxState

COMMAND = re.compile(r"[a-z0-9_]{1,32}")
Method = Callable[[SandboxState, Params], Awaitable[Any]]
METHODS: dict[str, Method] = {}


def method(name: str) -> Callable[[Method], Method]:
    def register(func: Method) -> Method:
        METHODS[name.lower()] = func  # Bot API method names are case-insensitive
        return func

    return register


def chat_of(state: SandboxState, params: Params) -> Chat:
    try:
        chat = state.chat(int(params.values.get("chat_id", "")))
    except ValueError:
        chat = None  # "@channel" usernames are not modelled
    if chat is None:
        raise bad_request("chat not found")
    return chat


def replied(state: SandboxState, chat: Chat, params: Params) -> StoredMessage | None:
    reply = params.obj("reply_parameters") or {}
    message_id = reply.get("message_id") or params.integer("reply_to_message_id")
    if message_id is None:
        return None
    found = state.message(chat.id, int(message_id))
    lenient = reply.get("allow_sending_without_reply") or params.flag("allow_sending_without_reply")
    if found is None and not lenient:
        raise bad_request("message to be replied not found")
    return found


def stored_file(state: SandboxState, kind: str, sent: Upload | str | None) -> StoredFile:
    if isinstance(sent, str):
        known = state.files.get(sent)
        if known is None or known.kind != kind:
            raise bad_request("wrong file identifier/HTTP URL specified")
        return known
    if sent is None:
        raise bad_request(f"there is no {kind} in the request")
    if not sent.data:
        raise bad_request("file must be non-empty")
    size = rules.image_size(sent.data) if kind == "photo" else (0, 0)
    if size is None:
        raise bad_request("IMAGE_PROCESS_FAILED")
    number = state.next_id()
    prefix = "AgAC" if kind == "photo" else "BQAC"
    file = StoredFile(
        kind, f"{prefix}{number}", f"AQAD{number}", sent.filename, sent.content_type, sent.data
    )
    file.width, file.height = size
    state.files[file.file_id] = file
    return file


def editable(state: SandboxState, params: Params) -> StoredMessage:
    message = state.message(chat_of(state, params).id, params.integer("message_id") or 0)
    if message is None:
        raise bad_request("message to edit not found")
    if message.sender.id != BOT.id:
        raise bad_request("message can't be edited")
    return message


def apply_edit(state: SandboxState, message: StoredMessage, **changes: Any) -> JSON:
    previous = {"text": message.text, "html": message.html, "buttons": message.keyboard}
    message.history.append(previous | {"caption": message.caption})
    for name, value in changes.items():
        setattr(message, name, value)
    message.edit_date = int(time.time())
    state.touch()
    return message.to_api()


@method("getMe")
async def get_me(state: SandboxState, params: Params) -> JSON:
    flags = ("can_read_all_group_messages", "supports_inline_queries", "can_connect_to_business")
    return (
        BOT.to_api()
        | {"can_join_groups": True, "has_main_web_app": False}
        | dict.fromkeys(flags, False)
    )


@method("getUpdates")
async def get_updates(state: SandboxState, params: Params) -> list[JSON]:
    if state.webhook is not None:
        raise ApiError(409, rules.WEBHOOK_CONFLICT)
    offset = params.integer("offset")
    if offset:
        state.confirm(offset)
    limit = min(max(params.integer("limit") or 100, 1), 100)
    try:
        return await state.next_updates(
            limit, max(params.integer("timeout") or 0, 0), params.obj("allowed_updates")
        )
    except PollConflict:
        raise ApiError(409, rules.POLL_CONFLICT) from None


@method("setWebhook")
async def set_webhook(state: SandboxState, params: Params) -> bool:
    url = params.text("url") or ""
    if params.flag("drop_pending_updates"):
        state.updates.clear()
    if url and not url.startswith(("http://", "https://")):
        raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
    max_connections = params.integer("max_connections") or 40
    allowed = params.obj("allowed_updates")
    hook = Webhook(url, params.text("secret_token"), allowed, max_connections) if url else None
    state.webhook = hook
    state.wake()  # the webhook sender starts on what is already pending
    return True


@method("deleteWebhook")
async def delete_webhook(state: SandboxState, params: Params) -> bool:
    if params.flag("drop_pending_updates"):
        state.updates.clear()
    state.webhook = None
    return True


@method("getWebhookInfo")
async def get_webhook_info(state: SandboxState, params: Params) -> JSON:
    return (state.webhook or Webhook("")).to_api(len(state.updates))


def commands_key(params: Params) -> str:
    scope = params.obj("scope") or {"type": "default"}
    return f"{json.dumps(scope, sort_keys=True)}/{params.text('language_code') or ''}"


@method("setMyCommands")
async def set_my_commands(state: SandboxState, params: Params) -> bool:
    commands = [
        {"command": str(c["command"]), "description": str(c["description"])}
        for c in params.obj("commands") or []
    ]
    if any(not COMMAND.fullmatch(c["command"]) for c in commands):
        raise bad_request("BOT_COMMAND_INVALID")
    state.commands[commands_key(params)] = commands
    return True


@method("getMyCommands")
async def get_my_commands(state: SandboxState, params: Params) -> list[JSON]:
    return state.commands.get(commands_key(params), [])


@method("deleteMyCommands")
async def delete_my_commands(state: SandboxState, params: Params) -> bool:
    state.commands.pop(commands_key(params), None)
    return True


@method("setChatMenuButton")
async def set_chat_menu_button(state: SandboxState, params: Params) -> bool:
    button = params.obj("menu_button") or {"type": "default"}
    if not isinstance(button, dict) or button.get("type") not in ("commands", "web_app", "default"):
        raise bad_request("can't parse menu button JSON object")
    if button["type"] == "web_app":
        rules.check_web_app(button.get("web_app"))
    state.menu_buttons[str(params.integer("chat_id") or "default")] = button
    state.touch()
    return True


@method("getChatMenuButton")
async def get_chat_menu_button(state: SandboxState, params: Params) -> JSON:
    key = str(params.integer("chat_id") or "default")
    found = state.menu_buttons.get(key) or state.menu_buttons.get("default")
    return found or {"type": "commands"}


@method("sendMessage")
async def send_message(state: SandboxState, params: Params) -> JSON:
    chat = chat_of(state, params)
    source, parse_mode = params.text("text") or "", params.text("parse_mode")
    text, entities = rules.formatted(source, parse_mode)
    rules.check_length(text, "text")
    markup, reply_to = rules.keyboard(params, chat.type == "private"), replied(state, chat, params)
    rules.throttle(state, chat.id, counts_global=True)
    fields = {"text": text, "html": source, "parse_mode": parse_mode, "entities": entities}
    message = state.add_message(chat, BOT, reply_markup=markup, reply_to=reply_to, **fields)
    return message.to_api()


@method("editMessageText")
async def edit_message_text(state: SandboxState, params: Params) -> JSON:
    message = editable(state, params)
    if message.file is not None:
        raise bad_request("there is no text in the message to edit")
    source, parse_mode = params.text("text") or "", params.text("parse_mode")
    text, entities = rules.formatted(source, parse_mode)
    rules.check_length(text, "text")
    markup = rules.keyboard(params, message.chat.type == "private")  # absent: no keyboard
    if (text, entities, markup) == (message.text, message.entities, message.reply_markup):
        raise bad_request(rules.NOT_MODIFIED)
    rules.throttle(state, message.chat.id, counts_global=False)
    fields = {"text": text, "html": source, "parse_mode": parse_mode, "entities": entities}
    return apply_edit(state, message, reply_markup=markup, **fields)


@method("editMessageReplyMarkup")
async def edit_message_reply_markup(state: SandboxState, params: Params) -> JSON:
    message = editable(state, params)
    markup = rules.keyboard(params, message.chat.type == "private")
    if markup == message.reply_markup:
        raise bad_request(rules.NOT_MODIFIED)
    rules.throttle(state, message.chat.id, counts_global=False)
    return apply_edit(state, message, reply_markup=markup)


@method("answerCallbackQuery")
async def answer_callback_query(state: SandboxState, params: Params) -> bool:
    callback = state.callbacks.get(params.text("callback_query_id") or "")
    if callback is None or callback.answer is not None:
        raise bad_request("query is too old and response timeout expired or query ID is invalid")
    text = params.text("text")
    if text is not None and len(text) > rules.ANSWER_LIMIT:
        raise bad_request("MESSAGE_TOO_LONG")
    callback.answer = {"text": text, "show_alert": params.flag("show_alert")}
    callback.answer |= {"url": params.text("url"), "cache_time": params.integer("cache_time", 0)}
    state.touch()
    return True


@method("deleteMessage")
async def delete_message(state: SandboxState, params: Params) -> bool:
    message = state.message(chat_of(state, params).id, params.integer("message_id") or 0)
    if message is None:
        raise bad_request("message to delete not found")
    message.deleted = True
    state.touch()
    return True


async def send_file(state: SandboxState, params: Params, kind: str) -> JSON:
    chat = chat_of(state, params)
    file = stored_file(state, kind, params.file(kind))
    source, parse_mode = params.text("caption") or "", params.text("parse_mode")
    caption, entities = rules.formatted(source, parse_mode)
    rules.check_length(caption, "caption")
    markup, reply_to = rules.keyboard(params, chat.type == "private"), replied(state, chat, params)
    rules.throttle(state, chat.id, counts_global=True)
    fields = {"html": source, "parse_mode": parse_mode, "caption": caption or None}
    message = state.add_message(
        chat, BOT, file=file, entities=entities, reply_markup=markup, reply_to=reply_to, **fields
    )
    return message.to_api()


@method("sendDocument")
async def send_document(state: SandboxState, params: Params) -> JSON:
    return await send_file(state, params, "document")


@method("sendPhoto")
async def send_photo(state: SandboxState, params: Params) -> JSON:
    return await send_file(state, params, "photo")


@method("getChat")
async def get_chat(state: SandboxState, params: Params) -> JSON:
    return chat_of(state, params).to_full_api()
