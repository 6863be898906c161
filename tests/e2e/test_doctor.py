"""`opsgate doctor` as a real process against the Bot API sandbox: one chat the bot cannot
reach and one broken host are named with what to fix; the rest is reported fine."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from bot.dev.sandbox import SandboxClient, SandboxThread
from bot.launch import optimized_bytecode_installed
from tests.e2e.conftest import OPS_TEXT, TOKEN

MISSING_CHAT = -100777
BROKEN = f"""
[chats.alerts]
critical = {MISSING_CHAT}
[hosts.broken]
prefix = ["/nonexistent/wrapper"]
[services.api]
environment = "production"
host = "broken"
unit = "api.service"
"""


async def doctor(
    sandbox: SandboxThread, tmp_path: Path, ops_text: str, token: str = TOKEN
) -> tuple[int, str]:
    (tmp_path / "ops.toml").write_text(ops_text)
    env = {
        **os.environ,
        "OPSGATE_BOT_TOKEN": token,
        "OPSGATE_BOT_API_URL": sandbox.base_url,
        "OPSGATE_CONFIG": str(tmp_path / "ops.toml"),
        "OPSGATE_DB": str(tmp_path / "doctor.db"),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "doctor", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_doctor_names_the_unreachable_chat_and_the_broken_host(
    sandbox: SandboxThread, client: SandboxClient, tmp_path: Path
) -> None:
    text = OPS_TEXT.replace("[environments.production]", BROKEN + "[environments.production]")
    code, out = await doctor(sandbox, tmp_path, text)
    assert code == 1, out
    lines = out.splitlines()
    assert any(line.startswith("✓ token: the bot is @") for line in lines), out
    assert "✓ chat -100100: Deploys" in lines and "✓ chat -100200: Approvals" in lines, out
    assert any(line.startswith(f"✗ chat {MISSING_CHAT}: not reachable") for line in lines), out
    assert any(line.startswith("✗ host broken (systemd, for api):") for line in lines), out
    assert any(line.startswith("✓ host local (systemd, for web): systemd") for line in lines), out
    assert any(line.startswith("✓ database ") and line.endswith("writable") for line in lines)
    assert lines[-1] == "something needs fixing (see ✗ above)"
    bytecode = [line for line in lines if line[2:].startswith("bytecode: ")]
    assert bytecode == [
        "✓ bytecode: optimized, `opsgate run` starts under python -OO"
        if optimized_bytecode_installed()
        else "· bytecode: plain, `opsgate run` runs without -OO"
    ], out
    assert TOKEN not in out and TOKEN.split(":")[1] not in out

    healthy, out = await doctor(sandbox, tmp_path, OPS_TEXT)
    assert (healthy, out.splitlines()[-1]) == (0, "all good"), out

    refused, out = await doctor(sandbox, tmp_path, OPS_TEXT, token="7100000001:wrong")
    assert refused == 1 and "✗ token: refused by the Bot API" in out, out
    assert "wrong" not in out
