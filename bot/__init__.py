"""Composition root and Telegram plumbing of opsgate."""

import os

# Opt in to PTB 23's behaviour now: durations such as RetryAfter.retry_after are timedeltas.
# Without it PTB 22 warns each time one is read, and 429 handling would run through warnings.
os.environ.setdefault("PTB_TIMEDELTA", "true")
