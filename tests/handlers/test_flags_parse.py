from datetime import timedelta

import pytest

from handlers.flags_parse import FlagCommand, FlagCommandError, parse_flag_command, parse_percent
from services.flags.edits import TargetingEdit


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("checkout_v2", FlagCommand("checkout_v2", "show")),
        ("checkout_v2 25", FlagCommand("checkout_v2", "percent", percent=25.0)),
        ("checkout_v2 2.5%", FlagCommand("checkout_v2", "percent", percent=2.5)),
        ("checkout_v2 100", FlagCommand("checkout_v2", "percent", percent=100.0)),
        ("checkout_v2 OFF", FlagCommand("checkout_v2", "off")),
        ("a.b kill", FlagCommand("a.b", "kill")),
        (
            "f exclude chat -1001234",
            FlagCommand("f", "targeting", edit=TargetingEdit("exclude", "chat", "-1001234")),
        ),
        (
            "f unexclude user 42",
            FlagCommand("f", "targeting", edit=TargetingEdit("unexclude", "user", "42")),
        ),
        ("f allow 42", FlagCommand("f", "targeting", edit=TargetingEdit("allow", "user", "42"))),
        (
            "f disallow u2@example.com",
            FlagCommand("f", "targeting", edit=TargetingEdit("disallow", "user", "u2@example.com")),
        ),
        (
            "f segment add beta",
            FlagCommand("f", "targeting", edit=TargetingEdit("segment_add", segment="beta")),
        ),
        (
            "f segment remove beta",
            FlagCommand("f", "targeting", edit=TargetingEdit("segment_remove", segment="beta")),
        ),
        (
            "f chats group,Supergroup",
            FlagCommand(
                "f",
                "targeting",
                edit=TargetingEdit("chats", chat_types=frozenset({"group", "supergroup"})),
            ),
        ),
        (
            "f chats all",
            FlagCommand("f", "targeting", edit=TargetingEdit("chats", chat_types=frozenset())),
        ),
        (
            "f plan 5,25,50,100 every 1h",
            FlagCommand("f", "plan", steps=(5.0, 25.0, 50.0, 100.0), every=timedelta(hours=1)),
        ),
        ("f resume", FlagCommand("f", "resume")),
    ],
)
def test_parse(args: str, expected: FlagCommand) -> None:
    assert parse_flag_command(args) == expected


@pytest.mark.parametrize("text", ["-1", "101", "abc", "25.55", "1e2", "nan", "inf", "", "0x10"])
def test_bad_percentages(text: str) -> None:
    with pytest.raises(FlagCommandError):
        parse_percent(text)


@pytest.mark.parametrize(
    "args",
    [
        "",
        "Checkout",
        "a/b 5",
        "../x",
        "f 101",
        "f -1",
        "f 25.55",
        "f exclude chat abc",
        "f exclude group 1",
        "f unexclude chat",
        "f allow",
        "f allow 1 2",
        "f segment beta",
        "f segment drop beta",
        "f chats groups",
        "f chats",
        "f plan 5,x every 1h",
        "f plan 5,25 every soon",
        "f plan 5,25 each 1h",
        "f frobnicate now",
        "$(id) on",
    ],
)
def test_bad_commands(args: str) -> None:
    with pytest.raises(FlagCommandError):
        parse_flag_command(args)
