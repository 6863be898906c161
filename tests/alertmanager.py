"""A private Alertmanager on loopback for the tests (recipe: alertmanager.md).

Clustering is off (no gossip port on 0.0.0.0), storage is a temp dir, the one receiver is a
webhook to a closed loopback port unless a test gives its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bot.httpserver import free_port

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


@dataclass(frozen=True)
class Alertmanager:
    url: str
    directory: Path


def unavailable_reason() -> str | None:
    if shutil.which(BINARY) is None:
        return f"{BINARY} is not installed (apt-get install prometheus-alertmanager)"
    return None


@contextmanager
def running(webhook: str = "http://127.0.0.1:9/none") -> Iterator[Alertmanager]:
    """Start Alertmanager, wait for /-/ready, yield, SIGTERM it. Skips where missing."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    directory = Path(tempfile.mkdtemp(prefix="opsgate-am-"))
    config = directory / "alertmanager.yml"
    config.write_text(CONFIG.format(webhook=webhook))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (directory / "am.log").open("wb") as log:
        process = subprocess.Popen(
            [
                BINARY,
                f"--config.file={config}",
                f"--storage.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--web.external-url={url}",
                "--cluster.listen-address=",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"alertmanager did not start:\n{(directory / 'am.log').read_text()}"
                )
            time.sleep(0.05)  # fixture code, before any event loop
        yield Alertmanager(url, directory)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)
