"""What OPSGATE_DB names: a SQLite file path, or a PostgreSQL URL. Nothing else is taken."""

from __future__ import annotations

import re

URL_SCHEMES = ("postgresql", "postgres")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def looks_like_url(target: str) -> bool:
    return bool(_URL.match(target))


def is_postgres_url(target: str) -> bool:
    return looks_like_url(target) and target.split("://", 1)[0].lower() in URL_SCHEMES


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)
