"""Releases on a host: building a release directory, the `releases/` + `current` layout,
and questions about what is kept and where a rollback goes."""
