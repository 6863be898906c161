"""Alert latency at an everyday rate: from the alert's arrival to the first message naming it.

A real `opsgate run` process talks to a Bot API sandbox that enforces Telegram's limits (20
messages a minute per chat, 30 a second overall) and refuses what goes over them. Two runs:

- direct: one alert a second for --seconds (60 a minute) POSTed to /webhooks/generic, each its
  own group, `group_wait_s = 0`; timed from the POST to the first bot message (or attached
  list) in the chat that names the alert;
- alertmanager: single alerts, one every 5 s (within the chat's budget, so none waits for a
  token), POSTed to a real Alertmanager (group_wait 1 s, one group per alert) that sends to
  /webhooks/alertmanager with opsgate's default settings; timed from opsgate storing the
  alert (its `first_seen`, the moment Alertmanager's request arrived) to the first message
  naming it. Alertmanager's own group_wait comes before that, by design.

The chat is read every 20 ms, so times are rounded up by up to 20 ms. Loopback only; the
load is bounded in count and time. Run by hand:

    .venv/bin/python bench/alert_latency.py [--seconds 120]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import sqlite3
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from bot.dev.demo import seed_sandbox
from bot.dev.demo_web import free_port
from bot.dev.harness.alert_load import wait_ready
from bot.dev.harness.alertmanager import running
from bot.dev.harness.opsgate_process import OpsgateProcess
from bot.dev.sandbox import SandboxClient, SandboxMessage, SandboxThread
from config.opsfile import parse_ops_text

REPO = Path(__file__).resolve().parents[1]
CHAT = -100500
ALERTS_TOKEN = "bench-latency-token"
AM_GAP_S = 5  # single alerts through Alertmanager: one every 5 s
INSTANCE = re.compile(r"instance=(i-\d{5})")
OPS = f"""
[people]
1001 = "alice"
[roles]
sre = [1001]
[chats.alerts]
critical = {CHAT}
warning = {CHAT}
[alerts]
group_by = ["alertname", "instance"]
GROUP_WAIT
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(label: str, values: list[float]) -> str:
    if not values:
        return f"{label}: no values"
    within = sum(v <= 5 for v in values) / len(values) * 100
    return (
        f"{label}: n={len(values)} p50 {percentile(values, 50):.2f} s, p90"
        f" {percentile(values, 90):.2f} s, p99 {percentile(values, 99):.2f} s, max"
        f" {max(values):.2f} s; {within:.0f}% within 5 s"
    )


def alert(n: int) -> dict[str, object]:
    labels = {"alertname": "Latency", "severity": "warning", "instance": f"i-{n:05d}"}
    return {"labels": labels, "annotations": {"summary": "disk filling on the primary"}}


class Watcher:
    """Reads the chat every 20 ms; when each instance was first named by the bot."""

    def __init__(self, client: SandboxClient) -> None:
        self.client = client
        self.first: dict[str, float] = {}
        self.messages = 0
        self.stop = False

    def see(self, messages: list[SandboxMessage], now: float) -> None:
        bot = [m for m in messages if m.from_bot]
        self.messages = len(bot)
        for message in bot:
            text = message.text or ""
            if message.document is not None:
                text += message.document.data.decode()
            for instance in INSTANCE.findall(text):
                self.first.setdefault(instance, now)

    async def run(self) -> None:
        while not self.stop:
            self.see(await self.client.messages(CHAT), time.time())
            await asyncio.sleep(0.02)


