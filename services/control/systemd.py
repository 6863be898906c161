"""systemd control through a host runner: systemctl and journalctl, always as argv lists.

The same code drives a local systemd, a remote one (an ssh host) and the test sandbox
(an nsenter prefix host); only the Host differs. Every unit name is validated before a
command runs, and systemctl's failures are translated into the errors of services.units.
Timestamps are asked for with `--timestamp=us+utc`, so this needs systemd 247 or newer.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from services.control.units import (
    ControlTimeout,
    FailedToStart,
    PermissionDenied,
    ServiceControlError,
    StartLimitHit,
    UnitNotFound,
    validate_unit,
)
from services.hosts.runner import CommandResult, Host

SHOW_PROPERTIES = (
    "LoadState",
    "ActiveState",
    "SubState",
    "MainPID",
    "NRestarts",
    "ExecMainStatus",
    "ActiveEnterTimestamp",
    "Result",
)
_PROPERTY = re.compile(r"[A-Z][A-Za-z0-9]*")
_NOT_FOUND = re.compile(r"not found|not loaded|could not be found")
_DENIED = re.compile(r"Access denied|Interactive authentication required|Permission denied")
_BUS_TIMEOUT = re.compile(r"Connection timed out|Timeout was reached")
_JOB_FAILED = re.compile(r"Job for \S+ failed")
_START_VERBS = ("start", "restart", "reload")


@dataclass(frozen=True)
class UnitStatus:
    unit: str
    load_state: str  # loaded, not-found, masked, bad-setting, error
    active_state: str  # active, reloading, inactive, failed, activating, deactivating
    sub_state: str  # running, dead, exited, auto-restart, ...
    main_pid: int | None  # None when the unit has no main process
    n_restarts: int  # automatic restarts (Restart=) since the last manual start
    exec_main_status: int  # exit status (or signal number) of the last main process
    active_enter_timestamp: datetime | None  # UTC; None when never active
    result: str  # success, exit-code, signal, timeout, start-limit-hit, ... (systemd's Result)
    properties: Mapping[str, str]  # every property asked for, as systemctl printed it

    @property
    def active(self) -> bool:
        return self.active_state == "active"

    @property
    def failed(self) -> bool:
        return self.active_state == "failed"


def parse_timestamp(value: str) -> datetime | None:
    """`Mon 2026-11-23 11:19:50.406679 UTC` (us+utc style) as an aware datetime."""
    parts = value.split()
    if len(parts) != 4 or parts[3] != "UTC":
        return None  # empty or "n/a": the unit never got there
    stamp = datetime.strptime(f"{parts[1]} {parts[2]}", "%Y-%m-%d %H:%M:%S.%f")
    return stamp.replace(tzinfo=UTC)


def parse_show(unit: str, text: str) -> UnitStatus:
    props = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    main_pid = int(props.get("MainPID") or 0)
    return UnitStatus(
        unit=unit,
        load_state=props.get("LoadState", ""),
        active_state=props.get("ActiveState", ""),
        sub_state=props.get("SubState", ""),
        main_pid=main_pid or None,
        n_restarts=int(props.get("NRestarts") or 0),
        exec_main_status=int(props.get("ExecMainStatus") or 0),
        active_enter_timestamp=parse_timestamp(props.get("ActiveEnterTimestamp", "")),
        result=props.get("Result", ""),
        properties=props,
    )


def quote_exec(argv: Sequence[str]) -> str:
    """An argv as an ExecStart= value: each word double-quoted, specifiers and $ escaped."""
    words = []
    for word in argv:
        if "\n" in word or "\0" in word:
            raise ValueError("ExecStart words cannot hold newlines or NUL")
        escaped = word.replace("\\", "\\\\").replace('"', '\\"')
        words.append('"' + escaped.replace("%", "%%").replace("$", "$$") + '"')
    return " ".join(words)


class SystemdManager:
    """start/stop/restart/reload, status, unit files and the journal of one systemd.

    Unit files are written with `tee TMP` (content on stdin) and `mv -f TMP PATH`, so one
    argv-only path works on local, prefix and ssh hosts, and daemon-reload never sees a
    half-written file. `unit_dir` defaults to /etc/systemd/system; with `user_mode` (which
    adds `--user` to systemctl and journalctl) it must be given.
    """

    def __init__(
        self,
        host: Host,
        *,
        user_mode: bool = False,
        unit_dir: str | None = None,
        timeout: float = 120.0,  # above systemd's own 90 s start timeout
        journal_lines: int = 20,
    ) -> None:
        if unit_dir is not None and (not unit_dir.startswith("/") or ".." in unit_dir):
            raise ValueError(f"unit_dir must be an absolute path: {unit_dir!r}")
        self.host = host
        self.user_mode = user_mode
        self.unit_dir = unit_dir or (None if user_mode else "/etc/systemd/system")
        self.timeout = timeout
        self.journal_lines = journal_lines

    async def start(self, unit: str, *, wait: bool = True) -> None:
        """Start and wait for the job; `wait=False` only queues it (then use wait_active)."""
        await self._control("start", unit, *(() if wait else ("--no-block",)))

    async def stop(self, unit: str) -> None:
        await self._control("stop", unit)

    async def restart(self, unit: str) -> None:
        await self._control("restart", unit)

    async def reload(self, unit: str) -> None:
        await self._control("reload", unit)

    async def reset_failed(self, unit: str) -> None:
        """Forget a failed state (and the restart counter) before a fresh start."""
        await self._control("reset-failed", unit)

    async def daemon_reload(self) -> None:
        result = await self._systemctl("daemon-reload")
        if not result.ok:
            raise self._error(result, "daemon-reload", "")

    async def is_active(self, unit: str) -> bool:
        unit = validate_unit(unit)
        result = await self._systemctl("is-active", unit)
        if result.ok:
            return True
        if result.timed_out or not result.stdout.strip():
            raise self._error(result, "is-active", unit)
        return False  # inactive, failed, activating... (and unknown units: "inactive")

    async def show(self, unit: str, props: Sequence[str] = ()) -> UnitStatus:
        """The unit's state; `props` adds more properties, found raw in `.properties`."""
        unit = validate_unit(unit)
        for prop in props:
            if _PROPERTY.fullmatch(prop) is None:
                raise ValueError(f"invalid property name {prop!r}")
        wanted = ",".join(dict.fromkeys((*SHOW_PROPERTIES, *props)))
        result = await self._systemctl("show", unit, f"--property={wanted}", "--timestamp=us+utc")
        if not result.ok:
            raise self._error(result, "show", unit)
        status = parse_show(unit, result.stdout)
        if status.load_state == "not-found":
            raise UnitNotFound(f"unit {unit} not found", unit=unit, argv=result.argv)
        return status

    async def wait_active(
        self, unit: str, timeout: float = 30.0, *, interval: float = 0.2
    ) -> UnitStatus:
        """Poll until active; FailedToStart if it fails, ControlTimeout after `timeout` s.

        "failed" is read as the outcome of the latest start: after `start(wait=False)` of a
        unit that had failed before, call reset_failed() first or use start().
        """
        deadline = time.monotonic() + timeout
        while True:
            status = await self.show(unit)
            if status.active:
                return status
            if status.failed:
                raise await self._failed_to_start(unit, status, ())
            if time.monotonic() >= deadline:
                raise ControlTimeout(
                    f"{unit} not active after {timeout:g}s ({status.active_state}/"
                    f"{status.sub_state})",
                    unit=unit,
                )
            await asyncio.sleep(interval)

    async def journal_tail(self, unit: str, lines: int = 20) -> str:
        unit = validate_unit(unit)
        argv = ["journalctl", *self._user(), "--unit", unit, "--lines", str(int(lines))]
        argv += ["--no-pager", "--no-hostname", "--output=short-iso"]
        result = await self.host.run(argv, timeout=self.timeout)
        if not result.ok:
            raise self._error(result, "journal", unit)
        return result.stdout.rstrip("\n")

    async def install_unit(self, name: str, content: str, *, reload: bool = True) -> str:
        """Write a unit file (templates like `app@.service` allowed); returns its path."""
        path = self._unit_path(name)
        if "\0" in content:
            raise ValueError("unit file content cannot hold NUL")
        staging = path + ".opsgate-new"  # an unknown suffix: systemd ignores it
        for argv, data in (
            (["tee", staging], content.encode()),
            (["mv", "-f", staging, path], None),
        ):
            result = await self.host.run(argv, timeout=self.timeout, input=data, output_limit=1024)
            if not result.ok:
                raise self._error(result, "install", name)
        if reload:
            await self.daemon_reload()
        return path

    async def remove_unit(self, name: str, *, reload: bool = True) -> None:
        result = await self.host.run(["rm", "-f", self._unit_path(name)], timeout=self.timeout)
        if not result.ok:
            raise self._error(result, "remove", name)
        if reload:
            await self.daemon_reload()

    def _unit_path(self, name: str) -> str:
        name = validate_unit(name, allow_template=True)
        if self.unit_dir is None:
            raise ValueError("user_mode needs an explicit unit_dir to install units")
        return f"{self.unit_dir.rstrip('/')}/{name}"

    def _user(self) -> tuple[str, ...]:
        return ("--user",) if self.user_mode else ()

    async def _systemctl(self, *args: str) -> CommandResult:
        # --no-ask-password: fail at once with "Interactive authentication required"
        # instead of waiting for a polkit agent that nobody will ever answer.
        argv = ["systemctl", *self._user(), "--no-ask-password", "--no-pager", *args]
        return await self.host.run(argv, timeout=self.timeout)

    async def _control(self, verb: str, unit: str, *flags: str) -> None:
        unit = validate_unit(unit)
        result = await self._systemctl(verb, *flags, unit)
        if result.ok:
            return
        if verb in _START_VERBS and not result.timed_out and _JOB_FAILED.search(result.stderr):
            status = await self.show(unit)
            if status.result == "start-limit-hit":  # refused before anything ran
                raise StartLimitHit(
                    f"{unit} was not started: systemd's start limit was hit (too many starts"
                    f" within StartLimitIntervalSec); `systemctl reset-failed {unit}` clears it.",
                    unit=unit,
                    exit_status=None,
                    log_tail="",
                    argv=result.argv,
                    stderr=result.stderr,
                )
            raise await self._failed_to_start(unit, status, result.argv, result.stderr)
        raise self._error(result, verb, unit)

    async def _failed_to_start(
        self, unit: str, status: UnitStatus, argv: Sequence[str], stderr: str = ""
    ) -> FailedToStart:
        journal = await self.journal_tail(unit, self.journal_lines)
        why = f"{status.sub_state}, {status.result or 'failed'}"
        if status.result == "start-limit-hit":  # restarted by systemd until it gave up
            why += ": it kept failing and systemd stopped restarting it"
        return FailedToStart(
            f"{unit} failed to start ({why}, exit status {status.exec_main_status})",
            unit=unit,
            exit_status=status.exec_main_status,
            log_tail=journal,
            argv=argv,
            stderr=stderr,
        )

    def _error(self, result: CommandResult, verb: str, unit: str) -> ServiceControlError:
        """Translate a failed command into our error tree."""
        stderr = result.stderr.strip()
        kind: type[ServiceControlError] = ServiceControlError
        why = stderr.splitlines()[0] if stderr else f"exit status {result.exit_status}"
        if result.timed_out:
            kind, why = ControlTimeout, f"no answer within {self.timeout:g}s"
        elif _BUS_TIMEOUT.search(stderr):
            kind = ControlTimeout
        elif _DENIED.search(stderr):
            kind = PermissionDenied
        elif _NOT_FOUND.search(stderr):
            kind = UnitNotFound
        where = f"{verb} {unit}".strip()
        return kind(f"{where}: {why}", unit=unit, argv=result.argv, stderr=result.stderr)
