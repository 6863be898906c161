"""Logging set-up that keeps secrets out of every line.

The bot token is part of every Bot API URL, httpx logs request URLs at INFO, and PTB puts the
token in the text of InvalidToken. So: httpx and httpcore are held at WARNING, and every line,
traceback included, is scrubbed of each secret after formatting. With `json`, each line is one
JSON object (time, level, logger, message, exc), scrubbed the same way, field by field.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

REDACTED = "[REDACTED]"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def secret_variants(secrets: Iterable[str]) -> list[str]:
    """Each secret, plus the secret half of a bot token (`123456:ABC...` -> `ABC...`)."""
    variants: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        variants.add(secret)
        _, sep, tail = secret.partition(":")
        if sep and len(tail) >= 8:
            variants.add(tail)
    # Longest first, so a token is replaced whole before its tail is looked for.
    return sorted(variants, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


class RedactingFormatter(logging.Formatter):
    def __init__(self, secrets: Iterable[str], fmt: str = _FORMAT) -> None:
        super().__init__(fmt)
        self._secrets = secret_variants(secrets)

    def also(self, secrets: Iterable[str]) -> None:
        self._secrets = secret_variants([*self._secrets, *secrets])

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self._secrets)


class JsonFormatter(RedactingFormatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, exc if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage(), self._secrets),
        }
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info), self._secrets)
        elif record.exc_text:
            line["exc"] = redact(record.exc_text, self._secrets)
        # Scrubbed once more as a whole: a secret cannot hide behind JSON escaping.
        return redact(json.dumps(line, ensure_ascii=False), self._secrets)


def redact_also(secrets: Iterable[str]) -> None:
    """Secrets known only once the ops file is read (webhook secrets from the environment it
    names) join those every configured handler scrubs."""
    values = [s for s in secrets if s]
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, RedactingFormatter):
            handler.formatter.also(values)


def configure_logging(level: str, secrets: Iterable[str], fmt: str = "text") -> None:
    """One stderr handler on the root logger, scrubbing secrets from every line; `fmt` is
    "text" or "json"."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter(secrets) if fmt == "json" else RedactingFormatter(secrets)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # A line per scheduler tick (the alert outbox runs every second) or per HTTP request
    # drowns the lines that matter: shown only when asked for with DEBUG. PTB's "Application
    # started" and uvicorn's "running on" only repeat opsgate's own line.
    debug = level.upper() == "DEBUG"
    for name in ("uvicorn.access", "uvicorn.error", "telegram.ext.Application"):
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)
    # On a busy machine APScheduler warns of every skipped or late run of the one-second tick;
    # the next run comes a second later, so only its errors are worth a line.
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if debug else logging.ERROR)
    # uvicorn brings its own handlers; route its lines through ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
