"""Host primitives every capability uses: run a command that must succeed, write a file
atomically, accept only plain absolute paths."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence

from services.errors import OpsgateError
from services.hosts.runner import CommandResult, Host

# Plain absolute paths only: no spaces, quotes or glob characters to escape anywhere.
_PATH = re.compile(r"(/[A-Za-z0-9._+-]+)+")


class HostCommandFailed(OpsgateError):
    """A housekeeping command failed (disk, permissions, ssh); `str()` names it."""

    kind = "unavailable"

    def __init__(self, result: CommandResult) -> None:
        last = result.tail(1) or "no output"
        super().__init__(f"{result.argv[0]} failed ({result.summary}): {last}")
        self.result = result


def validate_path(path: str) -> str:
    """An absolute, plain path (no '.' or '..' parts, spaces or glob characters)."""
    plain = isinstance(path, str) and _PATH.fullmatch(path) is not None
    if not plain or {".", ".."} & set(path.split("/")):
        raise ValueError(f"not a plain absolute path: {path!r}")
    return path


async def run_checked(
    host: Host,
    argv: Sequence[str],
    *,
    timeout: float,
    cwd: str | None = None,
    input: bytes | None = None,
) -> CommandResult:
    result = await host.run(argv, timeout=timeout, cwd=cwd, input=input)
    if not result.ok:
        raise HostCommandFailed(result)
    return result


async def write_file(host: Host, path: str, data: bytes, *, timeout: float) -> None:
    """Write beside the target, then rename over it: readers see the old or the new file."""
    temporary = f"{path}.tmp-{secrets.token_hex(6)}"
    await run_checked(host, ["tee", "--", temporary], timeout=timeout, input=data)
    await run_checked(host, ["mv", "-T", "--", temporary, path], timeout=timeout)
