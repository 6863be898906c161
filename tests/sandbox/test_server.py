"""The sandbox over HTTP: real PTB Applications polling it, webhooks, tokens, outages."""

import asyncio
import contextlib
import datetime as dtm
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import Conflict, InvalidToken, NetworkError
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes

from bot.dev.sandbox import SandboxClient, SandboxServer, SandboxThread
from bot.dev.sandbox.server import parse_multipart

ANN = 42


@contextlib.asynccontextmanager
async def polling(app: Application[Any, Any, Any, Any, Any, Any]) -> AsyncIterator[None]:
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0, timeout=dtm.timedelta(seconds=1))
        try:
            yield
        finally:
            await app.updater.stop()
            await app.stop()


async def test_command_and_button_round_trip_through_polling(
    sandbox: SandboxThread, token: str, client: SandboxClient
) -> None:
    async def deploy(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None and update.effective_user is not None and context.args
        service = context.args[0]
        button = InlineKeyboardButton("Confirm", callback_data=f"deploy:{service}")
        text = f"Deploy <b>{service}</b>, {update.effective_user.first_name}?"
        await update.message.reply_html(text, reply_markup=InlineKeyboardMarkup([[button]]))

    async def confirm(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None and query.data is not None
        await query.answer("Starting")
        await query.edit_message_text(f"Deploying {query.data.split(':')[1]}")

    app = Application.builder().token(token).base_url(sandbox.base_url).build()
    app.add_handler(CommandHandler("deploy", deploy))
    app.add_handler(CallbackQueryHandler(confirm, pattern=r"^deploy:"))
    async with polling(app):
        question = await client.reply_after(ANN, ANN, "/deploy@opsgate_bot api")
        assert (question.text, question.html) == ("Deploy api, Ann?", "Deploy <b>api</b>, Ann?")
        assert question.reply_to_message_id is None and question.buttons[0][0].data == "deploy:api"
        query = await client.press_button(ANN, ANN, question.message_id, 1)
        edited = await client.wait_for(
            ANN,
            lambda ms: next(
                (m for m in ms if m.edits and m.message_id == question.message_id), None
            ),
        )
        assert edited.text == "Deploying api" and edited.buttons == []
        assert await client.callback_answer(query) == {
            "text": "Starting",
            "show_alert": False,
            "url": None,
            "cache_time": 0,
        }
    assert (await client.bot_info())["pending_update_count"] == 0  # the updater confirmed all


async def test_wrong_token_and_unknown_method(
    sandbox: SandboxThread, client: SandboxClient
) -> None:
    async with httpx.AsyncClient() as http:
        wrong = await http.post(f"{sandbox.base_url}123:nope/getMe")
        assert (wrong.status_code, wrong.json()) == (
            401,
            {"ok": False, "error_code": 401, "description": "Unauthorized"},
        )
    with pytest.raises(InvalidToken):
        async with Bot("123:nope", base_url=sandbox.base_url):
            pass
    async with httpx.AsyncClient() as http:
        missing = await http.post(f"{sandbox.base_url}7000000001:AAsandbox-test-token/sendSticker")
        assert (missing.status_code, missing.json()["description"]) == (404, "Not Found")


async def test_parameters_as_json_query_and_form(
    sandbox: SandboxThread, token: str, client: SandboxClient
) -> None:
    url = f"{sandbox.base_url}{token}"
    markup = {"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]}
    async with httpx.AsyncClient() as http:
        by_json = await http.post(
            f"{url}/sendMessage", json={"chat_id": ANN, "text": "j", "reply_markup": markup}
        )
        by_form = await http.post(
            f"{url}/sendMessage",
            data={"chat_id": str(ANN), "text": "f", "reply_markup": json.dumps(markup)},
        )
        by_query = await http.get(f"{url}/SENDMESSAGE", params={"chat_id": ANN, "text": "q"})
        broken = await http.post(
            f"{url}/sendMessage", data={"chat_id": str(ANN), "text": "x", "reply_markup": "{"}
        )
    assert [r.json()["result"]["text"] for r in (by_json, by_form, by_query)] == ["j", "f", "q"]
    assert by_form.json()["result"]["reply_markup"] == markup
    assert (
        broken.json()["description"] == "Bad Request: can't parse reply keyboard markup JSON object"
    )


def test_parse_multipart_keeps_binary_parts() -> None:
    request = httpx.Request(
        "POST",
        "http://x",
        data={"chat_id": "7"},
        files={"document": ("a.bin", b"\r\n--\x00", "application/x-bin")},
    )
    values, uploads = parse_multipart(request.headers["content-type"], request.read())
    assert values == {"chat_id": "7"}
    assert (uploads["document"].filename, uploads["document"].data) == ("a.bin", b"\r\n--\x00")
    assert uploads["document"].content_type == "application/x-bin"


async def test_outage_answers_bad_gateway(bot: Bot, client: SandboxClient) -> None:
    await client.set_outage(True)
    with pytest.raises(NetworkError, match="Bad Gateway"):
        await bot.send_message(ANN, "lost?")
    await client.set_outage(False)
    await bot.send_message(ANN, "back")
    assert [m.text for m in await client.messages(ANN)] == ["back"]


class Receiver:
    """A minimal HTTP endpoint that fails the first ``failures`` requests."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self.received: list[tuple[dict[str, Any], dict[str, str]]] = []
        self.changed = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
        headers = {k.lower(): v for k, v in headers.items()}
        body = await reader.readexactly(int(headers["content-length"]))
        self.attempts += 1
        status = "500 Internal Server Error" if self.attempts <= self.failures else "200 OK"
        if status == "200 OK":
            self.received.append((json.loads(body), headers))
            self.changed.set()
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()


async def test_webhook_delivers_in_order_with_secret(bot: Bot, client: SandboxClient) -> None:
    receiver = Receiver(failures=2)
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        assert await bot.set_webhook(f"http://127.0.0.1:{port}/hook", secret_token="s3cret")
        with pytest.raises(
            Conflict, match=r"(?i)can't use getupdates method while webhook is active"
        ):
            await bot.get_updates()
        await client.send(ANN, ANN, "/first")
        await client.send(ANN, ANN, "second")
        async with asyncio.timeout(5):
            while len(receiver.received) < 2:
                receiver.changed.clear()
                await receiver.changed.wait()
        texts = [update["message"]["text"] for update, _ in receiver.received]
        assert texts == ["/first", "second"] and receiver.attempts == 4
        assert {h["x-telegram-bot-api-secret-token"] for _, h in receiver.received} == {"s3cret"}
        async with asyncio.timeout(2):  # confirmed once the sandbox reads our 200
            while (info := await bot.get_webhook_info()).pending_update_count:
                await asyncio.sleep(0.01)
        assert info.url.endswith("/hook")
        assert info.last_error_message is not None
        assert await bot.delete_webhook()
        await client.send(ANN, ANN, "polled")
        assert [u.message.text for u in await bot.get_updates() if u.message] == ["polled"]


async def test_server_on_the_callers_loop(token: str) -> None:
    server = SandboxServer(token)
    with pytest.raises(RuntimeError):
        _ = server.port
    await server.start()
    assert server.base_url == f"http://127.0.0.1:{server.port}/bot"
    assert server.control_url == f"http://127.0.0.1:{server.port}/control"
    bot = Bot(token, base_url=server.base_url)
    await bot.initialize()
    try:
        poll = asyncio.create_task(bot.get_updates(timeout=30))
        # Stop only once the poll is in the server: stopped before it arrives, the client's
        # connection is cut instead (seen under load, with a fixed 50 ms wait).
        async with asyncio.timeout(10):
            while server.state._poll_generation == 0:
                await asyncio.sleep(0.01)
        async with asyncio.timeout(3):  # a long poll in flight must not hold up stop()
            await server.stop()
            assert await poll == ()
    finally:
        await bot.shutdown()


def test_thread_reports_a_failed_start(sandbox: SandboxThread, token: str) -> None:
    with (
        pytest.raises(RuntimeError, match="failed to start"),
        SandboxThread(token, port=sandbox.port),
    ):
        pass
