"""`opsgate demo`: the Bot API sandbox, the real bot and a terminal chat, offline, no token."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sys
import tempfile
from contextlib import ExitStack
from importlib import resources
from pathlib import Path

import httpx
from pydantic import SecretStr

from bot.dev import demo_web
from bot.dev.sandbox import SandboxClient, SandboxServer
from bot.dev.supervisord_local import (
    PrivateSupervisord,
    SupervisordUnavailable,
    private_supervisord,
)
from bot.dev.terminal import AlertHook, ScriptError, TerminalChat
from bot.logs import configure_logging
from bot.runner import Opsgate
from config.opsfile import OpsConfig, load_ops_file
from config.settings import Settings
from services.control.supervisor import SupervisorManager, program_section
from services.hosts.runner import LocalHost
from services.releases.build import ArtifactSource
from services.releases.layout import ReleaseLayout

# Not a secret: the sandbox accepts only this token, and it never leaves this machine.
DEMO_TOKEN = "1000000001:DEMO-sandbox-token-offline-only"  # noqa: S105
# A group the demo ops file does not list, to show that opsgate ignores it.
UNLISTED_GROUP = ("lobby", -100999)


def demo_ops_path() -> Path:
    return Path(str(resources.files("config").joinpath("demo.toml")))


def demo_script_lines() -> list[str]:
    return resources.files("bot.dev").joinpath("demo.script").read_text().splitlines()


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


def demo_settings(
    sandbox: SandboxServer, ops_path: Path, workdir: Path, alerts_token: str = ""
) -> Settings:
    return Settings(
        _env_file=None,
        bot_token=SecretStr(DEMO_TOKEN),
        bot_api_url=sandbox.base_url,
        config=ops_path,
        db=str(workdir / "demo.db"),
        http_addr="127.0.0.1:0",
        api_token=SecretStr(secrets.token_urlsafe(16)),  # OFREP stays closed to strangers
        alerts_token=SecretStr(alerts_token),
        log_level="WARNING",
    )


DEMO_PROGRAM = "demo-web"
# Stand-ins in config/demo.toml, replaced by the running demo's real paths and port.
PLACEHOLDERS = (
    "/tmp/opsgate-demo/supervisord.conf",  # noqa: S108
    '"supervisorctl"',
    "127.0.0.1:18080",
    "/tmp/opsgate-demo/web",  # noqa: S108
    "/tmp/opsgate-demo/artifacts",  # noqa: S108
)
DEMO_WEB = str(Path(demo_web.__file__).resolve())
# The demo's releases: the same program, told its version and whether it is healthy.
RELEASES = {"v1": True, "v2": True, "v3": False}


def write_artifacts(directory: Path) -> None:
    for version, healthy in RELEASES.items():
        release = directory / version
        release.mkdir(parents=True, exist_ok=True)
        (release / "release.json").write_text(
            json.dumps({"version": version, "healthy": healthy}) + "\n"
        )


async def start_demo_service(sv: PrivateSupervisord, root: Path, artifacts: Path) -> int:
    """v1 released under `root` (as opsgate lays releases out), then run under the private
    supervisord from ROOT/current; returns its port."""
    layout = ReleaseLayout(LocalHost(), str(root))
    await layout.prepare("v1", ArtifactSource(str(artifacts / "{version}")))
    await layout.switch("v1")
    port = demo_web.free_port()
    manager = SupervisorManager(
        LocalHost(), str(sv.config_path), conf_dir=str(sv.conf_dir), supervisorctl=sv.supervisorctl
    )
    release = str(root / "current" / "release.json")
    argv = [sys.executable, DEMO_WEB, "--port", str(port), "--release", release]
    section = program_section(DEMO_PROGRAM, argv, directory=str(sv.directory), startsecs=1)
    await manager.add_program(DEMO_PROGRAM, section)
    await manager.start(DEMO_PROGRAM)
    return port


def write_demo_ops(workdir: Path, sv: PrivateSupervisord | None, port: int | None) -> Path:
    """The demo ops file, pointing at this run's supervisord, port and directories."""
    text = demo_ops_path().read_text()
    if sv is not None and port is not None:
        real = (
            str(sv.config_path),
            f'"{sv.supervisorctl}"',
            f"127.0.0.1:{port}",
            str(workdir / "web"),
            str(workdir / "artifacts"),
        )
        for placeholder, value in zip(PLACEHOLDERS, real, strict=True):
            text = text.replace(placeholder, value)
    path = workdir / "demo.toml"
    path.write_text(text)
    return path


def alert_poster(opsgate: Opsgate, token: str) -> AlertHook:
    """`:alert SEVERITY NAME SERVICE summary...` in a script: what Alertmanager would send."""

    async def post(words: list[str]) -> str:
        severity, name, service, *summary = words
        alert = {"labels": {"alertname": name, "severity": severity, "service": service}}
        alert["annotations"] = {"summary": " ".join(summary)}
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"http://127.0.0.1:{opsgate.http_port}/webhooks/generic",
                json={"alerts": [alert]},
                headers={"Authorization": f"Bearer {token}"},
            )
        return f"{name} ({severity}, service {service}): HTTP {response.status_code}"

    return post


async def _demo(script_lines: list[str] | None, sv: PrivateSupervisord | None) -> None:
    with tempfile.TemporaryDirectory(prefix="opsgate-demo-") as tmp:
        workdir = Path(tmp)
        write_artifacts(workdir / "artifacts")
        port = None
        if sv is not None:
            port = await start_demo_service(sv, workdir / "web", workdir / "artifacts")
        ops_path = write_demo_ops(workdir, sv, port)
        ops = load_ops_file(ops_path)
        async with (
            SandboxServer(DEMO_TOKEN) as sandbox,
            SandboxClient(sandbox.control_url) as client,
        ):
            groups = await seed_sandbox(client, ops)
            await client.add_chat(UNLISTED_GROUP[1], "supergroup", title="Lobby")
            groups[UNLISTED_GROUP[0]] = UNLISTED_GROUP[1]
            token = secrets.token_urlsafe(16)
            opsgate = Opsgate(demo_settings(sandbox, ops_path, workdir, token), ops)
            await opsgate.start()
            try:
                people = {name: user_id for user_id, name in ops.people.items()}
                deployments = opsgate.services.deployments

                async def busy(everything: bool) -> bool:
                    """Chat calls queued or in flight, updates not handled yet; with
                    `everything` also a deploy running (not waiting for people), alerts."""
                    services = opsgate.services
                    answering = services.runtime.chat_calls_pending > 0
                    if answering or not opsgate.application.update_queue.empty():
                        return True
                    if not everything:
                        return False
                    running = await deployments.in_flight()
                    return (
                        any(d.state.value != "awaiting_approval" for d in running)
                        or await services.alert_scheduler.waiting() > 0
                        or await services.outbox.pending() > 0
                    )

                chat = TerminalChat(
                    client, people, groups, alerts=alert_poster(opsgate, token), busy=busy
                )
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
