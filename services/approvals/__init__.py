"""Approvals: sign-off requests per policy, role checklists, evidence, reminders and expiry."""
