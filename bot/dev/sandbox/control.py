"""The control API under ``/control/``: how tests and the terminal chat play the users.

Plain JSON in and out. Bad input answers 400 and unknown things 404, both as ``{"error": ...}``.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.dev.sandbox.models import JSON, Chat, StoredFile, User
from bot.dev.sandbox.state import SandboxState

Endpoint = Callable[[Request], Awaitable[Response]]
Action = Callable[[SandboxState, Request], Awaitable[Any]]
WAIT_LIMIT = 60.0


def _endpoint(state: SandboxState, action: Action) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        try:
            result = await action(state, request)
        except KeyError as exc:
            return JSONResponse({"error": f"bad request: missing {exc}"}, status_code=400)
        except LookupError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": f"bad request: {exc}"}, status_code=400)
        return JSONResponse(result)

    return endpoint


async def _body(request: Request) -> JSON:
    body = await request.json()
    if not isinstance(body, dict):
        raise TypeError("expected a JSON object")
    return body


async def add_user(state: SandboxState, request: Request) -> JSON:
    body = await _body(request)
    user = User(int(body["id"]), str(body["first_name"]), body.get("username"))
    state.users[user.id] = user
    if user.id in state.chats:  # keep an existing private chat pointing at the new name
        state.chats[user.id].peer = user
    return {"ok": True}


async def add_chat(state: SandboxState, request: Request) -> JSON:
    body = await _body(request)
    chat_id, kind = int(body["id"]), str(body["type"])
    if kind not in ("private", "group", "supergroup"):
        raise ValueError(f"unknown chat type {kind!r}")
    peer = state.user(chat_id) if kind == "private" else None
    state.chats[chat_id] = Chat(chat_id, kind, body.get("title"), peer)
    return {"ok": True}


async def send(state: SandboxState, request: Request) -> JSON:
    """A user's message: text, or a photo/document ({kind, name, mime_type, data: base64})
    with `text` as its caption."""
    body = await _body(request)
    reply_to = body.get("reply_to_message_id")
    sent = body.get("file")
    file = None
    if isinstance(sent, dict):
        kind = str(sent["kind"])
        if kind not in ("photo", "document"):
            raise ValueError(f"unknown file kind {kind!r}")
        number = state.next_id()
        prefix = "AgAC" if kind == "photo" else "BQAC"
        data = base64.b64decode(str(sent["data"]))
        file = StoredFile(
            kind,
            f"{prefix}{number}",
            f"AQAD{number}",
            str(sent.get("name", "file")),
            str(sent.get("mime_type", "application/octet-stream")),
            data,
        )
        file.width, file.height = (1, 1) if kind == "photo" else (0, 0)
    return state.user_send(
        int(body["user_id"]),
        int(body["chat_id"]),
        str(body.get("text", "")),
        None if reply_to is None else int(reply_to),
        file,
    )


async def press(state: SandboxState, request: Request) -> JSON:
    body = await _body(request)
    user_id, chat_id = int(body["user_id"]), int(body["chat_id"])
    return state.user_press(user_id, chat_id, int(body["message_id"]), str(body["data"]))


async def messages(state: SandboxState, request: Request) -> list[JSON]:
    chat_id = int(request.path_params["chat_id"])
    return [m.to_control() for m in state.messages.get(chat_id, {}).values()]


async def callback_answer(state: SandboxState, request: Request) -> JSON:
    callback = state.callbacks.get(request.path_params["callback_id"])
    if callback is None or callback.answer is None:
        raise LookupError("not answered (yet)")
    return callback.answer


async def bot_info(state: SandboxState, request: Request) -> JSON:
    webhook = state.webhook.to_api(len(state.updates)) if state.webhook else None
    return {
        "commands": state.commands,
        "menu_buttons": state.menu_buttons,
        "webhook": webhook,
        "pending_update_count": len(state.updates),
    }


async def wait(state: SandboxState, request: Request) -> JSON:
    since = int(request.query_params.get("since", state.version))
    hold = min(float(request.query_params.get("timeout", 10)), WAIT_LIMIT)
    return {"version": await state.wait_change(since, hold)}


async def version(state: SandboxState, request: Request) -> JSON:
    return {"version": state.version}


async def flood(state: SandboxState, request: Request) -> JSON:
    body = await _body(request)
    for name in ("per_chat_per_minute", "global_per_second"):
        if name in body:
            value = body[name]
            setattr(state.flood, name, None if value is None else int(value))
    return {"ok": True}


async def outage(state: SandboxState, request: Request) -> JSON:
    state.outage = bool((await _body(request))["on"])
    return {"ok": True}


async def slow(state: SandboxState, request: Request) -> JSON:
    """Answer every Bot API call but getUpdates only after `seconds` (0: at once again)."""
    state.slow_s = max(0.0, float((await _body(request))["seconds"]))
    return {"ok": True}


async def faults(state: SandboxState, request: Request) -> JSON:
    """Set injected failures ({rate_429, rate_5xx, retry_after, seed}); GET-like answer with
    the counts so far."""
    body = await _body(request)
    if body:
        state.faults.configure(
            float(body.get("rate_429", 0)),
            float(body.get("rate_5xx", 0)),
            int(body.get("retry_after", 1)),
            int(body.get("seed", 0)),
        )
    return {"injected": state.faults.injected, "flood_refusals": state.faults.flood_refusals}


async def reset(state: SandboxState, request: Request) -> JSON:
    state.reset()
    return {"ok": True}


def control_routes(state: SandboxState) -> list[Route]:
    table: list[tuple[str, str, Action]] = [
        ("POST", "/users", add_user),
        ("POST", "/chats", add_chat),
        ("POST", "/send", send),
        ("POST", "/press", press),
        ("GET", "/chats/{chat_id}/messages", messages),
        ("GET", "/callback_answers/{callback_id}", callback_answer),
        ("GET", "/bot", bot_info),
        ("GET", "/wait", wait),
        ("GET", "/version", version),
        ("POST", "/flood", flood),
        ("POST", "/outage", outage),
        ("POST", "/slow", slow),
        ("POST", "/faults", faults),
        ("POST", "/reset", reset),
    ]
    return [Route(path, _endpoint(state, action), methods=[verb]) for verb, path, action in table]
