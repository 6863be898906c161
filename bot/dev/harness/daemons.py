"""Start a real daemon for a test and wait until it answers; shared by the harnesses of
Alertmanager and Prometheus (and the rule every real component follows about skipping)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


def require(reason: str | None) -> None:
    """Skip with the reason the component cannot run; under CI=true fail instead, so a green
    CI always means it ran."""
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@contextmanager
def serving(
    argv: Sequence[str], log_path: Path, ready_url: str, timeout: float
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `argv` (output to `log_path`) until `ready_url` answers 200; SIGTERM on exit."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} did not start:\n{log_path.read_text()}")
            time.sleep(0.05)  # fixture code, before any event loop
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
