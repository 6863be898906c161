import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.cli import main

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`run` installs its own handler on captured stderr; later tests must not log into it."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.strip() == "opsgate 0.1.0"


def test_check_config_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(CONFIG_DIR / "opsgate.example.toml")]) == 0
    out = capsys.readouterr().out
    assert "OK (4 service(s), 2 environment(s), 8 people, 11 role(s))" in out


def test_check_config_warns_of_a_rule_severity_without_a_route(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        "[chats.alerts]\ncritical = -1001\n[chats]\ndeploys = -1005\n"
        '[[alerts.rules]]\nname = "Mem"\nmetric = "memory_percent"\nabove = 90\n'
        'severity = "warning"\n'
    )
    assert main(["check-config", str(path)]) == 0  # a warning, not a problem
    out = capsys.readouterr().out
    assert (
        "warning: alerts.rules[0].severity: no route for 'warning'; it reaches only the default"
        " chat -1005" in out
    )


def test_check_config_lists_every_problem_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[services.web]\nenvironment = "production"\nunit = "web service"\n'
        'health = { url = "nope" }\n'
    )
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: 2 problem(s)" in err
    assert "services.web.unit: not a valid systemd unit name" in err
    assert "services.web.health.url: not a valid URL" in err


def test_run_without_token_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPSGATE_BOT_TOKEN", raising=False)
    assert main(["run"]) == 2
    assert "OPSGATE_BOT_TOKEN is not set" in capsys.readouterr().err
