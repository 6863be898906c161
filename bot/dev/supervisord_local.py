"""A private supervisord in the foreground, for the offline demo and the tests.

supervisor comes from PyPI into the venv, next to this interpreter, and needs nothing from
/etc or /var. Its directory is a short one under /tmp: the control socket's path must fit in
108 bytes, which deep work dirs and checkouts can exceed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
START_TIMEOUT = 15.0
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with the trailing NUL

CONFIG = """\
[unix_http_server]
file=%(here)s/s.sock
chmod=0700

[supervisord]
logfile=%(here)s/supervisord.log
pidfile=%(here)s/supervisord.pid
childlogdir=%(here)s
nodaemon=true
user=root

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://%(here)s/s.sock

[include]
files = %(here)s/conf.d/*.conf
"""


class SupervisordUnavailable(RuntimeError):
    """supervisor is not installed next to this interpreter."""


@dataclass(frozen=True)
class PrivateSupervisord:
    pid: int
    directory: Path
    config_path: Path
    conf_dir: Path  # included by the config: one NAME.conf per program
    supervisorctl: str  # absolute: hosts give their children a minimal PATH


def unavailable_reason() -> str | None:
    if not (BIN / "supervisord").exists():
        return f"supervisor is not installed next to {sys.executable} (pip install supervisor)"
    return None


def _ready(config: Path) -> bool:
    probe = subprocess.run(
        [str(BIN / "supervisorctl"), "-c", str(config), "pid"],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.returncode == 0 and probe.stdout.strip().isdigit()


@contextmanager
def private_supervisord(prefix: str = "opsgate-sv-") -> Iterator[PrivateSupervisord]:
    """Start supervisord, wait until it answers, yield; SIGTERM it (and its children)."""
    reason = unavailable_reason()
    if reason is not None:
        raise SupervisordUnavailable(reason)
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    # 0755 rather than mkdtemp's 0700: a test runs supervisorctl as nobody, who must reach
    # the socket (itself 0700) to be refused by it.
    directory.chmod(0o755)
    assert len(str(directory / "s.sock")) <= SOCKET_PATH_MAX
    config = directory / "supervisord.conf"
    config.write_text(CONFIG)
    (directory / "conf.d").mkdir()
    with (directory / "supervisord.out").open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "supervisord"), "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _ready(config):
            if process.poll() is not None or time.monotonic() > deadline:
                log = (directory / "supervisord.out").read_text()
                raise RuntimeError(f"supervisord did not start:\n{log[-3000:]}")
            time.sleep(0.05)  # called before any event loop runs
        yield PrivateSupervisord(
            pid=process.pid,
            directory=directory,
            config_path=config,
            conf_dir=directory / "conf.d",
            supervisorctl=str(BIN / "supervisorctl"),
        )
    finally:
        process.send_signal(signal.SIGTERM)  # stops its children too
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)
