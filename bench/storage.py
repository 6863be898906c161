"""Deploy and alert-intake throughput on PostgreSQL against SQLite, in the same run.

In-process, on opsgate's own services over each database, both durable as in production: a
SQLite file in a temporary directory (WAL, synchronous=FULL, as opsgate opens it), and a schema
of a private PostgreSQL cluster on loopback, started here with fsync and synchronous commits
on (the tests turn them off):
- deploys: a deployment's whole life in the database, as the pipeline writes it: requested
  (its lock taken), then approved, pre_checks, building, switching, verifying, watching and
  succeeded (the lock released), each move a transaction with its audit row;
- alert intake: AlertEngine.ingest of batches of 17 new firing alerts (the alert-load
  scenario's rate unit), each alert its own group.
Rounds are interleaved (SQLite, PostgreSQL, SQLite, ...); medians over the rounds.

    .venv/bin/python bench/storage.py [--rounds 5] [--deploys 100] [--batches 60]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bot.dev.harness.postgres import PostgresCluster
from bot.dev.harness.postgres import running as running_postgres
from config.opsfile import parse_ops_text
from services.alerts.engine import AlertEngine
from services.alerts.model import AlertStatus, IncomingAlert
from services.deploy.deployments import Deployments
from services.deploy.model import DeploymentState as S
from services.records.audit import AuditLog
from services.records.storage import Storage

LIFE = (S.APPROVED, S.PRE_CHECKS, S.BUILDING, S.SWITCHING, S.VERIFYING, S.WATCHING, S.SUCCEEDED)
OPS = """
[chats]
deploys = -100100
[chats.alerts]
critical = -100300
warning = -100301
[alerts]
group_by = ["alertname", "instance"]
"""
PER_BATCH = 17


async def deploys_per_second(storage: Storage, count: int) -> float:
    deployments = Deployments(storage, AuditLog(storage))
    started = time.perf_counter()
    for _ in range(count):
        deployment = await deployments.request("web", "production", "v2", "1001")
        for state in LIFE:
            await deployments.advance(deployment.id, state, "opsgate")
    return count / (time.perf_counter() - started)


async def alerts_per_second(storage: Storage, batches: int, first: int) -> float:
    ops = parse_ops_text(OPS)
    engine = AlertEngine(storage, AuditLog(storage), lambda: ops)
    now = datetime.now(UTC)
    started = time.perf_counter()
    for b in range(batches):
        batch = [
            IncomingAlert(
                {"alertname": "Bench", "severity": "critical", "instance": f"i-{first + b}-{n}"},
                {"summary": "disk almost full"},
                AlertStatus.FIRING,
                now,
                None,
                "generic",
            )
            for n in range(PER_BATCH)
        ]
        await engine.ingest(batch)
    return batches * PER_BATCH / (time.perf_counter() - started)


async def one_round(
    target: str, deploys: int, batches: int, round_index: int
) -> tuple[float, float]:
    async with Storage(target) as storage:
        deploy_rate = await deploys_per_second(storage, deploys)
        alert_rate = await alerts_per_second(storage, batches, round_index * batches)
    return deploy_rate, alert_rate


async def main(rounds: int, deploys: int, batches: int, cluster: PostgresCluster) -> None:
    results: dict[str, list[tuple[float, float]]] = {"sqlite": [], "postgresql": []}
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = str(Path(tmp) / "bench.db")
        postgres = cluster.schema_url("bench")
        for index in range(rounds):
            for name, target in (("sqlite", sqlite), ("postgresql", postgres)):
                results[name].append(await one_round(target, deploys, batches, index))
    print(f"{rounds} interleaved rounds; {deploys} deploys and {batches * PER_BATCH} alerts each")
    print(f"{'database':<12}{'deploys/s':>12}{'alerts/s':>12}")
    medians = {}
    for name, got in results.items():
        medians[name] = (
            statistics.median(r[0] for r in got),
            statistics.median(r[1] for r in got),
        )
        print(f"{name:<12}{medians[name][0]:>12,.1f}{medians[name][1]:>12,.0f}")
    pg, lite = medians["postgresql"], medians["sqlite"]
    print(f"{'PG / SQLite':<12}{pg[0] / lite[0]:>12.2f}{pg[1] / lite[1]:>12.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--deploys", type=int, default=100)
    parser.add_argument("--batches", type=int, default=60)
    args = parser.parse_args()
    with running_postgres(durable=True) as pg_cluster:
        asyncio.run(main(args.rounds, args.deploys, args.batches, pg_cluster))
