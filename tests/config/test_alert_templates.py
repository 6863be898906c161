"""Route templates in the ops file: parsed into text and placeholders; anything but
{status}, {severity}, {labels.NAME} and {annotations.NAME} is refused with its path."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main
from config.alerts import parse_template
from config.opsfile import OpsFileError, parse_ops_text
from tests.config.test_opsfile import VALID


def with_route(template: str) -> str:
    route = f"[[alerts.routes]]\nchat = -1004\ntemplate = {template!r}\n"
    return VALID + route


def test_a_template_is_text_and_placeholders() -> None:
    parts = parse_template("{labels.service}: {{x}} { annotations.summary } {status}")
    assert parts == [
        ("field", "labels.service"),
        ("text", ": "),
        ("text", "{"),
        ("text", "x"),
        ("text", "}"),
        ("text", " "),
        ("field", "annotations.summary"),
        ("text", " "),
        ("field", "status"),
    ]


def test_a_valid_template_loads() -> None:
    ops = parse_ops_text(with_route("{severity} on {labels.service}"), "test.toml")
    assert ops.alerts.routes[0].template == "{severity} on {labels.service}"


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{foo}", "unknown placeholder '{foo}'"),
        ("{labels}", "unknown placeholder '{labels}'"),
        ("{labels.service.__class__}", "unknown placeholder '{labels.service.__class__}'"),
        ("{annotations[0]}", "unknown placeholder '{annotations[0]}'"),
        ("{0}", "unknown placeholder '{0}'"),
        ("{status!r}", "unknown placeholder '{status!r}'"),
        ("a { b", "a lone '{' at 2"),
        ("{status}}", "a lone '}' at 8"),
    ],
)
def test_check_config_refuses_a_bad_placeholder_with_its_path(template: str, reason: str) -> None:
    with pytest.raises(OpsFileError) as caught:
        parse_ops_text(with_route(template), "test.toml")
    [problem] = caught.value.problems
    assert problem.startswith(f"alerts.routes[0].template: {reason}"), problem


def test_opsgate_check_config_names_the_unknown_placeholder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "template.toml"
    path.write_text(with_route("{labels.service}: {annotations.summary} on {host}"))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "alerts.routes[0].template: unknown placeholder '{host}'" in err
