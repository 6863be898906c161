"""Feature flags: percentage rollouts with sticky bucketing, targeting, staged plans."""
