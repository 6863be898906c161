import errno
import sqlite3
from pathlib import Path

import pytest
from telegram.error import BadRequest, InvalidToken, NetworkError, TimedOut

from bot.startup import (
    ConfigurationError,
    StartupError,
    check_database_place,
    check_token_format,
    explain,
)
from config.opsfile import OpsFileError

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "notatoken",
        "123456789:short",
        "12:" + "A" * 35,
        "123456:" + "A" * 34 + "!",
        "123456:" + "A" * 35 + "\n",  # a line end copied along with it
    ],
)
def test_tokens_of_the_wrong_shape_are_refused_without_echo(token: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        check_token_format(token)
    assert "OPSGATE_BOT_TOKEN" in str(refused.value)
    assert not token or token not in str(refused.value)


def test_a_token_as_botfather_gives_it_passes() -> None:
    check_token_format(TOKEN)


@pytest.mark.parametrize(
    ("error", "kind", "words"),
    [
        (OpsFileError("ops.toml", ["a: bad", "b: worse"]), ConfigurationError, "a: bad; b: worse"),
        (InvalidToken(f"The token `{TOKEN}` was rejected"), ConfigurationError, "rejected"),
        (TimedOut(), StartupError, "lost the Bot API"),
        (NetworkError("httpx.ConnectError: refused"), StartupError, "lost the Bot API"),
        (sqlite3.OperationalError("unable to open database file"), ConfigurationError, "DB"),
        (OSError(errno.EADDRINUSE, "Address already in use"), StartupError, "in use"),
        (BadRequest("odd"), StartupError, "BadRequest: odd"),
        (RuntimeError("two\nlines"), StartupError, "RuntimeError: two lines"),
    ],
)
def test_errors_of_start_up_become_one_line(
    error: Exception, kind: type[StartupError], words: str
) -> None:
    problem = explain(error)
    assert type(problem) is kind
    assert words in str(problem) and "\n" not in str(problem)
    assert TOKEN not in str(problem)
    assert problem.exit_code == (2 if kind is ConfigurationError else 1)


def test_a_database_place_that_takes_files_passes_and_leaves_nothing(tmp_path: Path) -> None:
    check_database_place(tmp_path / "new" / "opsgate.db")
    assert list((tmp_path / "new").iterdir()) == []


def test_a_database_under_a_file_is_a_configuration_problem(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigurationError, match=r"OPSGATE_DB=.*file, not a directory"):
        check_database_place(tmp_path / "file" / "opsgate.db")
