"""Alerts: intake, grouping and routing, silences, the outbox that delivers them."""
