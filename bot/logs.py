"""Logging set-up that keeps secrets out of every line.

The bot token is part of every Bot API URL, httpx logs request URLs at INFO, and PTB puts the
token in the text of InvalidToken. So: httpx and httpcore are held at WARNING, and every line,
traceback included, is scrubbed of each secret after formatting.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

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


def redact_also(secrets: Iterable[str]) -> None:
    """Secrets known only once the ops file is read (webhook secrets from the environment it
    names) join those every configured handler scrubs."""
    values = [s for s in secrets if s]
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, RedactingFormatter):
            handler.formatter.also(values)


def configure_logging(level: str, secrets: Iterable[str]) -> None:
    """One stderr handler on the root logger, scrubbing secrets from every line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # A line per scheduler tick (the alert outbox runs every second) or per HTTP request
    # drowns the lines that matter: shown only when asked for with DEBUG.
    chatty = logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING
    for name in ("apscheduler", "uvicorn.access"):
        logging.getLogger(name).setLevel(chatty)
    # uvicorn brings its own handlers; route its lines through ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