async def with_opsgate(tmp: Path, token: str, group_wait: str, body: object) -> None:
    """Run `body(port, watcher, db)` against a fresh opsgate process and sandbox."""
    ops_text = OPS.replace("GROUP_WAIT", group_wait)
    (tmp / "ops.toml").write_text(ops_text)
    port, db = free_port(), tmp / "opsgate.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSGATE_")}
    with SandboxThread(token) as sandbox, (tmp / "opsgate.log").open("ab") as log:
        env.update(
            OPSGATE_BOT_TOKEN=token,
            OPSGATE_BOT_API_URL=sandbox.base_url,
            OPSGATE_CONFIG=str(tmp / "ops.toml"),
            OPSGATE_DB=str(db),
            OPSGATE_HTTP_ADDR=f"127.0.0.1:{port}",
            OPSGATE_ALERTS_TOKEN=ALERTS_TOKEN,
            OPSGATE_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
            PYTHONPATH=str(REPO),
        )
        async with SandboxClient(sandbox.control_url) as client:
            await seed_sandbox(client, parse_ops_text(ops_text))
            await client.add_chat(CHAT, "supergroup", "Alerts")
            await client.set_flood(20, 30)
            bot = OpsgateProcess(env, tmp, log)
            watcher = Watcher(client)
            try:
                await bot.start()
                await wait_ready(bot, port)
                watching = asyncio.create_task(watcher.run())
                await body(port, watcher, db)  # type: ignore[operator]
                watcher.stop = True
                await watching
                faults = await client.fault_counts()
                print(
                    f"  {watcher.messages} bot messages; flood refusals {faults['flood_refusals']}"
                )
            finally:
                await bot.stop()


async def direct(seconds: int, tmp: Path) -> list[float]:
    posted: dict[str, float] = {}
    latencies: list[float] = []

    async def body(port: int, watcher: Watcher, db: Path) -> None:
        headers = {"Authorization": f"Bearer {ALERTS_TOKEN}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            start = time.monotonic()
            for n in range(seconds):
                await asyncio.sleep(max(0.0, start + n - time.monotonic()))
                posted[f"i-{n:05d}"] = time.time()
                answer = await http.post("/webhooks/generic", json=alert(n), headers=headers)
                answer.raise_for_status()
        deadline = time.monotonic() + 90
        while len(watcher.first) < len(posted) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        latencies.extend(watcher.first[i] - at for i, at in posted.items() if i in watcher.first)
        missing = len(posted) - len(latencies)
        if missing:
            print(f"  {missing} alerts never named within 90 s")

    await with_opsgate(
        tmp, "7300000011:BENCH-latency-direct-token-for-bench", "group_wait_s = 0", body
    )
    return latencies


async def through_alertmanager(seconds: int, tmp: Path) -> list[float]:
    latencies: list[float] = []

    async def body(port: int, watcher: Watcher, db: Path) -> None:
        webhook = f"http://127.0.0.1:{port}/webhooks/alertmanager"
        sent: list[str] = []
        with running(webhook, bearer=ALERTS_TOKEN) as am:
            async with httpx.AsyncClient(timeout=10) as http:
                start = time.monotonic()
                for n in range(seconds // AM_GAP_S):
                    await asyncio.sleep(max(0.0, start + n * AM_GAP_S - time.monotonic()))
                    labels = dict(alert(n)["labels"])  # type: ignore[call-overload]
                    labels["alertname"] = f"Latency{n:05d}"  # its own group in Alertmanager
                    fire = [{"labels": labels, "annotations": {"summary": "disk filling"}}]
                    (await http.post(f"{am.url}/api/v2/alerts", json=fire)).raise_for_status()
                    sent.append(f"i-{n:05d}")
                deadline = time.monotonic() + 90
                while len(watcher.first) < len(sent) and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute(
                "SELECT json_extract(labels, '$.instance'), first_seen FROM alerts"
            ).fetchall()
        stored = {str(i): datetime.fromisoformat(str(at)).timestamp() for i, at in rows}
        latencies.extend(
            watcher.first[i] - stored[i] for i in sent if i in watcher.first and i in stored
        )
        if len(latencies) < len(sent):
            print(f"  {len(sent) - len(latencies)} alerts never named within 90 s")

    await with_opsgate(tmp, "7300000012:BENCH-latency-am-token-for-the-bench", "", body)
    return latencies


async def main(seconds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{os.cpu_count()} CPUs; one alert a second for {seconds} s, each its own group")
        (Path(tmp) / "direct").mkdir()
        first = await direct(seconds, Path(tmp) / "direct")
        print(summary("direct POST -> first message naming it (group_wait_s = 0)", first))
        (Path(tmp) / "am").mkdir()
        second = await through_alertmanager(seconds, Path(tmp) / "am")
        label = f"Alertmanager's request -> first message (single alerts, every {AM_GAP_S} s)"
        print(summary(label, second))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=120)
    asyncio.run(main(parser.parse_args().seconds))
