"""Records: SQLite storage and its migrations, the append-only audit log, retention and
opsgate's own database backups."""
