"""How long history is kept, where audit events are archived, and database backups.

[retention]
every_h = 24                 # prune and back up this often
alerts_days = 30             # resolved alerts, their outbox rows and empty groups
deployments_days = 365       # finished deployments (and their sign-offs)
audit_days = 365             # audit events: appended to archive_dir first, then deleted
archive_dir = "/var/lib/opsgate/archive"
backup_dir = "/var/lib/opsgate/backups"
keep_backups = 7
"""

from __future__ import annotations

from pydantic import Field

from config.inventory import FilePath
from config.strict import StrictModel


class RetentionOptions(StrictModel):
    every_h: float = Field(default=24, gt=0, le=24 * 30)
    alerts_days: float = Field(default=30, gt=0)
    deployments_days: float = Field(default=365, gt=0)
    audit_days: float = Field(default=365, gt=0)
    archive_dir: FilePath | None = None  # none: audit events are kept, never deleted
    backup_dir: FilePath | None = None  # none: no scheduled backups
    keep_backups: int = Field(default=7, ge=1, le=1000)
