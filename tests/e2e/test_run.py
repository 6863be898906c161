"""`opsgate run` as a real process: answers, stops cleanly on SIGTERM, never logs the token."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

from bot.dev.sandbox import SandboxClient, SandboxThread
from tests.e2e.conftest import ALICE, DEPLOYS, TOKEN

REPO = Path(__file__).resolve().parents[2]


def run_env(sandbox: SandboxThread, ops_file: Path, tmp_path: Path, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSGATE_")}
    env.update(
        OPSGATE_BOT_TOKEN=token,
        OPSGATE_BOT_API_URL=sandbox.base_url,
        OPSGATE_CONFIG=str(ops_file),
        OPSGATE_DB=str(tmp_path / "run.db"),
        OPSGATE_HTTP_ADDR="127.0.0.1:0",
        OPSGATE_API_TOKEN="api-token-also-secret",
        OPSGATE_LOG_LEVEL="DEBUG",  # the most talkative level must still hide the token
        PYTHONPATH=str(REPO),
    )
    return env


async def start_process(env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        env=env,
        cwd=cwd,  # no stray .env from the repository is read
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_run_answers_and_stops_on_sigterm_without_leaking_the_token(
    sandbox: SandboxThread, client: SandboxClient, ops_file: Path, tmp_path: Path
) -> None:
    process = await start_process(run_env(sandbox, ops_file, tmp_path, TOKEN), tmp_path)
    try:
        reply = await client.reply_after(ALICE, DEPLOYS, "/status", timeout=30)
        assert "Services known: 2" in reply.text
        # An error on the way (a failing send is logged with its traceback) must be scrubbed too.
        await client.set_outage(True)
        await client.send(ALICE, DEPLOYS, "/help")
        await asyncio.sleep(1.0)
        await client.set_outage(False)
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    output = (stdout + stderr).decode()
    assert process.returncode == 0, output
    assert "signal received, shutting down" in output
    assert "opsgate stopped" in output
    assert "DEBUG" in output  # the level really was DEBUG
    assert "Bad Gateway" in output  # the outage's errors really were logged...
    assert TOKEN not in output  # ...and scrubbed, like every other line
    assert TOKEN.split(":")[1] not in output
    assert "api-token-also-secret" not in output
    with sqlite3.connect(tmp_path / "run.db") as db:
        kinds = [row[0] for row in db.execute("SELECT kind FROM events ORDER BY id")]
    assert kinds == ["opsgate.started", "opsgate.stopped"]


async def test_broken_ops_file_exits_2_with_its_problems(
    sandbox: SandboxThread, ops_file: Path, tmp_path: Path
) -> None:
    ops_file.write_text('[services.web]\nenvironment = "production"\nunit = "web"\n')
    process = await start_process(run_env(sandbox, ops_file, tmp_path, TOKEN), tmp_path)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    output = (stdout + stderr).decode()
    assert process.returncode == 2, output
    assert "services.web.unit: not a valid systemd unit name" in output
