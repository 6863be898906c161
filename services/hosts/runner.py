"""The host runner: every external command opsgate runs goes through a `Host`, as an argv list.

A `Host` runs argv on this machine (`LocalHost`), behind a fixed prefix such as `sudo -n`
(`PrefixHost`), or over OpenSSH (`SshHost`, in services.hosts.ssh, with the `Hosts` registry).
No local shell is ever involved. `run` never raises for what the command does: a non-zero exit,
a timeout, a missing program or an unreachable host all come back as a `CommandResult`; only
argv or env that fail validation raise ValueError. A child never inherits opsgate's environment
(it holds the bot token): it gets a small base (PATH, HOME, locale...) with `env` on top.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

# The only variables copied from opsgate's environment into a child's (never secrets).
BASE_ENV_KEYS = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "SSH_AUTH_SOCK")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
EXIT_NOT_FOUND = 127  # shell conventions, so local and remote failures read the same
EXIT_CANNOT_RUN = 126
_KILL_WAIT_S = 5.0
_DRAIN_AFTER_KILL_S = 1.0  # a daemonised grandchild may hold the pipes open forever
_SIGNAL_NAMES = {sig.value: sig.name for sig in signal.Signals}


@dataclass(frozen=True)
class CommandResult:
    """What a command did. stdout/stderr hold the *tail* of each stream, at most the limit."""

    argv: tuple[str, ...]
    exit_status: int  # negative signal number when the process was killed by a signal
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool = False
    truncated: bool = False
    host: str = "local"
    connection_failed: bool = False  # ssh itself failed (exit 255): the command may not have run

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and not self.timed_out and not self.connection_failed

    @property
    def summary(self) -> str:
        """One line for a chat message: how it ended."""
        if self.timed_out:
            return f"timed out after {self.duration_s:.1f}s on {self.host}"
        if self.connection_failed:
            return f"ssh to {self.host} failed (exit 255)"
        if self.exit_status < 0:
            number = -self.exit_status
            return f"killed by {_SIGNAL_NAMES.get(number, f'signal {number}')} on {self.host}"
        return f"exit status {self.exit_status} on {self.host}"

    def tail(self, lines: int = 20) -> str:
        """The last lines of stderr, or of stdout when stderr is empty, for error messages."""
        text = self.stderr if self.stderr.strip() else self.stdout
        return "\n".join(text.rstrip("\n").splitlines()[-lines:]) if lines > 0 else ""


class Host(Protocol):
    name: str

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        input: bytes | None = None,
        output_limit: int = 64 * 1024,
    ) -> CommandResult: ...


@runtime_checkable
class SupportsAclose(Protocol):
    """A host that holds something open (an ssh master connection) until closed."""

    async def aclose(self) -> None: ...


def validate_argv(argv: Sequence[str]) -> tuple[str, ...]:
    """A non-empty sequence of str without NUL; the program name is not empty and not an option."""
    if isinstance(argv, str | bytes) or not isinstance(argv, Sequence):
        raise ValueError("argv must be a list of strings, not a single string")
    args = tuple(argv)
    if not all(isinstance(arg, str) and "\0" not in arg for arg in args):
        raise ValueError(f"argv items must be strings without NUL bytes: {args!r}")
    if not args or not args[0] or args[0].startswith("-"):
        raise ValueError(f"argv must start with a program name: {args!r}")
    return args


def validate_env(env: Mapping[str, str] | None) -> dict[str, str]:
    for key, value in (env or {}).items():
        if not isinstance(key, str) or re.fullmatch(ENV_NAME_PATTERN, key) is None:
            raise ValueError(f"not a valid environment variable name: {key!r}")
        if not isinstance(value, str) or "\0" in value:
            raise ValueError(f"environment variable {key} has a non-text or NUL value")
    return dict(env or {})


def env_command(
    argv: tuple[str, ...], env: Mapping[str, str] | None, cwd: str | None = None
) -> list[str]:
    """`env [-C DIR] -- K=V... PROGRAM ARGS`: past a prefix that resets the environment (sudo)
    or the working directory (nsenter -m enters the other namespace's root), or remotely.

    env(1) runs the program itself, so no shell builtin or function can stand in for it.
    """
    if "=" in argv[0]:  # env(1) would take the program for one more assignment
        raise ValueError(f"argv[0] contains '=', which cannot follow env: {argv[0]!r}")
    chdir = ["-C", cwd] if cwd is not None else []
    return ["env", *chdir, "--", *(f"{k}={v}" for k, v in validate_env(env).items()), *argv]


class _Tail:
    """Keeps only the last `limit` bytes of a stream: memory stays bounded for any output."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 0)
        self.data = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self.limit:
            del self.data[: len(self.data) - self.limit]
            self.truncated = True

    def text(self) -> str:
        data = bytes(self.data)
        if self.truncated:  # the cut may have split a UTF-8 character: drop its continuation bytes
            data = data[next((i for i, b in enumerate(data[:4]) if b & 0xC0 != 0x80), 0) :]
        return data.decode("utf-8", errors="replace")


class _Collector(asyncio.SubprocessProtocol):
    """Tails stdout/stderr as they arrive. "Exited" and "pipes closed" are separate events here
    (Process.wait() in 3.11 waits for both): a daemonised grandchild, or an ssh master holding
    our pipes, can keep the pipes open long after the process itself is gone."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        self.tails = {1: _Tail(limit), 2: _Tail(limit)}
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._open = {1, 2}

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.tails[fd].add(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open.discard(fd)  # stdin (fd 0) breaking when unread is not an error here
        if not self._open and not self.closed.done():
            self.closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


class LocalHost:
    """Runs argv on this machine, each command in its own session (process group)."""

    def __init__(
        self,
        name: str = "local",
        *,
        base_env: Mapping[str, str] | None = None,
        kill_grace_s: float = 2.0,
    ) -> None:
        self.name = name
        self.kill_grace_s = kill_grace_s
        default = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"}
        default |= {key: os.environ[key] for key in BASE_ENV_KEYS if key in os.environ}
        self.base_env = dict(default if base_env is None else base_env)

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        input: bytes | None = None,
        output_limit: int = 64 * 1024,
    ) -> CommandResult:
        args = validate_argv(argv)
        child_env = {**self.base_env, **validate_env(env)}
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            # What create_subprocess_exec wraps, with our protocol and a transport we can close.
            transport, collector = await loop.subprocess_exec(
                lambda: _Collector(output_limit, loop),
                *args,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=child_env,
                cwd=cwd,
                start_new_session=True,  # its own process group, so a timeout kills all of it
            )
        except OSError as exc:
            status, message = _start_failure(args[0], cwd, exc)
            took = time.monotonic() - started
            return CommandResult(args, status, "", message, took, host=self.name)
        pgid = transport.get_pid()
        try:
            _feed(transport, input)
            finished = {collector.exited, collector.closed}
            done, _ = await asyncio.wait(finished, timeout=timeout)
            timed_out = len(done) < len(finished)
            if timed_out:
                await self._stop(pgid, collector)
        except BaseException:  # cancelled: leave nothing running behind
            _killpg(pgid, signal.SIGKILL)
            # Reap it before going on: an unreaped child is a zombie, and its Popen warns
            # (ResourceWarning) whenever it is collected, far from here.
            with contextlib.suppress(BaseException):
                await asyncio.wait({collector.exited}, timeout=_KILL_WAIT_S)
            raise
        finally:
            transport.close()
        returncode = transport.get_returncode()
        out, err = collector.tails[1], collector.tails[2]
        return CommandResult(
            argv=args,
            exit_status=-signal.SIGKILL if returncode is None else returncode,
            stdout=out.text(),
            stderr=err.text(),
            duration_s=time.monotonic() - started,
            timed_out=timed_out,
            truncated=out.truncated or err.truncated,
            host=self.name,
        )

    async def _stop(self, pgid: int, collector: _Collector) -> None:
        """SIGTERM to the whole group, a short grace, then SIGKILL to whatever is left."""
        _killpg(pgid, signal.SIGTERM)
        await asyncio.wait({collector.exited}, timeout=self.kill_grace_s)
        _killpg(pgid, signal.SIGKILL)
        await asyncio.wait({collector.exited}, timeout=_KILL_WAIT_S)
        # Output written before the kill may still be in the pipes: take it, briefly.
        await asyncio.wait({collector.closed}, timeout=_DRAIN_AFTER_KILL_S)


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is already gone
        os.killpg(pgid, sig)


def _feed(transport: asyncio.SubprocessTransport, data: bytes | None) -> None:
    stdin = transport.get_pipe_transport(0)
    if data is not None and isinstance(stdin, asyncio.WriteTransport):
        stdin.write(data)  # buffered by the transport; a program not reading it is no error
        stdin.write_eof()


def _start_failure(program: str, cwd: str | None, exc: OSError) -> tuple[int, str]:
    reason = exc.strerror or str(exc)
    if cwd is not None and exc.filename == cwd:
        return EXIT_CANNOT_RUN, f"opsgate: cannot change directory to {cwd!r}: {reason}"
    if isinstance(exc, FileNotFoundError):
        return EXIT_NOT_FOUND, f"opsgate: {program}: command not found"
    return EXIT_CANNOT_RUN, f"opsgate: cannot run {program}: {reason}"


class PrefixHost:
    """Runs `[*prefix, *argv]` on an inner host (`sudo -n`, `nsenter`); env goes past the prefix."""

    def __init__(self, prefix: Sequence[str], inner: Host | None = None, name: str = "") -> None:
        self.prefix = validate_argv(prefix)
        self.inner: Host = inner if inner is not None else LocalHost()
        self.name = name or self.inner.name

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        input: bytes | None = None,
        output_limit: int = 64 * 1024,
    ) -> CommandResult:
        args = validate_argv(argv)
        # The directory is changed after the prefix: a prefix such as `nsenter -m` would
        # otherwise start the command in its own root, whatever directory it was given.
        wrapped = env_command(args, env, cwd) if env or cwd else list(args)
        result = await self.inner.run(
            (*self.prefix, *wrapped), timeout=timeout, input=input, output_limit=output_limit
        )
        return replace(result, argv=args, host=self.name)

    async def aclose(self) -> None:
        if isinstance(self.inner, SupportsAclose):
            await self.inner.aclose()
