"""`opsgate demo`: the Bot API sandbox, the real bot and a terminal chat, offline, no token."""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
import tempfile
from contextlib import ExitStack
from importlib import resources
from pathlib import Path

from pydantic import SecretStr

from bot import demo_web
from bot.logs import configure_logging
from bot.runner import Opsgate
from bot.sandbox import SandboxClient, SandboxServer
from bot.supervisord_local import PrivateSupervisord, SupervisordUnavailable, private_supervisord
from bot.terminal import ScriptError, TerminalChat
from config.opsfile import OpsConfig, load_ops_file
from config.settings import Settings
from services.hosts import LocalHost
from services.supervisor import SupervisorManager, program_section

# Not a secret: the sandbox accepts only this token, and it never leaves this machine.
DEMO_TOKEN = "1000000001:DEMO-sandbox-token-offline-only"  # noqa: S105
# A group the demo ops file does not list, to show that opsgate ignores it.
UNLISTED_GROUP = ("lobby", -100999)


def demo_ops_path() -> Path:
    return Path(str(resources.files("config").joinpath("demo.toml")))


def demo_script_lines() -> list[str]:
    return resources.files("bot").joinpath("demo.script").read_text().splitlines()


def group_names(ops: OpsConfig) -> dict[str, int]:
    """Chat names for the terminal: deploys, approvals, alerts (one per distinct chat)."""
    names: dict[str, int] = {}
    for name, chat_id in (("deploys", ops.chats.deploys), ("approvals", ops.chats.approvals)):
        if chat_id is not None:
            names[name] = chat_id
    alerts = ops.chats.alerts
    for severity, chat_id in (("critical", alerts.critical), ("warning", alerts.warning)):
        if chat_id is not None and chat_id not in names.values():
            names["alerts" if severity == "critical" else f"alerts-{severity}"] = chat_id
    if alerts.info is not None and alerts.info not in names.values():
        names["alerts-info"] = alerts.info
    return names


async def seed_sandbox(client: SandboxClient, ops: OpsConfig) -> dict[str, int]:
    """Create the ops file's people and group chats in the sandbox; returns the groups."""
    for user_id, name in ops.people.items():
        await client.add_user(user_id, name.capitalize(), username=name)
    groups = group_names(ops)
    for name, chat_id in groups.items():
        await client.add_chat(chat_id, "supergroup", title=name.capitalize())
    return groups


def demo_settings(sandbox: SandboxServer, ops_path: Path, workdir: Path) -> Settings:
    return Settings(
        _env_file=None,
        bot_token=SecretStr(DEMO_TOKEN),
        bot_api_url=sandbox.base_url,
        config=ops_path,
        db=workdir / "demo.db",
        http_addr="127.0.0.1:0",
        api_token=SecretStr(secrets.token_urlsafe(16)),  # OFREP stays closed to strangers
        log_level="WARNING",
    )


DEMO_PROGRAM = "demo-web"
# Stand-ins in config/demo.toml, replaced by the running demo's real paths and port.
PLACEHOLDERS = ("/tmp/opsgate-demo/supervisord.conf", '"supervisorctl"', "127.0.0.1:18080")  # noqa: S108
DEMO_WEB = str(Path(demo_web.__file__).resolve())


async def start_demo_service(sv: PrivateSupervisord) -> int:
    """Run bot/demo_web.py under the private supervisord; returns its port."""
    port = demo_web.free_port()
    manager = SupervisorManager(
        LocalHost(), str(sv.config_path), conf_dir=str(sv.conf_dir), supervisorctl=sv.supervisorctl
    )
    argv = [sys.executable, DEMO_WEB, "--port", str(port)]
    section = program_section(DEMO_PROGRAM, argv, directory=str(sv.directory), startsecs=1)
    await manager.add_program(DEMO_PROGRAM, section)
    await manager.start(DEMO_PROGRAM)
    return port


def write_demo_ops(workdir: Path, sv: PrivateSupervisord | None, port: int | None) -> Path:
    """The demo ops file, pointing at this run's supervisord and port when there is one."""
    text = demo_ops_path().read_text()
    if sv is not None and port is not None:
        real = (str(sv.config_path), f'"{sv.supervisorctl}"', f"127.0.0.1:{port}")
        for placeholder, value in zip(PLACEHOLDERS, real, strict=True):
            text = text.replace(placeholder, value)
    path = workdir / "demo.toml"
    path.write_text(text)
    return path


async def _demo(script_lines: list[str] | None, sv: PrivateSupervisord | None) -> None:
    with tempfile.TemporaryDirectory(prefix="opsgate-demo-") as tmp:
        workdir = Path(tmp)
        port = await start_demo_service(sv) if sv is not None else None
        ops_path = write_demo_ops(workdir, sv, port)
        ops = load_ops_file(ops_path)
        async with (
            SandboxServer(DEMO_TOKEN) as sandbox,
            SandboxClient(sandbox.control_url) as client,
        ):
            groups = await seed_sandbox(client, ops)
            await client.add_chat(UNLISTED_GROUP[1], "supergroup", title="Lobby")
            groups[UNLISTED_GROUP[0]] = UNLISTED_GROUP[1]
            opsgate = Opsgate(demo_settings(sandbox, ops_path, workdir), ops)
            await opsgate.start()
            try:
                people = {name: user_id for user_id, name in ops.people.items()}
                chat = TerminalChat(client, people, groups)
                if script_lines is not None:
                    await chat.play(script_lines)
                elif sys.stdin.isatty():
                    await chat.interactive()
                else:
                    await chat.play(demo_script_lines())
            finally:
                await opsgate.stop()


def run_demo(script: Path | None) -> int:
    configure_logging("WARNING", [DEMO_TOKEN])
    logging.getLogger("bot.runner").setLevel(logging.INFO)
    try:
        lines = script.read_text().splitlines() if script is not None else None
        with ExitStack() as stack:
            sv = None
            try:
                sv = stack.enter_context(private_supervisord("og-demo-"))
            except SupervisordUnavailable as exc:
                print(f"(no demo service: {exc})", file=sys.stderr)
            asyncio.run(_demo(lines, sv))
    except ScriptError as exc:
        print(f"demo script: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
