"""Process settings and secrets, read from the environment or `.env` (prefix OPSGATE_)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_BOT_API_URL = "https://api.telegram.org/bot"


class UpdateMode(StrEnum):
    POLLING = "polling"
    WEBHOOK = "webhook"


class Settings(BaseSettings):
    """Everything a running opsgate needs besides the ops file.

    Secrets are SecretStr so a repr or a log line of the settings shows `**********`.
    """

    model_config = SettingsConfigDict(
        env_prefix="OPSGATE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    bot_token: SecretStr = Field(default=SecretStr(""))
    bot_api_url: str = DEFAULT_BOT_API_URL
    config: Path = Path("config/opsgate.toml")
    db: Path = Path("opsgate.db")
    http_addr: str = "127.0.0.1:8080"
    api_token: SecretStr = Field(default=SecretStr(""))
    # The bearer token alert webhooks must send (Alertmanager: http_config.authorization).
    alerts_token: SecretStr = Field(default=SecretStr(""))
    mode: UpdateMode = UpdateMode.POLLING
    # Public URL Telegram posts updates to in webhook mode, e.g. https://ops.example.com/telegram.
    webhook_url: str = ""
    webhook_secret: SecretStr = Field(default=SecretStr(""))
    log_level: str = "INFO"
    # Crash drills only: a deployment that enters this state (e.g. "switching") waits there
    # until the process is killed, so a drill or a test kills opsgate at exactly that step.
    hold_at: str = ""

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
