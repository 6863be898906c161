"""Failover: SIGKILL the leading opsgate, time until the follower answers /status in the chat.

Two `opsgate run` processes share a private PostgreSQL cluster (started here, as the tests
start it); the first leads, the second follows. Each run: /status is answered by the leader,
then the leader is SIGKILLed and /status sent at once; the time runs from the kill to the
follower's answer. The killed one is started again (it follows) and the roles swap for the
next run. Baseline, in the same run: a cold start of opsgate on the same database to its first
answered /status (what a supervisor restarting a single opsgate would give).

    .venv/bin/python bench/failover.py [--runs 10] [--ops config/opsgate.example.toml]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bot.dev.demo import seed_sandbox
from bot.dev.harness.postgres import running as running_postgres
from bot.dev.sandbox import SandboxClient, SandboxThread
from bot.http.server import free_port
from config.opsfile import load_ops_file

REPO = Path(__file__).resolve().parents[1]
TOKEN = "7300000002:BENCH-failover-token-shaped-like-botfathers"


class Member:
    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.port = free_port()
        self.env = {**env, "OPSGATE_HTTP_ADDR": f"127.0.0.1:{self.port}"}
        self.workdir = workdir
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", env=self.env, cwd=self.workdir,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    async def wait_until(self, role_leads: bool) -> None:
        """Until /health answers 200 as the leader (or as a follower)."""
        role = "leader" if role_leads else "follower"
        async with httpx.AsyncClient(timeout=1) as http:
            while True:
                try:
                    answer = await http.get(f"http://127.0.0.1:{self.port}/health")
                    if answer.status_code == 200 and answer.json().get("role") == role:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()


async def answered(client: SandboxClient, person: int, chat: int) -> float:
    """Send /status now; seconds until a bot message answers it."""
    started = time.perf_counter()
    sent = await client.send(person, chat, "/status")
    await client.wait_for(
        chat, lambda ms: any(m.from_bot and m.message_id > sent for m in ms), timeout=60
    )
    return time.perf_counter() - started


async def main(runs: int, ops_path: Path) -> None:
    ops = load_ops_file(ops_path)
    person, deploys = next(iter(ops.people)), ops.chats.deploys
    assert deploys is not None, "the ops file names no deploys chat"
    with (
        running_postgres() as cluster,
        SandboxThread(TOKEN) as sandbox,
        tempfile.TemporaryDirectory() as tmp,
    ):
        env = dict(os.environ)
        env.update(
            OPSGATE_BOT_TOKEN=TOKEN,
            OPSGATE_BOT_API_URL=sandbox.base_url,
            OPSGATE_CONFIG=str(ops_path),
            OPSGATE_DB=cluster.schema_url("bench"),
            OPSGATE_LOG_LEVEL="WARNING",
            PYTHONPATH=str(REPO),
        )
        async with SandboxClient(sandbox.control_url) as client:
            await seed_sandbox(client, ops)
            cold: list[float] = []
            for _ in range(runs):  # the baseline: a single opsgate started cold
                alone = Member(env, Path(tmp))
                started = time.perf_counter()
                await alone.start()
                await answered(client, person, deploys)
                cold.append(time.perf_counter() - started)
                await alone.stop()
            leader, follower = Member(env, Path(tmp)), Member(env, Path(tmp))
            await leader.start()
            await leader.wait_until(role_leads=True)
            await follower.start()
            await follower.wait_until(role_leads=False)
            failovers: list[float] = []
            try:
                for _ in range(runs):
                    await answered(client, person, deploys)  # the leader answers
                    killed = time.perf_counter()
                    await leader.kill()
                    await answered(client, person, deploys)
                    failovers.append(time.perf_counter() - killed)
                    await leader.start()  # comes back as a follower
                    await leader.wait_until(role_leads=False)
                    leader, follower = follower, leader
            finally:
                await leader.stop()
                await follower.stop()
    print(f"ops file: {ops_path}; runs: {runs}; cores: {os.cpu_count()}")
    for label, values in (("failover (kill -> /status)", failovers), ("cold start", cold)):
        print(
            f"{label:<28} p50 {statistics.median(values):6.2f} s  max {max(values):6.2f} s"
            f"  min {min(values):6.2f} s"
        )
    print(f"{'ratio (p50)':<28} {statistics.median(failovers) / statistics.median(cold):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--ops", type=Path, default=REPO / "config" / "opsgate.example.toml")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.ops))
