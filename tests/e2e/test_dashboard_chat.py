"""The dashboard from the chat: /dashboard, the 📊 buttons and the menu button, through the bot.

A web_app button (Telegram's Mini App) is allowed only in private chats and only for https
pages (the sandbox refuses it elsewhere, as Telegram does); groups get a link button.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bot.dev.sandbox import SandboxClient
from tests.e2e.conftest import ALICE, DEPLOYS, OPS_TEXT, STRANGER, StartOpsgate

PAGE = "https://ops.example.test/app/"
MINIAPP = "https://t.me/opsgate_test_bot/ops"


def with_dashboard(ops_file: Path, extra: str = "") -> None:
    ops_file.write_text(OPS_TEXT + f'[dashboard]\nurl = "{PAGE}"\n{extra}')


async def test_dashboard_in_private_gives_the_mini_app_and_a_one_time_login_link(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    with_dashboard(ops_file)
    opsgate = await start_opsgate()
    menu = (await client.bot_info())["menu_buttons"]["default"]
    assert menu == {"type": "web_app", "text": "Dashboard", "web_app": {"url": PAGE}}

    reply = await client.reply_after(ALICE, ALICE, "/dashboard")
    assert "works once" in reply.text and "alice" in reply.text
    [[mini_app], [login]] = reply.buttons
    assert mini_app.web_app == PAGE and mini_app.url is None
    assert login.url is not None and login.url.startswith(PAGE + "login?token=")

    # The link, as the browser would follow it, on the real HTTP side.
    local = (
        f"http://127.0.0.1:{opsgate.http_port}"
        + urlsplit(login.url)._replace(scheme="", netloc="").geturl()
    )
    async with httpx.AsyncClient() as http:
        first = await http.get(local)
        assert first.status_code == 303 and first.headers["location"] == "/app/"
        cookie = first.headers["set-cookie"]
        assert "opsgate_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
        session = await http.get(f"http://127.0.0.1:{opsgate.http_port}/app/api/session")
        assert session.status_code == 200 and session.json()["name"] == "alice"
    async with httpx.AsyncClient() as again:
        replayed = await again.get(local)
        assert replayed.status_code == 401 and "set-cookie" not in replayed.headers
        assert "used already or has expired" in replayed.text


async def test_groups_get_a_link_button_and_no_login_link(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    with_dashboard(ops_file, f'miniapp_link = "{MINIAPP}"\n')
    await start_opsgate()
    reply = await client.reply_after(ALICE, DEPLOYS, "/dashboard")
    assert "private chat" in reply.text
    assert [[(b.url, b.web_app) for b in row] for row in reply.buttons] == [[(MINIAPP, None)]]

    status = await client.reply_after(ALICE, DEPLOYS, "/status")
    assert [[b.url for b in row] for row in status.buttons] == [[MINIAPP]]
    private_status = await client.reply_after(ALICE, ALICE, "/status")
    assert [[b.web_app for b in row] for row in private_status.buttons] == [[PAGE]]


async def test_without_a_dashboard_the_chat_says_how_to_set_one_up(
    start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    await start_opsgate()
    reply = await client.reply_after(ALICE, ALICE, "/dashboard")
    assert "not set up" in reply.text and "[dashboard] url" in reply.text
    assert (await client.reply_after(ALICE, ALICE, "/status")).buttons == []
    assert "default" not in (await client.bot_info())["menu_buttons"]


async def test_a_stranger_gets_no_link(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    with_dashboard(ops_file)
    opsgate = await start_opsgate()
    await client.send(STRANGER, STRANGER, "/dashboard")
    await client.wait_idle()
    sent = [m for m in await client.messages(STRANGER) if m.from_bot]
    assert all("login?token=" not in (b.url or "") for m in sent for row in m.buttons for b in row)
    rows = await opsgate.services.storage.db.execute_fetchall("SELECT * FROM dashboard_links")
    assert list(rows) == []
