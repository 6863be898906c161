from pathlib import Path

import pytest

from config.opsfile import OpsFileError, is_valid_name, load_ops_file, parse_ops_text

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"

VALID = """
[people]
111 = "alice"
222 = "bob"
[roles]
sre = [111]
admin = [111, 222]
[chats]
deploys = -1001
approvals = -1002
alerts = { critical = -1003, warning = -1004, info = -1004 }
[environments.production]
[services.web]
environment = "production"
unit = "web.service"
health = { url = "http://127.0.0.1:8080/health" }
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(OpsFileError) as caught:
        parse_ops_text(text, "test.toml")
    return caught.value.problems


@pytest.mark.parametrize("name", ["opsgate.example.toml", "demo.toml"])
def test_shipped_ops_files_are_valid(name: str) -> None:
    config = load_ops_file(CONFIG_DIR / name)
    assert config.services
    assert config.people


def test_valid_file_gives_roles_and_chats() -> None:
    config = parse_ops_text(VALID)
    assert config.roles_of(111) == {"sre", "admin"}
    assert config.roles_of(222) == {"admin"}
    assert config.roles_of(999) == frozenset()
    assert config.name_of(222) == "bob"
    assert config.is_listed_chat(-1003)
    assert config.is_listed_chat(111)  # a person's private chat
    assert not config.is_listed_chat(-42)
    assert config.services["web"].health is not None


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ('health = { url = "not a url" }', "services.web.health.url: not a valid URL"),
        ('health = { url = "ftp://x/y" }', "services.web.health.url: not a valid URL"),
        ("colour = 1", "services.web.colour: unknown key"),
        ('health = { url = "http://x", expect_status = 999 }', "services.web.health.expect_status"),
    ],
)
def test_service_errors_name_their_path(snippet: str, expected: str) -> None:
    text = '[services.web]\nenvironment = "production"\nunit = "web.service"\n' + snippet
    problems = problems_of(text)
    assert any(p.startswith(expected) for p in problems), problems


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of(
        """
[people]
abc = "x"
12 = "Bad Name"
[chats]
deploys = "the deploy group"
[services.web]
unit = "web"
"""
    )
    assert "people.abc: not a Telegram user id (a whole number)" in problems
    assert any(p.startswith("people.12: not a valid name") for p in problems)
    assert "chats.deploys: not a whole number" in problems
    assert "services.web.environment: required but missing" in problems
    assert any(p.startswith("services.web.unit: not a valid systemd unit name") for p in problems)
    assert len(problems) == 5


def test_references_are_checked() -> None:
    problems = problems_of(
        """
[people]
1 = "alice"
[roles]
sre = [1, 2]
[environments.production]
[services.web]
environment = "prod"
unit = "web.service"
"""
    )
    assert problems == [
        "roles.sre[1]: 2 is not listed in [people]",
        "services.web.environment: unknown environment 'prod' (known: production)",
    ]


def test_syntax_error_gives_line_and_column() -> None:
    problems = problems_of("[services.web\nunit = ")
    assert len(problems) == 1
    assert problems[0].startswith("(syntax):")
    assert "line 1" in problems[0]


def test_missing_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(OpsFileError) as caught:
        load_ops_file(tmp_path / "nope.toml")
    assert caught.value.problems[0].startswith("(file): cannot read")


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("web", True),
        ("web-2_a", True),
        ("Web", False),
        ("../x", False),
        ("a" * 33, False),
        ("", False),
    ],
)
def test_name_validation(text: str, ok: bool) -> None:
    assert is_valid_name(text) is ok
