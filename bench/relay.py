"""A follower's relay: an alert webhook posted to the follower (stored, replayed by the leader,
its answer given back) against the same post to the leader itself, in the same run.

Two `opsgate run` processes on a private PostgreSQL cluster (started here, as the tests start
it). Each round posts one alert to the leader and one to the follower, one after the other,
so both see the same machine; the alerts are new each time (each a transaction of the
intake). Reported: p50 and p99 round trips, and their ratio.

    .venv/bin/python bench/relay.py [--posts 300] [--ops config/opsgate.example.toml]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from failover import REPO, Member  # bench/failover.py: this script's own folder

from bot.dev.demo import seed_sandbox
from bot.dev.harness.postgres import running as running_postgres
from bot.dev.sandbox import SandboxClient, SandboxThread
from config.opsfile import load_ops_file

TOKEN = "7300000003:BENCH-relay-token-shaped-like-botfathers"
ALERTS_TOKEN = "bench-relay-alerts-token"


def alert(n: int) -> dict[str, object]:
    labels = {"alertname": "BenchRelay", "severity": "warning", "instance": f"i-{n:05d}"}
    return {"alerts": [{"labels": labels, "annotations": {"summary": "bench"}}]}


async def round_trip(http: httpx.AsyncClient, url: str, n: int) -> float:
    """Seconds for one new alert, posted to `url`, to be answered 200."""
    started = time.perf_counter()
    answer = await http.post(f"{url}/webhooks/generic", json=alert(n))
    assert answer.status_code == 200, answer.text
    return time.perf_counter() - started


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(posts: int, ops_path: Path) -> None:
    ops = load_ops_file(ops_path)
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
            OPSGATE_ALERTS_TOKEN=ALERTS_TOKEN,
            OPSGATE_LOG_LEVEL="WARNING",
            OPSGATE_LOG_FORMAT="text",
            PYTHONPATH=str(REPO),
        )
        async with SandboxClient(sandbox.control_url) as client:
            await seed_sandbox(client, ops)
            leader, follower = Member(env, Path(tmp)), Member(env, Path(tmp))
            await leader.start()
            await leader.wait_until(role_leads=True)
            await follower.start()
            await follower.wait_until(role_leads=False)
            direct: list[float] = []
            relayed: list[float] = []
            headers = {"Authorization": f"Bearer {ALERTS_TOKEN}"}
            try:
                async with httpx.AsyncClient(headers=headers, timeout=30) as http:
                    for n in range(posts):
                        url = f"http://127.0.0.1:{leader.port}"
                        direct.append(await round_trip(http, url, 2 * n))
                        url = f"http://127.0.0.1:{follower.port}"
                        relayed.append(await round_trip(http, url, 2 * n + 1))
            finally:
                await follower.stop()
                await leader.stop()
    print(f"ops file: {ops_path}; posts: {posts} each way; cores: {os.cpu_count()}")
    for label, values in (("to the leader", direct), ("to a follower", relayed)):
        print(
            f"{label:<16} p50 {statistics.median(values) * 1000:7.1f} ms"
            f"  p99 {quantile(values, 0.99) * 1000:7.1f} ms"
        )
    print(f"ratio (p50)      {statistics.median(relayed) / statistics.median(direct):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--posts", type=int, default=300)
    parser.add_argument("--ops", type=Path, default=REPO / "config" / "opsgate.example.toml")
    args = parser.parse_args()
    asyncio.run(main(args.posts, args.ops))
