"""What the pipeline asks a host before and while it deploys: free disk, memory, a process's
memory, an interpreter's version. One small command each, always an argv list."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from services.errors import OpsgateError
from services.hosts.primitives import HostCommandFailed, run_checked
from services.hosts.runner import Host

MIB = 1024 * 1024
# Prints "3.11.2": sys.version_info needs no parsing of banners that differ between builds.
PYTHON_VERSION_CODE = "import sys; print('%d.%d.%d' % sys.version_info[:3])"


class HostFactError(OpsgateError):
    """The host answered, but not with what was asked for; `str()` fits a chat."""


async def free_bytes(host: Host, path: str, timeout: float = 30.0) -> int:
    """Free bytes on the filesystem holding `path`, or its nearest existing parent (the
    release root does not exist before the first deploy)."""
    while True:
        result = await host.run(["df", "--output=avail", "-B1", "--", path], timeout=timeout)
        if result.ok:
            lines = result.stdout.split()
            if len(lines) == 2 and lines[1].isdigit():
                return int(lines[1])
            raise HostFactError(f"df gave no free space for {path}: {result.stdout.strip()[:80]}")
        parent = posixpath.dirname(path)
        if parent == path or result.connection_failed or result.timed_out:
            raise HostCommandFailed(result)
        path = parent


async def meminfo(host: Host, timeout: float = 30.0) -> dict[str, int]:
    """/proc/meminfo in bytes: MemTotal, MemAvailable, ..."""
    text = (await run_checked(host, ["cat", "/proc/meminfo"], timeout=timeout)).stdout
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    if "MemTotal" not in values:
        raise HostFactError(f"no MemTotal in /proc/meminfo on {host.name}")
    return values


async def process_tree_rss(host: Host, pid: int, timeout: float = 30.0) -> int:
    """Resident memory in bytes of `pid` and its direct children (workers)."""
    argv = ["ps", "-o", "rss=", "-p", str(int(pid)), "--ppid", str(int(pid))]
    result = await host.run(argv, timeout=timeout)
    if result.exit_status not in (0, 1) or result.timed_out or result.connection_failed:
        raise HostCommandFailed(result)
    return sum(int(v) for v in result.stdout.split() if v.isdigit()) * 1024


async def python_version(
    host: Host, interpreter: Sequence[str], timeout: float = 30.0
) -> tuple[int, ...]:
    result = await run_checked(host, [*interpreter, "-c", PYTHON_VERSION_CODE], timeout=timeout)
    return parse_version(result.stdout.strip())


def parse_version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        raise HostFactError(f"not a version number: {text[:40]!r}") from None
