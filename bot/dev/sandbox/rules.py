"""Telegram's limits, error texts and parameter decoding, apart from the methods using them."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from bot.dev.sandbox.html import Entity, HtmlParseError, parse_html
from bot.dev.sandbox.models import JSON
from bot.dev.sandbox.state import SandboxState

TEXT_LIMIT, CAPTION_LIMIT, CALLBACK_DATA_LIMIT, ANSWER_LIMIT = 4096, 1024, 64, 200
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the "
    "same as a current content and reply markup of the message"
)
WEBHOOK_CONFLICT = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
POLL_CONFLICT = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)


class ApiError(Exception):
    def __init__(self, status: int, description: str, parameters: JSON | None = None) -> None:
        super().__init__(description)
        self.status, self.description, self.parameters = status, description, parameters

    def body(self) -> JSON:
        body: JSON = {"ok": False, "error_code": self.status, "description": self.description}
        return body | ({"parameters": self.parameters} if self.parameters else {})


def bad_request(text: str) -> ApiError:
    return ApiError(400, f"Bad Request: {text}")


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str
    data: bytes


class Params:
    """Request parameters: form fields arrive as strings, JSON bodies as typed values."""

    def __init__(self, values: dict[str, Any], uploads: dict[str, Upload] | None = None) -> None:
        self.values, self.uploads = values, uploads or {}

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.values.get(name, default)
        return None if value is None else str(value)

    def integer(self, name: str, default: int | None = None) -> int | None:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except (TypeError, ValueError):
            raise bad_request(f"invalid {name} specified") from None

    def flag(self, name: str) -> bool:
        return str(self.values.get(name, "false")).lower() in ("true", "1")

    def obj(self, name: str, error: str | None = None) -> Any:
        value = self.values.get(name)
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except ValueError:
            raise bad_request(error or f"can't parse {name} JSON object") from None

    def file(self, name: str) -> Upload | str | None:
        """An uploaded file, or the string (file_id, URL) sent instead."""
        value = self.text(name)
        if value is not None and value.startswith("attach://"):
            return self.uploads.get(value.removeprefix("attach://"))
        return self.uploads.get(name) or value


def formatted(text: str, parse_mode: str | None) -> tuple[str, list[Entity]]:
    """Apply parse_mode; only HTML is parsed, other modes keep the text as it is."""
    if (parse_mode or "").lower() != "html":
        return text, []
    try:
        return parse_html(text)
    except HtmlParseError as exc:
        raise bad_request(f"can't parse entities: {exc}") from None


def check_length(plain: str, what: str) -> None:
    """Limits apply to the text after entity parsing, counted in characters."""
    if what == "caption":
        if len(plain) > CAPTION_LIMIT:
            raise bad_request("message caption is too long")
    elif not plain.strip():
        raise bad_request("message text is empty")
    elif len(plain) > TEXT_LIMIT:
        raise bad_request("message is too long")


def keyboard(params: Params, private: bool = True) -> JSON | None:
    """The inline keyboard as Telegram checks it; a web_app button (a Mini App) must open an
    https page and is allowed only in private chats."""
    markup = params.obj("reply_markup", "can't parse reply keyboard markup JSON object")
    if not isinstance(markup, dict) or not markup.get("inline_keyboard"):
        return None  # reply keyboards are not echoed back in Message.reply_markup
    for row in markup["inline_keyboard"]:
        for button in row:
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= CALLBACK_DATA_LIMIT:
                raise bad_request("BUTTON_DATA_INVALID")
            web_app = button.get("web_app")
            if web_app is not None:
                check_web_app(web_app)
                if not private:
                    raise bad_request("BUTTON_TYPE_INVALID")
    return {"inline_keyboard": markup["inline_keyboard"]}


def check_web_app(web_app: object) -> None:
    url = web_app.get("url") if isinstance(web_app, dict) else None
    if not isinstance(url, str) or not url.startswith("https://"):
        raise bad_request(
            f"inline keyboard button Web App URL '{url}' is invalid: Only HTTPS links are allowed"
        )


def throttle(state: SandboxState, chat_id: int, counts_global: bool) -> None:
    wait = state.flood.retry_after(chat_id, counts_global)
    if wait:
        state.faults.flood_refusals += 1
        text = f"Too Many Requests: retry after {wait}"
        raise ApiError(429, text, {"retry_after": wait})
    state.flood.record(chat_id, counts_global)


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG or JPEG, enough to fill a PhotoSize."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    i = 2 if data.startswith(b"\xff\xd8") else len(data)
    while i + 9 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(width), int(height)
        i += 2 + int(struct.unpack(">H", data[i + 2 : i + 4])[0])
    return None
