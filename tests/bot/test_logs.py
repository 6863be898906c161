import io
import json
import logging
import sys

import pytest

from bot.logs import (
    REDACTED,
    JsonFormatter,
    RedactingFormatter,
    configure_logging,
    redact_also,
    secret_variants,
)

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


def test_variants_include_token_tail_longest_first() -> None:
    assert secret_variants([TOKEN, ""]) == [TOKEN, TOKEN.split(":")[1]]


def test_formatter_scrubs_message_args_and_traceback() -> None:
    formatter = RedactingFormatter([TOKEN])
    try:
        raise RuntimeError(f"The token `{TOKEN}` was rejected by the server.")
    except RuntimeError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "calling %s", (f"/bot{TOKEN}/getMe",), exc_info=True
        )
        record.exc_info = sys.exc_info()
    text = formatter.format(record)
    assert TOKEN not in text
    assert TOKEN.split(":")[1] not in text
    assert text.count(REDACTED) == 2


def test_configure_logging_quiets_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("DEBUG", [TOKEN])
        logging.getLogger("httpx").info("HTTP Request: POST https://x/bot%s/getMe", TOKEN)
        logging.getLogger("telegram").debug("token %s", TOKEN)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("httpx").setLevel(logging.NOTSET)
    output = stream.getvalue()
    assert "HTTP Request" not in output  # httpx held at WARNING
    assert f"token {REDACTED}" in output
    assert TOKEN not in output


def test_scheduler_ticks_and_access_lines_only_at_debug() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("INFO", [])
        assert not logging.getLogger("apscheduler.executors.default").isEnabledFor(logging.INFO)
        assert not logging.getLogger("uvicorn.access").isEnabledFor(logging.INFO)
        assert not logging.getLogger("apscheduler.scheduler").isEnabledFor(logging.WARNING)
        assert logging.getLogger("apscheduler.executors.default").isEnabledFor(logging.ERROR)
        assert logging.getLogger("bot.runner").isEnabledFor(logging.INFO)
        configure_logging("DEBUG", [])
        assert logging.getLogger("apscheduler.executors.default").isEnabledFor(logging.DEBUG)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name in ("apscheduler", "uvicorn.access", "uvicorn.error", "telegram.ext.Application"):
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_secrets_named_by_the_ops_file_are_scrubbed_too(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    webhook_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    try:
        configure_logging("INFO", [TOKEN])
        redact_also([webhook_secret, ""])
        logging.getLogger("opsgate.test").warning("signing with %s for %s", webhook_secret, TOKEN)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    output = stream.getvalue()
    assert webhook_secret not in output and TOKEN not in output
    assert f"signing with {REDACTED} for {REDACTED}" in output


def test_json_lines_have_the_fields_and_are_scrubbed_field_by_field() -> None:
    formatter = JsonFormatter([TOKEN])
    try:
        raise RuntimeError(f"The token `{TOKEN}` was rejected by the server.")
    except RuntimeError:
        record = logging.LogRecord(
            "opsgate", logging.ERROR, __file__, 1, "calling %s", (f"/bot{TOKEN}/getMe",), None
        )
        record.exc_info = sys.exc_info()
    text = formatter.format(record)
    assert "\n" not in text  # one line, the traceback included
    line = json.loads(text)
    assert set(line) == {"time", "level", "logger", "message", "exc"}
    assert line["level"] == "ERROR" and line["logger"] == "opsgate"
    assert line["message"] == f"calling /bot{REDACTED}/getMe"
    assert line["time"].endswith("+00:00")
    assert "Traceback" in line["exc"] and REDACTED in line["exc"]
    assert TOKEN.split(":")[1] not in text


def test_json_line_without_an_error_has_no_exc() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "plain", None, None)
    assert "exc" not in json.loads(JsonFormatter([]).format(record))


def test_configure_logging_json_writes_one_object_per_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("INFO", [TOKEN], "json")
        redact_also(["whsec_later-known-secret-value"])
        logging.getLogger("opsgate.test").info(
            "a %s and a %s", TOKEN, "whsec_later-known-secret-value"
        )
        logging.getLogger("opsgate.test").debug("not shown at INFO")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["message"] == f"a {REDACTED} and a {REDACTED}"
