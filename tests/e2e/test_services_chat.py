"""/services, /service and /restart through the real bot, against a real systemd and supervisord."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.dev import demo_web as testservice
from bot.dev.harness.supervisord import SupervisordSandbox
from bot.dev.harness.systemd import SystemdSandbox
from bot.dev.sandbox import SandboxClient, SandboxMessage
from bot.runner import Opsgate
from services.control.supervisor import program_section
from services.control.systemd import SystemdManager
from tests.e2e.conftest import (
    ALICE,
    BOB,
    CAROL,
    DEPLOYS,
    OPS_TEXT,
    StartOpsgate,
    callback_answer_text,
)
from tests.services.control.test_systemd import service_unit

PEOPLE_AND_CHATS = OPS_TEXT.split("[environments.production]")[0]


@pytest.fixture
async def units(systemd_sandbox: SystemdSandbox) -> AsyncIterator[dict[str, int]]:
    """t-web (healthy) and t-sick (running, answers 503) under the sandbox's systemd."""
    manager = SystemdManager(systemd_sandbox.host)
    ports = {"web": testservice.free_port(), "sick": testservice.free_port()}
    await manager.install_unit("t-web.service", service_unit("--port", str(ports["web"])))
    sick = service_unit("--port", str(ports["sick"]), "--unhealthy")
    await manager.install_unit("t-sick.service", sick)
    for name in ("t-web.service", "t-sick.service"):
        await manager.start(name)
    yield ports
    for name in ("t-web.service", "t-sick.service"):
        await manager.stop(name)
        await manager.remove_unit(name)


@pytest.fixture
async def program(supervisord_sandbox: SupervisordSandbox) -> AsyncIterator[int]:
    manager = supervisord_sandbox.manager()
    port = testservice.free_port()
    argv = [sys.executable, testservice.__file__, "--port", str(port)]
    section = program_section(
        "t-api", argv, directory=str(Path(testservice.__file__).parent), startsecs=1
    )
    await manager.add_program("t-api", section)
    await manager.start("t-api")
    yield port
    await manager.remove_program("t-api")


def write_ops(
    ops_file: Path,
    systemd_sandbox: SystemdSandbox,
    supervisord: SupervisordSandbox,
    ports: dict[str, int],
    api_port: int,
) -> None:
    ops_file.write_text(
        PEOPLE_AND_CHATS
        + f"""
[environments.production]
[hosts.sandbox]
prefix = ["nsenter", "-t", "{systemd_sandbox.pid}", "-m", "-p"]
[services.web]
environment = "production"
host = "sandbox"
unit = "t-web.service"
[services.web.health]
url = "http://127.0.0.1:{ports["web"]}/health"
expect_json = {{ status = "healthy" }}
consecutive = 2
interval_s = 0.1
[services.sick]
environment = "production"
host = "sandbox"
unit = "t-sick.service"
[services.sick.health]
url = "http://127.0.0.1:{ports["sick"]}/health"
attempts = 1
within_s = 2
interval_s = 0.2
[services.api]
environment = "production"
manager = "supervisor"
program = "t-api"
supervisor_config = "{supervisord.config_path}"
supervisorctl = "{supervisord.supervisorctl}"
health = {{ tcp = "127.0.0.1:{api_port}" }}
[services.ghost]
environment = "production"
host = "sandbox"
unit = "t-ghost.service"
"""
    )


@pytest.fixture
async def opsgate_with_services(
    start_opsgate: StartOpsgate,
    ops_file: Path,
    systemd_sandbox: SystemdSandbox,
    supervisord_sandbox: SupervisordSandbox,
    units: dict[str, int],
    program: int,
) -> Opsgate:
    write_ops(ops_file, systemd_sandbox, supervisord_sandbox, units, program)
    return await start_opsgate()


def line_of(message: SandboxMessage, name: str) -> str:
    return next(line for line in message.text.splitlines() if f" {name} (" in line)


async def test_services_overview(opsgate_with_services: Opsgate, client: SandboxClient) -> None:
    reply = await client.reply_after(BOB, DEPLOYS, "/services", timeout=30)
    assert line_of(reply, "web").startswith("🟢 web (production) active/running for")
    assert "healthy" in line_of(reply, "web") and "ms" in line_of(reply, "web")
    assert line_of(reply, "sick").startswith("🟡 sick (production) active/running")
    assert "unhealthy: HTTP 503, expected 200" in line_of(reply, "sick")
    assert line_of(reply, "api").startswith("🟢 api (production) RUNNING")
    assert "cannot ask systemd: unit t-ghost.service not found" in line_of(reply, "ghost")


