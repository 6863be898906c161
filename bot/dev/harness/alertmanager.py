"""A private Alertmanager on loopback for the tests (recipe: alertmanager.md).

Clustering is off (no gossip port on 0.0.0.0), storage is a temp dir, the one receiver is a
webhook to a closed loopback port unless a test gives its own.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bot.dev.harness.daemons import require, serving
from bot.http.server import free_port

BINARY = "prometheus-alertmanager"
START_TIMEOUT = 15.0
CONFIG = """\
route:
  receiver: hook
  group_by: ['alertname']
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: '{webhook}'
        send_resolved: true
        max_alerts: 0
"""
BEARER = """\
        http_config:
          authorization: {{ type: Bearer, credentials: '{bearer}' }}
"""


@dataclass(frozen=True)
class Alertmanager:
    url: str
    directory: Path


def unavailable_reason() -> str | None:
    if shutil.which(BINARY) is None:
        return f"{BINARY} is not installed (apt-get install prometheus-alertmanager)"
    return None


@contextmanager
def running(
    webhook: str = "http://127.0.0.1:9/none", bearer: str | None = None
) -> Iterator[Alertmanager]:
    """Start Alertmanager posting to `webhook` (with `bearer` as its token, when given), wait
    for /-/ready, yield, SIGTERM it. Skips where missing; under CI=true fails instead."""
    require(unavailable_reason())
    directory = Path(tempfile.mkdtemp(prefix="opsgate-am-"))
    config = directory / "alertmanager.yml"
    text = CONFIG.format(webhook=webhook)
    if bearer is not None:
        text += BEARER.format(bearer=bearer)
    config.write_text(text)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        BINARY,
        f"--config.file={config}",
        f"--storage.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.external-url={url}",
        "--cluster.listen-address=",
    ]
    try:
        with serving(argv, directory / "am.log", f"{url}/-/ready", START_TIMEOUT):
            yield Alertmanager(url, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def amtool(alertmanager: Alertmanager, *args: str) -> str:
    """Alertmanager's own CLI against this instance (an independent look at its silences);
    its stdout. Skips where amtool is missing; under CI=true that is a failure instead."""
    require(
        None
        if shutil.which("amtool")
        else "amtool is not installed (apt-get install prometheus-alertmanager)"
    )
    process = await asyncio.create_subprocess_exec(
        "amtool",
        f"--alertmanager.url={alertmanager.url}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    if process.returncode != 0:
        raise RuntimeError(f"amtool {' '.join(args)}: {err.decode()}")
    return out.decode()
