"""The services a running opsgate holds, in one typed container shared by chat, HTTP and CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from config.opsfile import OpsConfig
from services.audit import AuditLog, utc_now
from services.storage import Storage

VERSION = "0.1.0"


@dataclass
class Services:
    ops: OpsConfig  # replaced whole on /reload, never mutated in place
    ops_path: Path
    storage: Storage
    audit: AuditLog
    started_at: datetime = field(default_factory=utc_now)
    version: str = VERSION

    @classmethod
    def create(cls, ops: OpsConfig, ops_path: Path, storage: Storage) -> Services:
        return cls(ops=ops, ops_path=ops_path, storage=storage, audit=AuditLog(storage))

    def uptime_seconds(self) -> float:
        return (utc_now() - self.started_at).total_seconds()
