"""Names of things we control (systemd units, supervisord programs) and the errors of control.

Every name is checked here before it reaches an argv, so user or config text can never
become an option (`-x`), a path (`a/b`, `..`) or anything a remote shell might read.

The errors form one small tree; each carries the unit, the argv that failed (empty when
nothing ran) and the tail of its stderr:

    ServiceControlError
     +-- InvalidUnitName      the name was rejected; nothing ran
     +-- UnitNotFound         systemd or supervisord does not know the unit
     +-- PermissionDenied     the manager refused us (polkit, socket permissions, auth)
     +-- ControlTimeout       the command or the wait ran out of time
     +-- FailedToStart        the service exited or failed while starting; carries its
                              exit status (None when unknown) and a journal/log tail
          +-- StartLimitHit   systemd refused the start we asked for: its start limit
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from services.errors import OpsgateError

UNIT_NAME_MAX = 256  # systemd's UNIT_NAME_MAX
UNIT_TYPES = ("service", "socket", "target", "timer", "path", "mount", "slice", "scope")
PROGRAM_NAME_MAX = 64
STDERR_TAIL_LINES = 20

# A prefix, an optional template instance after "@", and a known type suffix. The first
# character of each part is alphanumeric, so nothing can look like an option.
_PART = r"[A-Za-z0-9][A-Za-z0-9_.:\-]*"
_UNIT = re.compile(rf"({_PART})(@(?:{_PART})?)?\.({'|'.join(UNIT_TYPES)})")
_PROGRAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*(:[A-Za-z0-9][A-Za-z0-9_.\-]*)?")


class ServiceControlError(OpsgateError):
    """A control command failed; `str()` is a one-line message fit for a chat reply."""

    def __init__(
        self, message: str, *, unit: str, argv: Sequence[str] = (), stderr: str = ""
    ) -> None:
        super().__init__(message)
        self.unit = unit
        self.argv: tuple[str, ...] = tuple(argv)
        self.stderr = tail_lines(stderr, STDERR_TAIL_LINES)


class InvalidUnitName(ServiceControlError, ValueError):
    pass


class UnitNotFound(ServiceControlError):
    pass


class PermissionDenied(ServiceControlError):
    pass


class ControlTimeout(ServiceControlError):
    pass


class FailedToStart(ServiceControlError):
    def __init__(
        self,
        message: str,
        *,
        unit: str,
        exit_status: int | None,
        log_tail: str,
        argv: Sequence[str] = (),
        stderr: str = "",
    ) -> None:
        super().__init__(message, unit=unit, argv=argv, stderr=stderr)
        self.exit_status = exit_status
        self.log_tail = log_tail


def tail_lines(text: str, lines: int) -> str:
    """The last `lines` lines of `text`, without a trailing newline."""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _check_common(name: str, limit: int, kind: str) -> None:
    if not name:
        raise InvalidUnitName(f"empty {kind} name", unit=name)
    if len(name) > limit:
        raise InvalidUnitName(f"{kind} name longer than {limit} characters", unit=name[:limit])
    if ".." in name:
        raise InvalidUnitName(f"{kind} name {name!r} contains '..'", unit=name)


def validate_unit(name: str, *, allow_template: bool = False) -> str:
    """The canonical unit name for `name` (".service" is added when no type is given).

    Template instances (`app@blue.service`) are accepted; a bare template (`app@.service`)
    only with `allow_template`, since it can be installed but not started.
    """
    _check_common(name, UNIT_NAME_MAX, "unit")
    if not _UNIT.fullmatch(name) and _UNIT.fullmatch(name + ".service"):
        name += ".service"
    match = _UNIT.fullmatch(name)
    if match is None or len(name) > UNIT_NAME_MAX:
        raise InvalidUnitName(f"invalid unit name {name!r}", unit=name)
    if match.group(2) == "@" and not allow_template:
        raise InvalidUnitName(f"{name!r} is a template; name an instance", unit=name)
    return name


def validate_program(name: str) -> str:
    """A supervisord program name, or `group:name`; returned unchanged."""
    _check_common(name, PROGRAM_NAME_MAX, "program")
    if _PROGRAM.fullmatch(name) is None:
        raise InvalidUnitName(f"invalid program name {name!r}", unit=name)
    return name


class StartLimitHit(FailedToStart):
    """systemd refused a start opsgate asked for: the unit's start limit (StartLimitBurst
    within StartLimitIntervalSec) was hit. Not the release's fault."""
