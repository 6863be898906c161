"""Unit and program name validation, and the shape of the control error tree."""

from __future__ import annotations

import pytest

from services.control.units import (
    UNIT_NAME_MAX,
    ControlTimeout,
    FailedToStart,
    InvalidUnitName,
    PermissionDenied,
    ServiceControlError,
    UnitNotFound,
    tail_lines,
    validate_program,
    validate_unit,
)

# Names a user or a config file could send that must never reach an argv.
HOSTILE_NAMES = [
    "",
    " ",
    "web service",
    "web;reboot",
    "web.service; rm -rf /",
    "$(reboot)",
    "`reboot`",
    "web\n",
    "web\nExecStart=/bin/sh",
    "-web",
    "--help",
    "-H root@elsewhere",
    "../web",
    "web/../../etc",
    "/etc/systemd/system/web.service",
    "web/other",
    "..",
    "web..service",
    "web|cat",
    "web&",
    "web>out",
    "web'",
    'web"',
    "web\\x2d",
    "web\0",
    "wéb",
    "web\t",
    "*",
    "web*",
    "x" * (UNIT_NAME_MAX + 1),
    "@.service",
    ".service",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_unit_names_are_rejected(name: str) -> None:
    with pytest.raises(InvalidUnitName):
        validate_unit(name, allow_template=True)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_program_names_are_rejected(name: str) -> None:
    with pytest.raises(InvalidUnitName):
        validate_program(name)


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("web", "web.service"),
        ("web.service", "web.service"),
        ("web-api_2.service", "web-api_2.service"),
        ("app@blue.service", "app@blue.service"),
        ("app@blue", "app@blue.service"),
        ("app@10.0.0.1:8080.service", "app@10.0.0.1:8080.service"),
        ("nightly.timer", "nightly.timer"),
        ("opsgate.target", "opsgate.target"),
        ("web.v2", "web.v2.service"),
    ],
)
def test_valid_unit_names_are_canonical(name: str, canonical: str) -> None:
    assert validate_unit(name) == canonical


def test_a_template_needs_permission() -> None:
    with pytest.raises(InvalidUnitName, match="template"):
        validate_unit("app@.service")
    assert validate_unit("app@.service", allow_template=True) == "app@.service"


def test_overlong_unit_name_after_adding_the_suffix() -> None:
    name = "x" * (UNIT_NAME_MAX - 3)
    with pytest.raises(InvalidUnitName):
        validate_unit(name)
    assert validate_unit("x" * (UNIT_NAME_MAX - len(".service")))


@pytest.mark.parametrize("name", ["web", "web-2", "web_api.v2", "group:web", "a"])
def test_valid_program_names(name: str) -> None:
    assert validate_program(name) == name


@pytest.mark.parametrize("name", ["web.service:x:y", "group:", ":web", "web:*"])
def test_program_groups_are_strict(name: str) -> None:
    with pytest.raises(InvalidUnitName):
        validate_program(name)


def test_error_tree() -> None:
    for kind in (InvalidUnitName, UnitNotFound, PermissionDenied, ControlTimeout, FailedToStart):
        assert issubclass(kind, ServiceControlError)
    assert issubclass(InvalidUnitName, ValueError)  # a bad name is bad input, too


def test_errors_carry_unit_argv_and_a_stderr_tail() -> None:
    stderr = "\n".join(f"line {n}" for n in range(100)) + "\n"
    error = UnitNotFound("gone", unit="web.service", argv=["systemctl", "start"], stderr=stderr)
    assert (error.unit, error.argv, str(error)) == ("web.service", ("systemctl", "start"), "gone")
    assert error.stderr.splitlines() == [f"line {n}" for n in range(80, 100)]


def test_failed_to_start_carries_exit_status_and_log() -> None:
    error = FailedToStart("boom", unit="web", exit_status=3, log_tail="it broke")
    assert (error.exit_status, error.log_tail, error.argv) == (3, "it broke", ())


def test_tail_lines() -> None:
    assert tail_lines("a\nb\nc\n", 2) == "b\nc"
    assert tail_lines("", 5) == ""
