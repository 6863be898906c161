"""Commands, refusals, unlisted chats and the error handler, through PTB over HTTP."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from telegram import Update

from bot.dev.sandbox import SandboxClient, SandboxMessage
from bot.runner import Opsgate
from handlers.commands import Command
from handlers.context import OpsContext
from tests.e2e.conftest import (
    ALICE,
    BOB,
    CAROL,
    DEPLOYS,
    STRANGER,
    TOKEN,
    UNLISTED,
    StartOpsgate,
)


async def bot_messages(client: SandboxClient, chat_id: int) -> list[SandboxMessage]:
    return [m for m in await client.messages(chat_id) if m.from_bot]


async def test_start_and_help_depend_on_roles(opsgate: Opsgate, client: SandboxClient) -> None:
    start = await client.reply_after(ALICE, ALICE, "/start")
    assert "opsgate" in start.text and "/help" in start.text

    admin_help = await client.reply_after(ALICE, ALICE, "/help")
    assert "/reload" in admin_help.text
    assert "need a role" not in admin_help.text

    bob_help = await client.reply_after(BOB, BOB, "/help")
    assert "/reload" not in bob_help.text
    assert "/whoami" in bob_help.text
    assert "15 more command(s) need a role you do not have" in bob_help.text


async def test_commands_menu_is_set_at_start(opsgate: Opsgate, client: SandboxClient) -> None:
    # Read back over the Bot API itself, as Telegram's clients would see the menu.
    names = [c.command for c in await opsgate.application.bot.get_my_commands()]
    assert names == [
        "start",
        "help",
        "whoami",
        "status",
        "reload",
        "services",
        "service",
        "restart",
        "deploy",
        "promote",
        "rollback",
        "releases",
        "history",
        "cancel",
        "bad",
        "unbad",
        "halt",
        "drill",
        "restore",
        "approvals",
        "audit",
        "alerts",
        "silences",
        "silence",
        "unsilence",
        "flags",
        "flag",
        "lock",
        "unlock",
        "locks",
        "report",
        "dashboard",
    ]


async def test_whoami_gives_ids_and_roles(opsgate: Opsgate, client: SandboxClient) -> None:
    reply = await client.reply_after(CAROL, DEPLOYS, "/whoami")
    assert "You: 1003 = carol" in reply.text
    assert f"This chat: {DEPLOYS}, supergroup (Deploys)" in reply.text
    assert "Roles: sre" in reply.text


async def test_status_lists_services(opsgate: Opsgate, client: SandboxClient) -> None:
    reply = await client.reply_after(BOB, DEPLOYS, "/status")
    assert re.search(r"opsgate \d+\.\d+\.\d+, up \d+s", reply.text)
    assert "Services known: 2" in reply.text
    assert "web (production) systemd web.service" in reply.text
    assert "worker (production) systemd worker.service" in reply.text


async def test_command_without_role_is_refused_and_audited(
    opsgate: Opsgate, client: SandboxClient
) -> None:
    reply = await client.reply_after(BOB, DEPLOYS, "/reload")
    assert reply.text == (
        "⛔ /reload needs the role admin. Ask an admin to add your id 1002 to roles.admin "
        "in the ops file."
    )
    events = await opsgate.services.audit.events(kind="command.refused")
    assert [(e.actor, e.subject, e.data["role_needed"]) for e in events] == [
        ("1002", "/reload", "admin")
    ]
    assert await opsgate.services.audit.events(kind="config.reloaded") == []


async def test_reload_keeps_old_config_on_problems(
    opsgate: Opsgate, client: SandboxClient, ops_file: Path
) -> None:
    good = ops_file.read_text()
    ops_file.write_text(good.replace('unit = "worker.service"', 'unit = "worker"'))
    reply = await client.reply_after(ALICE, DEPLOYS, "/reload")
    assert "Kept the old ops file" in reply.text
    assert "services.worker.unit: not a valid systemd unit name" in reply.text
    assert set(opsgate.services.ops.services) == {"web", "worker"}

    ops_file.write_text(good.replace("[services.worker]", "[services.api]"))
    reply = await client.reply_after(ALICE, DEPLOYS, "/reload")
    assert reply.text.startswith("✅ Reloaded")
    assert set(opsgate.services.ops.services) == {"web", "api"}
    assert len(await opsgate.services.audit.events(kind="config.reloaded")) == 1


async def test_unknown_command_gets_a_pointer(opsgate: Opsgate, client: SandboxClient) -> None:
    reply = await client.reply_after(BOB, DEPLOYS, "/deploi web")
    assert reply.text == "Unknown command /deploi. Send /help for the list."


async def test_overlong_command_is_refused(opsgate: Opsgate, client: SandboxClient) -> None:
    reply = await client.reply_after(ALICE, DEPLOYS, "/reload " + "x" * 3000)
    assert (
        reply.text == "That command is too long (3008 characters; at most 1024). Nothing was done."
    )
    assert await opsgate.services.audit.events(kind="config.reloaded") == []


async def test_unlisted_chats_are_ignored_except_whoami(
    opsgate: Opsgate, client: SandboxClient
) -> None:
    await client.send(ALICE, UNLISTED, "/status")
    await client.send(STRANGER, STRANGER, "/help")
    await client.send(BOB, DEPLOYS, "/status@some_other_bot")
    # Updates are handled one at a time, in order: once /whoami is answered, the three above
    # have been handled too, so their silence is not just slowness.
    reply = await client.reply_after(STRANGER, UNLISTED, "/whoami")
    assert "You: 4242 (not in [people])" in reply.text
    assert 'add 4242 = "yourname" under [people]' in reply.text
    assert [m.message_id for m in await bot_messages(client, UNLISTED)] == [reply.message_id]
    assert await bot_messages(client, STRANGER) == []
    assert await bot_messages(client, DEPLOYS) == []


async def test_error_handler_answers_with_a_logged_ref(
    start_opsgate: StartOpsgate, client: SandboxClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(update: Update, context: OpsContext) -> None:
        raise RuntimeError(f"exploded while talking to /bot{TOKEN}/getMe")

    await start_opsgate(extra_commands=[Command("boom", "fails on purpose", boom)])
    with caplog.at_level(logging.DEBUG):
        reply = await client.reply_after(BOB, DEPLOYS, "/boom")
    match = re.search(r"Something went wrong \(ref ([0-9a-f]{8})\)", reply.text)
    assert match, reply.text
    ref = match.group(1)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and ref in r.getMessage()]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert "RuntimeError" in caplog.text
