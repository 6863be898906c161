"""Start real components on loopback for tests and benchmarks: each a context manager that
skips with a reason where the component cannot run (and fails instead under CI=true)."""
