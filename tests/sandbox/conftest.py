"""One sandbox for the whole session (on its own thread), reset before each test."""

from collections.abc import AsyncIterator, Iterator

import pytest
from telegram import Bot

from bot.dev.sandbox import SandboxClient, SandboxThread

TOKEN = "7000000001:AAsandbox-test-token"


@pytest.fixture(scope="session")
def token() -> str:
    return TOKEN


@pytest.fixture(scope="session")
def sandbox(token: str) -> Iterator[SandboxThread]:
    with SandboxThread(token) as running:
        yield running


@pytest.fixture
async def client(sandbox: SandboxThread) -> AsyncIterator[SandboxClient]:
    async with SandboxClient(sandbox.control_url) as control:
        await control.reset()
        await control.add_user(42, "Ann", "ann")
        yield control


@pytest.fixture
async def bot(sandbox: SandboxThread, token: str, client: SandboxClient) -> AsyncIterator[Bot]:
    async with Bot(token, base_url=sandbox.base_url) as real_bot:
        yield real_bot
