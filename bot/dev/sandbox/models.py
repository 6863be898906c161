"""The objects the sandbox stores, and how each looks to the Bot API and to the control API."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from bot.dev.sandbox.html import Entity

JSON = dict[str, Any]


@dataclass
class User:
    id: int
    first_name: str
    username: str | None = None
    is_bot: bool = False

    def to_api(self) -> JSON:
        data: JSON = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        return data | _username(self)


def _username(user: User) -> JSON:
    return {"username": user.username} if user.username else {}


BOT = User(7000000001, "opsgate", "opsgate_bot", is_bot=True)


@dataclass
class Chat:
    id: int
    type: str  # private | group | supergroup
    title: str | None = None
    peer: User | None = None  # the other side of a private chat

    def to_api(self) -> JSON:
        if self.peer is not None:
            name = {"first_name": self.peer.first_name}
            return {"id": self.id, "type": self.type} | name | _username(self.peer)
        return {"id": self.id, "type": self.type, "title": self.title or f"chat{self.id}"}

    def to_full_api(self) -> JSON:
        """getChat's ChatFullInfo: PTB requires these extra fields."""
        gifts = dict.fromkeys(
            ("unlimited_gifts", "limited_gifts", "unique_gifts", "premium_subscription"), False
        )
        extra = {"accent_color_id": 0, "max_reaction_count": 11}
        return (
            self.to_api() | extra | {"accepted_gift_types": gifts | {"gifts_from_channels": False}}
        )


@dataclass
class StoredFile:
    kind: str  # document | photo
    file_id: str
    file_unique_id: str
    name: str
    mime_type: str
    data: bytes
    width: int = 0
    height: int = 0

    def to_api(self) -> Any:
        if self.kind == "photo":
            size = {"width": self.width, "height": self.height, "file_size": len(self.data)}
            return [{"file_id": self.file_id, "file_unique_id": self.file_unique_id} | size]
        return {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_name": self.name,
            "mime_type": self.mime_type,
            "file_size": len(self.data),
        }

    def to_control(self) -> JSON:
        data = base64.b64encode(self.data).decode()
        return {
            "name": self.name,
            "size": len(self.data),
            "mime_type": self.mime_type,
            "data": data,
        }


@dataclass
class StoredMessage:
    message_id: int
    chat: Chat
    sender: User
    date: int
    text: str = ""  # plain, after entity parsing
    html: str = ""  # the raw text (or caption) as it was sent
    parse_mode: str | None = None
    entities: list[Entity] = field(default_factory=list)
    reply_markup: JSON | None = None
    caption: str | None = None
    file: StoredFile | None = None
    reply_to: StoredMessage | None = None
    edit_date: int | None = None
    history: list[JSON] = field(default_factory=list)  # earlier versions, oldest first
    deleted: bool = False

    @property
    def keyboard(self) -> list[list[JSON]]:
        return list((self.reply_markup or {}).get("inline_keyboard", []))

    def to_api(self, with_reply: bool = True) -> JSON:
        data: JSON = {"message_id": self.message_id, "date": self.date}
        data |= {"chat": self.chat.to_api(), "from": self.sender.to_api()}
        entities = [e.to_api() for e in self.entities]
        if self.file is not None:
            data[self.file.kind] = self.file.to_api()
            if self.caption:
                data |= {"caption": self.caption} | (
                    {"caption_entities": entities} if entities else {}
                )
        else:
            data |= {"text": self.text} | ({"entities": entities} if entities else {})
        if self.keyboard:
            data["reply_markup"] = {"inline_keyboard": self.keyboard}
        if self.edit_date is not None:
            data["edit_date"] = self.edit_date
        if self.reply_to is not None and with_reply:
            data["reply_to_message"] = self.reply_to.to_api(with_reply=False)
        return data

    def to_control(self) -> JSON:
        return {
            "message_id": self.message_id,
            "chat_id": self.chat.id,
            "from_id": self.sender.id,
            "from_bot": self.sender.is_bot,
            "date": self.date,
            "text": self.text,
            "html": self.html,
            "parse_mode": self.parse_mode,
            "entities": [e.to_api() for e in self.entities],
            "buttons": self.keyboard,
            "edits": len(self.history),
            "edit_history": self.history,
            "deleted": self.deleted,
            "caption": self.caption,
            "document": self.file.to_control()
            if self.file and self.file.kind == "document"
            else None,
            "photo": self.file.to_control() if self.file and self.file.kind == "photo" else None,
            "reply_to_message_id": self.reply_to.message_id if self.reply_to else None,
        }


@dataclass
class Callback:
    id: str
    user: User
    message: StoredMessage
    data: str
    answer: JSON | None = None


@dataclass
class Webhook:
    url: str
    secret_token: str | None = None
    allowed_updates: list[str] | None = None
    max_connections: int = 40
    last_error_date: int | None = None
    last_error_message: str | None = None

    def to_api(self, pending: int) -> JSON:
        info: JSON = {"url": self.url, "has_custom_certificate": False}
        info |= {"pending_update_count": pending, "max_connections": self.max_connections}
        if self.last_error_date is not None:
            info |= {"last_error_date": self.last_error_date}
            info |= {"last_error_message": self.last_error_message}
        if self.allowed_updates is not None:
            info["allowed_updates"] = self.allowed_updates
        return info
