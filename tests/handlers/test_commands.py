import pytest
from telegram import Update

from config.permissions import Action
from handlers.commands import Command, CommandRegistry, ParsedCommand, parse_command
from handlers.context import OpsContext


async def _noop(update: Update, context: OpsContext) -> None:
    return None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/help", ParsedCommand("help", "")),
        ("/Deploy web v1.2.3", ParsedCommand("deploy", "web v1.2.3")),
        ("/status@opsgate_bot", ParsedCommand("status", "")),
        ("/status@OpsGate_Bot  now ", ParsedCommand("status", "now")),
        ("/status@other_bot", None),
        ("hello /help", None),
        ("/", None),
    ],
)
def test_parse_command(text: str, expected: ParsedCommand | None) -> None:
    assert parse_command(text, "opsgate_bot") == expected


def test_registry_visibility_and_duplicates() -> None:
    registry = CommandRegistry(
        [Command("help", "h", _noop), Command("reload", "r", _noop, action=Action.ADMIN)]
    )
    assert [c.name for c in registry.visible_to(frozenset())] == ["help"]
    assert [c.name for c in registry.visible_to(frozenset({"admin"}))] == ["help", "reload"]
    assert registry.get("reload") is not None and registry.get("nope") is None
    with pytest.raises(ValueError, match="twice"):
        CommandRegistry([Command("help", "h", _noop), Command("help", "h", _noop)])
