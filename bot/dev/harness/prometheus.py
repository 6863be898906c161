"""A private Prometheus on loopback for the tests (recipe: prometheus-scrape.md).

Debian's flag defaults point at /etc and /var/lib and listen on 0.0.0.0, so all three are always
given. Storage is a temp dir; every target is scraped each second. A new target is scraped only
after two fixed 5 s ticks inside Prometheus (5-15 s), so callers poll with `wait_for_value`.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bot.dev.harness.daemons import require, serving
from bot.http.server import free_port

BINARY = "prometheus"
PROMTOOL = "promtool"
START_TIMEOUT = 15.0
JOB = "opsgate"
CONFIG = """\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: {job}
    metrics_path: '{metrics_path}'
    static_configs:
      - targets: [{targets}]
"""


@dataclass(frozen=True)
class Prometheus:
    url: str
    directory: Path


def unavailable_reason() -> str | None:
    for binary in (BINARY, PROMTOOL):
        if shutil.which(binary) is None:
            return f"{binary} is not installed (apt-get install --no-install-recommends prometheus)"
    return None


def _config(targets: list[str], metrics_path: str, job: str) -> str:
    quoted = ", ".join(f"'{target}'" for target in targets)
    return CONFIG.format(job=job, metrics_path=metrics_path, targets=quoted)


@contextmanager
def running_prometheus(
    targets: list[str], metrics_path: str = "/metrics", job: str = JOB
) -> Iterator[Prometheus]:
    """Start Prometheus scraping `targets`, wait for /-/ready, yield, SIGTERM it.

    Skips where it is not installed; under CI=true that is a failure instead.
    """
    require(unavailable_reason())
    directory = Path(tempfile.mkdtemp(prefix="opsgate-prom-"))
    try:
        config = directory / "prometheus.yml"
        config.write_text(_config(targets, metrics_path, job))
        checked = subprocess.run(
            [PROMTOOL, "check", "config", str(config)],
            capture_output=True,
            text=True,
            check=False,
        )
        if checked.returncode != 0:
            raise RuntimeError(f"promtool refused the config:\n{checked.stdout}{checked.stderr}")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [
            BINARY,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
        ]
        with serving(argv, directory / "prometheus.log", f"{url}/-/ready", START_TIMEOUT):
            yield Prometheus(url, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def query(url: str, promql: str) -> list[dict[str, Any]]:
    """An instant query through the HTTP API: the vector's samples ({metric, value})."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        response = await http.get("/api/v1/query", params={"query": promql})
    body = response.json()
    if response.status_code != 200 or body.get("status") != "success":
        raise AssertionError(f"query {promql!r} failed: {response.status_code} {body}")
    data = body["data"]
    if data["resultType"] != "vector":
        raise AssertionError(f"query {promql!r} gave a {data['resultType']}, not a vector")
    result: list[dict[str, Any]] = data["result"]
    return result


async def targets(url: str) -> list[dict[str, Any]]:
    """The active targets: health "up"/"down"/"unknown", lastError, scrapeUrl."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        response = await http.get("/api/v1/targets", params={"state": "active"})
    active: list[dict[str, Any]] = response.json()["data"]["activeTargets"]
    return active


async def wait_for_value(url: str, promql: str, timeout: float = 30) -> list[dict[str, Any]]:
    """Poll `promql` until it has a sample (a new target takes 5-15 s to be scraped)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await query(url, promql)
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"no sample for {promql!r} after {timeout} s; targets: {await targets(url)}"
            )
        await asyncio.sleep(0.25)


def value(sample: dict[str, Any]) -> float:
    """A sample's value as a float (the API sends [timestamp, "value"])."""
    return float(sample["value"][1])
