"""Outgoing webhooks: audited events queued per subscription, signed (Standard Webhooks), sent."""
