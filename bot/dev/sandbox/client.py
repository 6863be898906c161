"""An async client for the sandbox's control API: play users, read transcripts, wait for the bot."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar, overload

import httpx

T = TypeVar("T")


class SandboxError(RuntimeError):
    """The control API refused a request (unknown chat or message, bad input)."""


@dataclass(frozen=True)
class Button:
    text: str
    data: str | None = None
    url: str | None = None
    web_app: str | None = None  # the Mini App's URL of a web_app button


@dataclass(frozen=True)
class SandboxFile:
    name: str
    size: int
    mime_type: str
    data: bytes


@dataclass(frozen=True)
class SandboxMessage:
    message_id: int
    from_id: int
    from_bot: bool
    text: str
    html: str
    buttons: list[list[Button]]
    edits: int
    deleted: bool
    caption: str | None = None
    document: SandboxFile | None = None
    photo: SandboxFile | None = None
    parse_mode: str | None = None
    reply_to_message_id: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SandboxMessage:
        buttons = [
            [
                Button(
                    b["text"],
                    b.get("callback_data"),
                    b.get("url"),
                    (b.get("web_app") or {}).get("url"),
                )
                for b in row
            ]
            for row in data["buttons"]
        ]
        files = {
            kind: SandboxFile(f["name"], f["size"], f["mime_type"], base64.b64decode(f["data"]))
            for kind in ("document", "photo")
            if (f := data.get(kind))
        }
        return cls(
            data["message_id"],
            data["from_id"],
            data["from_bot"],
            data["text"],
            data["html"],
            buttons,
            data["edits"],
            data["deleted"],
            data.get("caption"),
            files.get("document"),
            files.get("photo"),
            data.get("parse_mode"),
            data.get("reply_to_message_id"),
        )

    def __str__(self) -> str:
        who = "bot" if self.from_bot else f"user{self.from_id}"
        flags = " [deleted]" if self.deleted else f" [edited x{self.edits}]" if self.edits else ""
        body = self.text or (self.caption or "") + (
            f" <{self.document.name}>" if self.document else ""
        )
        keys = " | ".join(b.text for row in self.buttons for b in row)
        return f"#{self.message_id} {who}{flags}: {body}" + (f" [{keys}]" if keys else "")


class SandboxClient:
    def __init__(self, control_url: str) -> None:
        # Long polls (/wait) hold the request up to their own timeout; leave room above it.
        self._http = httpx.AsyncClient(base_url=control_url.rstrip("/"), timeout=70.0)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, verb: str, path: str, **kwargs: Any) -> Any:
        response = await self._http.request(verb, path, **kwargs)
        if response.is_error:
            raise SandboxError(f"{verb} {path}: {response.status_code} {response.text}")
        return response.json()

    async def add_user(self, user_id: int, first_name: str, username: str | None = None) -> None:
        body = {"id": user_id, "first_name": first_name, "username": username}
        await self._call("POST", "/users", json=body)

    async def add_chat(self, chat_id: int, type: str, title: str | None = None) -> None:
        await self._call("POST", "/chats", json={"id": chat_id, "type": type, "title": title})

    async def send(self, user_id: int, chat_id: int, text: str, reply_to: int | None = None) -> int:
        body = {"user_id": user_id, "chat_id": chat_id, "text": text}
        result = await self._call("POST", "/send", json=body | {"reply_to_message_id": reply_to})
        return int(result["message_id"])

    async def send_file(
        self,
        user_id: int,
        chat_id: int,
        kind: str,
        name: str,
        data: bytes,
        caption: str = "",
        reply_to: int | None = None,
    ) -> int:
        """A user sends a photo or document (`kind`), with a caption."""
        file = {"kind": kind, "name": name, "data": base64.b64encode(data).decode()}
        body = {"user_id": user_id, "chat_id": chat_id, "text": caption, "file": file}
        result = await self._call("POST", "/send", json=body | {"reply_to_message_id": reply_to})
        return int(result["message_id"])

    async def press(self, user_id: int, chat_id: int, message_id: int, data: str) -> str:
        """Press a button by its callback_data; it need not be on the keyboard (forged presses)."""
        body = {"user_id": user_id, "chat_id": chat_id, "message_id": message_id, "data": data}
        return str((await self._call("POST", "/press", json=body))["callback_query_id"])

    async def press_button(self, user_id: int, chat_id: int, message_id: int, index: int) -> str:
        """Press the index-th button (from 1, row by row) that is on the message now."""
        message = next(
            (m for m in await self.messages(chat_id) if m.message_id == message_id), None
        )
        buttons = [b for row in message.buttons for b in row] if message else []
        if not 1 <= index <= len(buttons) or buttons[index - 1].data is None:
            raise LookupError(f"message {message_id} has no callback button #{index}: {message}")
        data = buttons[index - 1].data
        assert data is not None  # checked above; mypy cannot see through the index
        return await self.press(user_id, chat_id, message_id, data)

    async def messages(self, chat_id: int) -> list[SandboxMessage]:
        rows = await self._call("GET", f"/chats/{chat_id}/messages")
        return [SandboxMessage.from_json(row) for row in rows]

    async def callback_answer(self, callback_id: str) -> dict[str, Any] | None:
        response = await self._http.get(f"/callback_answers/{callback_id}")
        return None if response.status_code == 404 else dict(response.json())

    async def bot_info(self) -> dict[str, Any]:
        return dict(await self._call("GET", "/bot"))

    async def version(self) -> int:
        return int((await self._call("GET", "/version"))["version"])

    async def wait_change(self, since: int, timeout: float) -> int:
        """The version once it exceeds ``since``, or the current one after ``timeout`` seconds."""
        params = {"since": since, "timeout": timeout}
        return int((await self._call("GET", "/wait", params=params))["version"])

    @overload
    async def wait_for(
        self,
        chat_id: int,
        predicate: Callable[[list[SandboxMessage]], bool],
        timeout: float = ...,
    ) -> list[SandboxMessage]: ...

    @overload
    async def wait_for(
        self,
        chat_id: int,
        predicate: Callable[[list[SandboxMessage]], T | None],
        timeout: float = ...,
    ) -> T: ...

    async def wait_for(
        self,
        chat_id: int,
        predicate: Callable[[list[SandboxMessage]], Any],
        timeout: float = 10.0,
    ) -> Any:
        """Re-read the transcript after every change until ``predicate`` is truthy.

        Returns the predicate's value, or the transcript when that value is ``True``.
        """
        deadline = time.monotonic() + timeout
        while True:
            version = await self.version()
            transcript = await self.messages(chat_id)
            result = predicate(transcript)
            if result:
                return transcript if result is True else result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                lines = "\n".join(str(m) for m in transcript) or "(no messages)"
                raise TimeoutError(f"chat {chat_id}: condition not met in {timeout}s:\n{lines}")
            await self.wait_change(version, remaining)

    async def wait_idle(self, quiet: float = 0.3, timeout: float = 10.0) -> None:
        """Return once nothing changed for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        version = await self.version()
        while time.monotonic() < deadline:
            latest = await self.wait_change(version, quiet)
            if latest == version:
                return
            version = latest
        raise TimeoutError(f"sandbox still changing after {timeout}s")

    async def reply_after(
        self,
        user_id: int,
        chat_id: int,
        text: str,
        timeout: float = 10.0,
    ) -> SandboxMessage:
        """Send ``text`` as the user, then wait for the bot's first message after it."""
        sent = await self.send(user_id, chat_id, text)

        def first_reply(messages: list[SandboxMessage]) -> SandboxMessage | None:
            return next((m for m in messages if m.from_bot and m.message_id > sent), None)

        return await self.wait_for(chat_id, first_reply, timeout)

    async def set_flood(
        self, per_chat_per_minute: int | None = None, global_per_second: int | None = None
    ) -> None:
        """Set both limits; None switches a limit off."""
        body = {"per_chat_per_minute": per_chat_per_minute, "global_per_second": global_per_second}
        await self._call("POST", "/flood", json=body)

    async def set_faults(
        self, rate_429: float = 0, rate_5xx: float = 0, retry_after: int = 1, seed: int = 0
    ) -> dict[str, Any]:
        """Inject failures of sending methods; returns the counts so far."""
        body = {"rate_429": rate_429, "rate_5xx": rate_5xx, "retry_after": retry_after}
        return dict(await self._call("POST", "/faults", json=body | {"seed": seed}))

    async def fault_counts(self) -> dict[str, Any]:
        """Injected 429s/5xx so far, and 429s the flood limits gave (`flood_refusals`)."""
        return dict(await self._call("POST", "/faults", json={}))

    async def set_outage(self, on: bool) -> None:
        await self._call("POST", "/outage", json={"on": on})

    async def set_slow(self, seconds: float) -> None:
        """Every Bot API answer but getUpdates waits `seconds` from now on (0 ends it)."""
        await self._call("POST", "/slow", json={"seconds": seconds})

    async def reset(self) -> None:
        await self._call("POST", "/reset")
