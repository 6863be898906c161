"""`opsgate run` as a real process: each start-up problem is one line on stderr with its fix and
the right exit code; idle at INFO it stays quiet; OPSGATE_LOG_FORMAT=json gives JSON lines."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest

from bot.cli import main
from bot.dev.sandbox import SandboxClient, SandboxThread
from bot.http.server import free_port
from bot.launch import optimized_bytecode_installed
from bot.startup import UNREACHABLE_WAIT_S
from config.settings import Settings
from tests.e2e.conftest import ALICE, DEPLOYS, TOKEN

REPO = Path(__file__).resolve().parents[2]
WRONG = "7199999999:AAWrong-token-that-must-stay-hidden"


def run_env(sandbox: SandboxThread, ops_file: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    """Exactly these settings, none inherited; `extra` as OPSGATE_NAME=value."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSGATE_")}
    env.update(
        OPSGATE_BOT_TOKEN=TOKEN,
        OPSGATE_BOT_API_URL=sandbox.base_url,
        OPSGATE_CONFIG=str(ops_file),
        OPSGATE_DB=str(tmp_path / "run.db"),
        OPSGATE_HTTP_ADDR="127.0.0.1:0",
        PYTHONPATH=str(REPO),
    )
    env.update({f"OPSGATE_{key.upper()}": value for key, value in extra.items()})
    return env


