"""systemd's notify protocol, for Type=notify with a watchdog (config/opsgate.service).

READY=1 once opsgate answers chats; WATCHDOG=1 every half WatchdogSec from a task on the
event loop, so a stalled loop (or a stopped process) stops feeding and systemd restarts it;
STOPPING=1 on the way out. Outside systemd (no NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

log = logging.getLogger(__name__)


def _address() -> str | None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return None
    return "\0" + address[1:] if address.startswith("@") else address


def notify(message: str) -> bool:
    """Send one notification; False when not under systemd or the socket is gone."""
    address = _address()
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), address)
    except OSError as exc:
        log.warning("systemd notify failed: %s", exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Half of WatchdogSec when systemd asks this process to feed a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1_000_000 / 2


async def feed_watchdog(interval: float) -> None:
    """Runs until cancelled: each WATCHDOG=1 proves the event loop still turns."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def start_watchdog() -> asyncio.Task[None] | None:
    interval = watchdog_interval()
    if interval is None:
        return None
    return asyncio.get_running_loop().create_task(feed_watchdog(interval), name="watchdog")


async def stop_watchdog(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
