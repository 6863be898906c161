"""The real bot over real HTTP: one Bot API sandbox per session, a fresh opsgate per test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pydantic import SecretStr

from bot.dev.demo import seed_sandbox
from bot.dev.sandbox import SandboxClient, SandboxThread
from bot.runner import Opsgate
from config.opsfile import OpsConfig, parse_ops_text
from config.settings import Settings, UpdateMode
from handlers.buttons import ButtonRoute
from handlers.commands import Command
from services.records.audit import utc_now

if TYPE_CHECKING:
    from openfeature.client import OpenFeatureClient

    from bot.dev.harness.systemd import SystemdSandbox
    from tests.e2e.canary_stage import Ports, Stage

TOKEN = "7100000001:AAE2E-test-token-never-logged-anywhere"

ALICE, BOB, CAROL, STRANGER = 1001, 1002, 1003, 4242
DEPLOYS, APPROVALS, UNLISTED = -100100, -100200, -100999

OPS_TEXT = """
[people]
1001 = "alice"
1002 = "bob"
1003 = "carol"
[roles]
admin = [1001]
sre = [1001, 1003]
[chats]
deploys = -100100
approvals = -100200
[environments.production]
[services.web]
environment = "production"
unit = "web.service"
health = { url = "http://127.0.0.1:18080/health" }
[services.worker]
environment = "production"
unit = "worker.service"
"""

StartOpsgate = Callable[..., Awaitable[Opsgate]]


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxThread]:
    with SandboxThread(TOKEN) as running:
        yield running


@pytest.fixture
def ops_file(tmp_path: Path) -> Path:
    path = tmp_path / "ops.toml"
    path.write_text(OPS_TEXT)
    return path


@pytest.fixture
async def client(sandbox: SandboxThread) -> AsyncIterator[SandboxClient]:
    async with SandboxClient(sandbox.control_url) as control:
        await control.reset()
        await seed_sandbox(control, parse_ops_text(OPS_TEXT))
        await control.add_chat(UNLISTED, "supergroup", "Lobby")
        await control.add_user(STRANGER, "Stranger")
        yield control


def make_settings(
    sandbox: SandboxThread, ops_file: Path, tmp_path: Path, **extra: object
) -> Settings:
    values: dict[str, object] = {
        "bot_token": SecretStr(TOKEN),
        "bot_api_url": sandbox.base_url,
        "config": ops_file,
        "db": tmp_path / "opsgate.db",
        "http_addr": "127.0.0.1:0",
        "mode": UpdateMode.POLLING,
    }
    values.update(extra)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture
async def start_opsgate(
    sandbox: SandboxThread, client: SandboxClient, ops_file: Path, tmp_path: Path
) -> AsyncIterator[StartOpsgate]:
    """Starts opsgate exactly as `opsgate run` does; stops it after the test."""
    started: list[Opsgate] = []

    async def start(
        extra_commands: Iterable[Command] = (),
        extra_buttons: Iterable[ButtonRoute] = (),
        clock: Callable[[], datetime] = utc_now,
        **settings: object,
    ) -> Opsgate:
        opsgate = Opsgate(
            make_settings(sandbox, ops_file, tmp_path, **settings),
            extra_commands=extra_commands,
            extra_buttons=extra_buttons,
            clock=clock,
        )
        started.append(opsgate)
        await opsgate.start()
        return opsgate

    yield start
    for opsgate in started:
        await opsgate.stop()


@pytest.fixture
async def opsgate(start_opsgate: StartOpsgate) -> Opsgate:
    return await start_opsgate()


def ops_config(text: str = OPS_TEXT) -> OpsConfig:
    return parse_ops_text(text)


async def callback_answer_text(client: SandboxClient, callback_id: str, timeout: float = 10) -> str:
    """The text the bot answered a press with, once it has answered."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        version = await client.version()  # read before looking, so no change slips between
        answer = await client.callback_answer(callback_id)
        if answer is not None:
            break
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise AssertionError(f"callback {callback_id} was never answered")
        await client.wait_change(version, min(remaining, 1.0))
    return str(answer.get("text"))


@pytest.fixture(scope="module")
def canary_ports() -> Iterator[Ports]:
    """Prometheus scraping the two colours' ports: a new target waits 5-15 s for its first
    scrape, so it starts once per module. (Imported here: canary_stage imports this file.)"""
    from tests.e2e.canary_stage import scraped_ports

    yield from scraped_ports()


@pytest.fixture
async def stage(
    systemd_sandbox: SystemdSandbox, canary_ports: Ports, ops_file: Path
) -> AsyncIterator[Stage]:
    """The canary stage: app template unit, nginx, HAProxy (tests/e2e/canary_stage.py)."""
    from tests.e2e.canary_stage import canary_stage

    async with canary_stage(systemd_sandbox, canary_ports, ops_file) as ready:
        yield ready


OfrepClient = Callable[[Opsgate, str], "OpenFeatureClient"]


@pytest.fixture
def ofrep_client() -> Iterator[OfrepClient]:
    """The real OpenFeature SDK with its OFREP provider, pointed at a running opsgate with
    the given bearer token; providers are closed after the test."""
    from openfeature import api
    from openfeature.contrib.provider.ofrep import OFREPProvider

    made: list[OFREPProvider] = []

    def connect(opsgate: Opsgate, token: str) -> OpenFeatureClient:
        headers = {"Authorization": f"Bearer {token}"}
        url = f"http://127.0.0.1:{opsgate.http_port}"
        provider = OFREPProvider(url, headers_factory=lambda: headers)
        made.append(provider)
        domain = f"e2e-ofrep-{len(made)}"
        api.set_provider(provider, domain=domain)
        return api.get_client(domain=domain)

    yield connect
    api.clear_providers()
    for provider in made:
        provider.session.close()