async def start(env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", env=env, cwd=cwd,  # cwd: no stray .env
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def run_to_exit(env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run until it exits by itself; (exit code, stdout, the one non-empty stderr line)."""
    process = await start(env, cwd)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    lines = [line for line in stderr.decode().splitlines() if line.strip()]
    assert len(lines) == 1, stderr.decode()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), lines[0]


def no_secret_in(text: str, token: str = TOKEN) -> bool:
    return token not in text and token.split(":")[1] not in text


async def test_a_token_of_the_wrong_shape_is_refused_before_any_network_call(
    sandbox: SandboxThread, ops_file: Path, tmp_path: Path
) -> None:
    with socket.socket() as bot_api:  # listens, never answers: a connection would wait here
        bot_api.bind(("127.0.0.1", 0))
        bot_api.listen()
        url = f"http://127.0.0.1:{bot_api.getsockname()[1]}/bot"
        env = run_env(sandbox, ops_file, tmp_path, bot_token="notatoken", bot_api_url=url)
        code, stdout, line = await run_to_exit(env, tmp_path)
        bot_api.setblocking(False)
        with pytest.raises(BlockingIOError):
            bot_api.accept()  # nobody called
    assert code == 2 and stdout == ""
    assert "OPSGATE_BOT_TOKEN is not a bot token" in line and "@BotFather" in line
    assert "notatoken" not in line
    assert not (tmp_path / "run.db").exists()


async def test_a_token_the_bot_api_rejects_is_one_line_without_the_token(
    sandbox: SandboxThread, ops_file: Path, tmp_path: Path
) -> None:
    env = run_env(sandbox, ops_file, tmp_path, bot_token=WRONG)
    code, _, line = await run_to_exit(env, tmp_path)
    assert code == 2
    assert "rejected OPSGATE_BOT_TOKEN" in line and "@BotFather" in line
    assert no_secret_in(line, WRONG)
    assert not (tmp_path / "run.db").exists()  # nothing written for a bot that cannot start


async def test_an_unreachable_bot_api_gives_up_after_a_short_wait(
    sandbox: SandboxThread, ops_file: Path, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}/bot"
    env = run_env(sandbox, ops_file, tmp_path, bot_api_url=url)
    began = time.monotonic()
    code, _, line = await run_to_exit(env, tmp_path)
    waited = time.monotonic() - began
    assert code == 1
    assert f"cannot reach the Bot API at {url} (OPSGATE_BOT_API_URL)" in line
    assert "check the network" in line
    assert waited >= UNREACHABLE_WAIT_S  # it waited (bounded by run_to_exit's timeout)
    assert no_secret_in(line)


async def test_an_invalid_ops_file_is_one_line_with_its_problems(
    sandbox: SandboxThread, ops_file: Path, tmp_path: Path
) -> None:
    ops_file.write_text('[services.web]\nenvironment = "production"\nunit = "web"\n')
    code, _, line = await run_to_exit(run_env(sandbox, ops_file, tmp_path), tmp_path)
    assert code == 2
    assert "services.web.unit: not a valid systemd unit name" in line
    assert "opsgate check-config" in line


async def test_settings_that_do_not_parse_are_one_line(
    sandbox: SandboxThread, ops_file: Path, tmp_path: Path
) -> None:
    env = run_env(sandbox, ops_file, tmp_path, http_addr="nonsense", log_format="xml")
    code, _, line = await run_to_exit(env, tmp_path)
    assert code == 2
    assert line.startswith("bad settings: OPSGATE_HTTP_ADDR: ")
    assert "OPSGATE_LOG_FORMAT: Input should be 'text' or 'json'" in line
    assert no_secret_in(line)


def read_only_place(tmp_path: Path) -> Path:
    """A directory this process cannot create files in (root passes chmod; /sys stops it)."""
    if os.geteuid() == 0:
        return Path("/sys/opsgate-test")
    place = tmp_path / "read-only"
    place.mkdir()
    place.chmod(0o555)
    return place


@pytest.mark.parametrize("where", ["read-only", "missing under a file"])
async def test_a_database_that_cannot_be_written_is_one_line(
    sandbox: SandboxThread, ops_file: Path, tmp_path: Path, where: str
) -> None:
    if where == "read-only":
        db = read_only_place(tmp_path) / "run.db"
    else:
        (tmp_path / "a-file").write_text("")
        db = tmp_path / "a-file" / "data" / "run.db"
    code, _, line = await run_to_exit(run_env(sandbox, ops_file, tmp_path, db=str(db)), tmp_path)
    assert code == 2
    assert f"cannot write the database OPSGATE_DB={db}" in line
    assert "ReadWritePaths=" in line


@pytest.mark.parametrize(
    "url", ["mysql://opsgate:hunter2@127.0.0.1:5432/opsgate", "postgresq://opsgate@db/opsgate"]
)
async def test_a_database_url_that_is_not_postgresql_is_refused_not_made_a_file(
    sandbox: SandboxThread, ops_file: Path, tmp_path: Path, url: str
) -> None:
    """Such an OPSGATE_DB once became a local SQLite file named after it, and opsgate ran."""
    code, _, line = await run_to_exit(run_env(sandbox, ops_file, tmp_path, db=url), tmp_path)
    assert code == 2
    assert "OPSGATE_DB" in line and "postgresql://" in line and "hunter2" not in line
    assert list(tmp_path.rglob("*opsgate@*")) == [] and not (tmp_path / "mysql:").exists()


async def test_an_unreachable_postgresql_is_one_line_without_its_password(
    sandbox: SandboxThread, ops_file: Path, tmp_path: Path
) -> None:
    url = "postgresql://opsgate:hunter2@127.0.0.1:9/opsgate"
    code, _, line = await run_to_exit(run_env(sandbox, ops_file, tmp_path, db=url), tmp_path)
    assert code == 2
    assert "cannot open the database: connection failed" in line and "OPSGATE_DB" in line
    assert "hunter2" not in line


async def test_an_http_address_in_use_is_one_line(
    sandbox: SandboxThread, ops_file: Path, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        env = run_env(sandbox, ops_file, tmp_path, http_addr=addr)
        code, _, line = await run_to_exit(env, tmp_path)
    assert code == 1
    assert f"the HTTP address {addr} (OPSGATE_HTTP_ADDR) is in use" in line


def test_run_help_lists_every_environment_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "-h"])
    assert exited.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    for name in Settings.model_fields:
        (line,) = [x for x in lines if x.strip().startswith(f"OPSGATE_{name.upper()} ")]
        assert len(line.split()) > 2  # the name, then what it is
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("opsgate ")


async def wait_for_line(log: Path, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        await asyncio.sleep(0.2)


async def test_idle_at_info_for_a_minute_it_writes_fewer_than_5_lines(
    sandbox: SandboxThread, client: SandboxClient, ops_file: Path, tmp_path: Path
) -> None:
    """The issue's goal: the alert tick runs every second, and no line of it may show."""
    log = tmp_path / "opsgate.log"
    # Set up as the README says (without these tokens, two warnings say the doors are shut).
    port = free_port()
    configured = run_env(
        sandbox,
        ops_file,
        tmp_path,
        api_token="a" * 32,
        alerts_token="b" * 32,
        http_addr=f"127.0.0.1:{port}",
    )
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", env=configured, cwd=tmp_path,
            stdout=out, stderr=out,
        )  # fmt: skip
        try:
            await wait_for_line(log, "started as @")
            async with httpx.AsyncClient() as http:  # an access line is for DEBUG only
                assert (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200
            await asyncio.sleep(60)  # the measurement itself: a minute of idling
            lines = [line for line in log.read_text().splitlines() if line.strip()]
            async with httpx.AsyncClient() as http:
                metrics = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 30)
    assert process.returncode == 0
    assert len(lines) < 5, "\n".join(lines)
    assert all(" INFO " in line for line in lines), "\n".join(lines)
    # Started as `opsgate run` is: on the optimized bytecode when `opsgate precompile` wrote it
    # (`make test` does), restarted under python -OO (bot/launch.py).
    assert optimized_bytecode_installed() or not os.environ.get("CI"), "make runs precompile"
    optimize = "2" if optimized_bytecode_installed() else "0"
    assert f'python_optimize="{optimize}"' in metrics, metrics


async def test_json_lines_carry_time_level_logger_message_and_exc_without_secrets(
    sandbox: SandboxThread, client: SandboxClient, ops_file: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = run_env(
        sandbox,
        ops_file,
        tmp_path,
        log_format="json",
        log_level="DEBUG",
        http_addr=f"127.0.0.1:{port}",
    )
    process = await start(env, tmp_path)
    try:
        reply = await client.reply_after(ALICE, DEPLOYS, "/status", timeout=30)
        assert "Services known" in reply.text
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200
        await client.set_outage(True)  # a failing send is logged with its traceback
        await client.send(ALICE, DEPLOYS, "/help")
        await asyncio.sleep(1.0)
        await client.set_outage(False)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0
    text = stderr.decode()
    assert no_secret_in(text)
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    assert any("started as @" in record["message"] for record in records)
    assert any(record["level"] == "DEBUG" for record in records)
    assert any(
        record["logger"] == "uvicorn.access" and "GET /health" in record["message"]
        for record in records
    )
    failed = [record for record in records if "exc" in record]
    assert failed and "Traceback" in failed[0]["exc"]


async def test_a_start_up_problem_in_json_is_one_json_line(
    sandbox: SandboxThread, ops_file: Path, tmp_path: Path
) -> None:
    env = run_env(sandbox, ops_file, tmp_path, bot_token="notatoken", log_format="json")
    code, _, line = await run_to_exit(env, tmp_path)
    record = json.loads(line)
    assert code == 2
    assert record["level"] == "ERROR" and record["logger"] == "opsgate"
    assert "OPSGATE_BOT_TOKEN is not a bot token" in record["message"]
    assert "exc" not in record  # the traceback only at DEBUG