async def test_service_details_show_pid_and_journal(
    opsgate_with_services: Opsgate, client: SandboxClient
) -> None:
    reply = await client.reply_after(BOB, DEPLOYS, "/service web", timeout=30)
    assert "systemd t-web.service" in reply.text
    assert "State: active/running" in reply.text
    assert "demo-web pid" in reply.text  # its own line, from the journal
    supervised = await client.reply_after(BOB, DEPLOYS, "/service api", timeout=30)
    assert "supervisor t-api" in supervised.text
    assert "listening on 127.0.0.1" in supervised.text


BAD_NAMES = ["nope", "web; rm -rf /", "$(id)", "-web", "web\nsick", "../web", "<b>web</b>"]


async def test_bad_service_names_are_refused(
    opsgate_with_services: Opsgate, client: SandboxClient
) -> None:
    for bad in BAD_NAMES:
        for command in ("/restart", "/service"):
            reply = await client.reply_after(CAROL, DEPLOYS, f"{command} {bad}")
            if command == "/service" and bad == "web\nsick":  # read as /service web sick
                assert reply.text == "⛔ web has no environment “sick” (it has: production)."
                continue
            assert reply.text.startswith("Unknown service "), (command, bad, reply.text)
            assert "Known: api, ghost, sick, web." in reply.text
    usage = await client.reply_after(CAROL, DEPLOYS, "/restart")
    assert usage.text == "Give a service name, e.g. /service web."
    assert await opsgate_with_services.services.audit.events(kind="restart.requested") == []


async def test_restart_confirmed_by_button_shows_progress_and_new_pid(
    opsgate_with_services: Opsgate, client: SandboxClient, systemd_sandbox: SystemdSandbox
) -> None:
    manager = SystemdManager(systemd_sandbox.host)
    old_pid = (await manager.show("t-web.service")).main_pid

    refused = await client.reply_after(BOB, DEPLOYS, "/restart web")
    assert "needs the role sre" in refused.text

    prompt = await client.reply_after(CAROL, DEPLOYS, "/restart web")
    assert prompt.text.startswith("Restart web (production, t-web.service)?")
    assert [b.text for row in prompt.buttons for b in row] == ["🔁 Restart web", "Cancel"]
    bob_press = await client.press_button(BOB, DEPLOYS, prompt.message_id, 1)
    assert await callback_answer_text(client, bob_press) == "This needs the role sre."

    press = await client.press_button(ALICE, DEPLOYS, prompt.message_id, 1)
    assert await callback_answer_text(client, press) == "Restarting web…"

    def finished(messages: list[SandboxMessage]) -> SandboxMessage | None:
        done = next(m for m in messages if m.message_id == prompt.message_id)
        return done if ("restarted" in done.text or "failed" in done.text) else None

    done = await client.wait_for(DEPLOYS, finished, timeout=60)
    new_pid = (await manager.show("t-web.service")).main_pid
    assert new_pid != old_pid
    assert done.text.startswith("🔁 Restarting web for alice")
    assert "✅ systemd: restart t-web.service" in done.text
    assert f"pid {old_pid} → {new_pid}" in done.text
    assert "✅ health: 2 in a row" in done.text
    assert f"✅ web restarted and healthy (pid {old_pid} → {new_pid})" in done.text
    assert done.buttons == []

    restart_data = prompt.buttons[0][0].data
    assert restart_data is not None and restart_data.startswith("rs:ok:")
    again = await client.press(CAROL, DEPLOYS, prompt.message_id, restart_data)
    assert await callback_answer_text(client, again) == "This button is no longer valid."
    kinds = [e.kind for e in await opsgate_with_services.services.audit.events(subject="web")]
    assert kinds == ["restart.requested", "restart.confirmed", "restart.finished"]


async def test_restart_cancel_and_unhealthy_restart(
    opsgate_with_services: Opsgate, client: SandboxClient
) -> None:
    prompt = await client.reply_after(CAROL, DEPLOYS, "/restart web")
    await client.press_button(CAROL, DEPLOYS, prompt.message_id, 2)
    cancelled = await client.wait_for(
        DEPLOYS,
        lambda ms: next((m for m in ms if m.message_id == prompt.message_id and m.edits), None),
    )
    assert cancelled.text == "Restart of web cancelled by carol."

    prompt = await client.reply_after(CAROL, DEPLOYS, "/restart sick")
    await client.press_button(CAROL, DEPLOYS, prompt.message_id, 1)
    done = await client.wait_for(
        DEPLOYS,
        lambda ms: next(
            (m for m in ms if m.message_id == prompt.message_id and "❌ Restart" in m.text), None
        ),
        timeout=60,
    )
    assert "❌ health: 2 in a row" in done.text
    assert "❌ Restart of sick failed: HTTP 503, expected 200" in done.text
    assert "See /service sick for its state and log." in done.text
    finished = await opsgate_with_services.services.audit.events(kind="restart.finished")
    assert [(e.subject, e.data["ok"]) for e in finished] == [("sick", False)]
