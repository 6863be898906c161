"""Process settings and secrets, read from the environment or `.env` (prefix OPSGATE_)."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.database import is_postgres_url, looks_like_url

DEFAULT_BOT_API_URL = "https://api.telegram.org/bot"
# What @BotFather hands out: the bot's id, a colon, the secret half (35 characters today).
BOT_TOKEN_PATTERN = re.compile(r"^[0-9]{5,16}:[A-Za-z0-9_-]{30,}\Z")


class UpdateMode(StrEnum):
    POLLING = "polling"
    WEBHOOK = "webhook"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"  # one JSON object per line, for journald / Loki


class Settings(BaseSettings):
    """Everything a running opsgate needs besides the ops file.

    Secrets are SecretStr so a repr or a log line of the settings shows `**********`. Each
    field's description is its line in `opsgate run -h`.
    """

    model_config = SettingsConfigDict(
        env_prefix="OPSGATE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    bot_token: SecretStr = Field(
        default=SecretStr(""), description="the bot's token from @BotFather (required)"
    )
    bot_api_url: str = Field(
        default=DEFAULT_BOT_API_URL,
        description="the Bot API base URL (or a local Bot API server's)",
    )
    config: Path = Field(default=Path("config/opsgate.toml"), description="the ops file (TOML)")
    # repr=False: a postgresql:// URL may carry a password.
    db: str = Field(
        default="opsgate.db",
        description="the SQLite database file, or a postgresql:// URL",
        repr=False,
    )
    http_addr: str = Field(
        default="127.0.0.1:8080", description="host:port of the HTTP side (API, alerts, health)"
    )
    api_token: SecretStr = Field(
        default=SecretStr(""), description="bearer token of the HTTP API and OFREP"
    )
    # The bearer token alert webhooks must send (Alertmanager: http_config.authorization).
    alerts_token: SecretStr = Field(
        default=SecretStr(""), description="bearer token alert webhooks must send"
    )
    mode: UpdateMode = Field(
        default=UpdateMode.POLLING, description="how updates arrive: polling or webhook"
    )
    # Public URL Telegram posts updates to in webhook mode, e.g. https://ops.example.com/telegram.
    webhook_url: str = Field(default="", description="public URL for webhook mode")
    webhook_secret: SecretStr = Field(
        default=SecretStr(""), description="secret Telegram sends with webhook updates"
    )
    # Several opsgates on one PostgreSQL: how long a follower waits for the leader to act on a
    # request it relays, before it answers 202 (stored; the leader acts when it can).
    relay_wait_s: float = Field(
        default=10.0, gt=0, le=60, description="how long a follower waits for the leader"
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_format: LogFormat = Field(
        default=LogFormat.TEXT, description="text, or json: one JSON object per line"
    )
    # Crash drills only: a deployment that enters this state (e.g. "switching") waits there
    # until the process is killed, so a drill or a test kills opsgate at exactly that step.
    hold_at: str = Field(default="", description="crash drills only: stop at this step")

    @field_validator("db", mode="before")
    @classmethod
    def _path_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, Path) else value  # a path given in code

    @field_validator("db")
    @classmethod
    def _check_db(cls, value: str) -> str:
        # A URL that is not PostgreSQL's would otherwise be taken as a file name and opsgate
        # would run, quietly, on a new local database named after it.
        if looks_like_url(value) and not is_postgres_url(value):
            raise ValueError(
                "a URL here must be postgresql://user@host:port/database; for SQLite give a"
                " file path"
            )
        return value

    @field_validator("http_addr")
    @classmethod
    def _check_http_addr(cls, value: str) -> str:
        split_http_addr(value)
        return value

    @property
    def http_host(self) -> str:
        return split_http_addr(self.http_addr)[0]

    @property
    def http_port(self) -> int:
        return split_http_addr(self.http_addr)[1]

    def secrets(self) -> list[str]:
        """The secret values that must never reach a log line or a chat message."""
        values = [self.bot_token, self.api_token, self.webhook_secret, self.alerts_token]
        return [v.get_secret_value() for v in values if v.get_secret_value()]


def split_http_addr(addr: str) -> tuple[str, int]:
    """`host:port` -> (host, port); raises ValueError with a readable message."""
    host, sep, port_text = addr.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"expected host:port, got {addr!r}")
    return host.strip("[]"), int(port_text)
