"""supervisord control through a host runner: `supervisorctl -c CONFIG ...` as argv lists.

supervisorctl prints most of its errors on stdout and folds many outcomes into a few exit
codes (see recipes/supervisord.md), so errors are read from the text of both streams and
translated into the tree of services.units. The exit status of a program is not in
`status`; it is read from supervisord's own log (`maintail`): "exited: web (exit status 3".

A program that dies within `startsecs` makes `start` fail with "spawn error". With
startsecs=1 supervisord can miss such a death (it looks on a 1 s loop) and report RUNNING
first: give programs that may fail fast startsecs=2 or more, or check with wait_running.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from services.control.units import (
    ControlTimeout,
    FailedToStart,
    PermissionDenied,
    ServiceControlError,
    UnitNotFound,
    validate_program,
)
from services.hosts.runner import CommandResult, Host

_NOT_FOUND = re.compile(r"no such process|no such group|bad name", re.IGNORECASE)
_DENIED = re.compile(r"Permission denied|requires authentication|401 Unauthorized")
_SPAWN_FAILED = re.compile(r"ERROR \((spawn error|abnormal termination)\)")
_PID = re.compile(r"\bpid (\d+)")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ProgramState(StrEnum):
    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    EXITED = "EXITED"
    FATAL = "FATAL"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class ProgramStatus:
    name: str
    state: ProgramState
    pid: int | None  # None unless the process is alive
    description: str  # "pid 123, uptime 0:00:12", "Exited too quickly (...)", a date...

    @property
    def running(self) -> bool:
        return self.state is ProgramState.RUNNING


def parse_status_line(line: str) -> ProgramStatus:
    """One line of `supervisorctl status`: `web   RUNNING   pid 16137, uptime 0:00:12`."""
    name, _, rest = line.strip().partition(" ")
    state_text, _, description = rest.strip().partition(" ")
    state = ProgramState(state_text) if state_text in ProgramState.__members__ else None
    if state is None:
        raise ValueError(f"not a supervisorctl status line: {line!r}")
    pid = _PID.match(description.strip())
    return ProgramStatus(name, state, int(pid.group(1)) if pid else None, description.strip())


def _ini_value(value: str) -> str:
    if any(char in value for char in "\r\n\0"):
        raise ValueError(f"config values cannot hold line breaks: {value!r}")
    return value.replace("%", "%%")  # supervisord expands %(name)s in every value


def program_section(
    name: str,
    argv: Sequence[str],
    *,
    directory: str | None = None,
    environment: Mapping[str, str] | None = None,
    autostart: bool = False,
    autorestart: bool = False,
    startsecs: int = 2,
    startretries: int = 3,
) -> str:
    """A `[program:NAME]` file for an argv (supervisord splits `command` like a shell)."""
    lines = [
        f"[program:{validate_program(name)}]",
        f"command={_ini_value(shlex.join(argv))}",
        f"autostart={str(autostart).lower()}",
        f"autorestart={str(autorestart).lower()}",
        f"startsecs={int(startsecs)}",
        f"startretries={int(startretries)}",
        "redirect_stderr=true",
    ]
    if directory is not None:
        lines.append(f"directory={_ini_value(directory)}")
    if environment:
        for key, value in environment.items():
            if _ENV_KEY.fullmatch(key) is None or '"' in value or "\\" in value:
                raise ValueError(f"unsupported environment entry {key!r}")
        pairs = (f'{key}="{_ini_value(value)}"' for key, value in environment.items())
        lines.append("environment=" + ",".join(pairs))
    return "\n".join(lines) + "\n"


class SupervisorManager:
    """Programs of one supervisord, reached with `supervisorctl -c CONFIG` on a host.

    Program files are written into `conf_dir` (which the config's [include] must cover)
    with `tee` and `mv`, then picked up with `reread` and `update NAME`.
    """

    def __init__(
        self,
        host: Host,
        config_path: str,
        *,
        conf_dir: str | None = None,
        supervisorctl: str = "supervisorctl",
        timeout: float = 60.0,
        log_bytes: int = 1600,
    ) -> None:
        self.host = host
        self.config_path = config_path
        self.conf_dir = conf_dir
        self.supervisorctl = supervisorctl
        self.timeout = timeout
        self.log_bytes = log_bytes

    async def start(self, name: str) -> None:
        await self._control("start", name)

    async def stop(self, name: str) -> None:
        await self._control("stop", name)

    async def restart(self, name: str) -> None:
        await self._control("restart", name)

    async def status(self, name: str) -> ProgramStatus:
        name = validate_program(name)
        result = await self._ctl("status", name)
        # Exit 3 only says the program is not running; the line still tells its state.
        if result.exit_status not in (0, 3) or result.timed_out:
            raise self._error(result, "status", name)
        lines = result.stdout.splitlines()
        wanted = name.rpartition(":")[2]
        line = next((li for li in lines if li.split(" ", 1)[0] in (name, wanted)), None)
        if line is None:
            raise self._error(result, "status", name)
        return parse_status_line(line)

    async def pid(self, name: str) -> int | None:
        name = validate_program(name)
        result = await self._ctl("pid", name)
        if result.stdout.strip().isdigit():  # "0" with exit 7 when not running
            return int(result.stdout) or None
        raise self._error(result, "pid", name)

    async def tail(self, name: str, nbytes: int = 1600, *, stderr: bool = False) -> str:
        name = validate_program(name)
        stream = ("stderr",) if stderr else ()
        result = await self._ctl("tail", f"-{int(nbytes)}", name, *stream)
        if not result.ok:  # exit 1 with "NAME: ERROR (no such process name)" and the like
            raise self._error(result, "tail", name)
        return result.stdout.rstrip("\n")

    async def exit_status(self, name: str) -> int | None:
        """The last exit status supervisord logged for the program, if any is left."""
        proc = validate_program(name).rpartition(":")[2]
        result = await self._ctl("maintail", "-16000")
        if not result.ok:
            raise self._error(result, "maintail", name)
        found = re.findall(rf"exited: {re.escape(proc)} \(exit status (\d+);", result.stdout)
        return int(found[-1]) if found else None

    async def wait_running(
        self, name: str, timeout: float = 30.0, *, interval: float = 0.2
    ) -> ProgramStatus:
        """Poll until RUNNING; FailedToStart on EXITED/FATAL, ControlTimeout after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            status = await self.status(name)
            if status.running:
                return status
            if status.state in (ProgramState.EXITED, ProgramState.FATAL):
                raise await self._failed_to_start(name, status.description, ())
            if time.monotonic() >= deadline:
                message = f"{name} not running after {timeout:g}s ({status.state})"
                raise ControlTimeout(message, unit=name)
            await asyncio.sleep(interval)

    async def reread(self) -> str:
        return await self._admin("reread")

    async def update(self, name: str | None = None) -> str:
        """Apply config changes: add, restart or remove groups (`name` limits it to one)."""
        return await self._admin("update", *(() if name is None else (validate_program(name),)))

    async def add_program(self, name: str, content: str) -> str:
        """Write conf_dir/NAME.conf, reread and update; returns the file's path."""
        path = self._conf_path(name)
        staging = path + ".new"  # outside the *.conf include glob until it is complete
        for argv, data in (
            (["tee", staging], content.encode()),
            (["mv", "-f", staging, path], None),
        ):
            result = await self.host.run(argv, timeout=self.timeout, input=data, output_limit=1024)
            if not result.ok:
                raise self._error(result, "add", name)
        await self.reread()
        await self.update(name)
        return path

    async def remove_program(self, name: str) -> None:
        """Stop the program, delete its file, then reread and update to drop its group."""
        path = self._conf_path(name)
        # Stopped first: `update` alone also stops it, but then waits a 1 s supervisord tick.
        with contextlib.suppress(UnitNotFound):
            await self.stop(name)
        result = await self.host.run(["rm", "-f", path], timeout=self.timeout)
        if not result.ok:
            raise self._error(result, "remove", name)
        await self.reread()
        await self.update(name)

    def _conf_path(self, name: str) -> str:
        name = validate_program(name)
        if ":" in name or self.conf_dir is None:
            raise ValueError("adding programs needs conf_dir and a plain program name")
        return f"{self.conf_dir.rstrip('/')}/{name}.conf"

    async def _ctl(self, *args: str) -> CommandResult:
        argv = [self.supervisorctl, "-c", self.config_path, *args]
        return await self.host.run(argv, timeout=self.timeout)

    async def _admin(self, *args: str) -> str:
        result = await self._ctl(*args)
        if not result.ok:
            raise self._error(result, args[0], args[1] if len(args) > 1 else "")
        return result.stdout.rstrip("\n")

    async def _control(self, verb: str, name: str) -> None:
        name = validate_program(name)
        result = await self._ctl(verb, name)
        if not result.timed_out and _SPAWN_FAILED.search(result.stdout):
            first = result.stdout.strip().splitlines()[-1]
            raise await self._failed_to_start(name, first, result.argv)
        # start prints "ERROR (already started)" and stop "ERROR (not running)" with exit
        # 0: both mean the program is where it was asked to be.
        if not result.ok:
            raise self._error(result, verb, name)

    async def _failed_to_start(self, name: str, why: str, argv: Sequence[str]) -> FailedToStart:
        exit_status = await self.exit_status(name)
        log_tail = await self.tail(name, self.log_bytes)
        return FailedToStart(
            f"{name} failed to start: {why} (exit status {exit_status})",
            unit=name,
            exit_status=exit_status,
            log_tail=log_tail,
            argv=argv,
        )

    def _error(self, result: CommandResult, verb: str, name: str) -> ServiceControlError:
        """Translate a failed supervisorctl into our error tree."""
        text = f"{result.stdout}\n{result.stderr}".strip()
        kind: type[ServiceControlError] = ServiceControlError
        why = text.splitlines()[-1] if text else f"exit status {result.exit_status}"
        if result.timed_out:
            kind, why = ControlTimeout, f"no answer within {self.timeout:g}s"
        elif _DENIED.search(text):
            kind = PermissionDenied
        elif _NOT_FOUND.search(text):
            kind = UnitNotFound
        where = f"{verb} {name}".strip()
        return kind(f"{where}: {why}", unit=name, argv=result.argv, stderr=text)
