"""Alert latency at 1000 alerts a minute: from the receiver's 200 to the sendMessage that
first named the alert, with Telegram's limits enforced.

The load is the one tests/e2e/test_alert_load.py judges (bot/dev/harness/alert_load.py): every
second one
POST to /webhooks/generic with 17 new alerts, each its own group (group_by alertname +
instance), half critical and half warning, so each of the two alert chats takes ~500 a
minute; every tenth second the previous batch again (a repeat dedup swallows). Its ops file
sets tick_s = 0.2 and group_wait_s = 0.5 (the defaults are 1 s and 5 s: both add to the
latency as they are). opsgate runs as `python -m bot run`, a real process, so the load
generator does not share its event loop; the Bot API sandbox runs in a thread of this process
with 20 messages a minute per chat and 30 a second overall, and no injected faults.

An alert's latency is the `sent_at` of the first outbox row naming it (written right after the
Bot API accepted that sendMessage) minus the wall time the sender got the 200 for its POST; a
row is a message for one alert's group or a digest folding many. Also shown: the 200 to the
first outbox row naming it (the scheduler's part: group_wait and ticks; the rest is waiting
for the chat's budget), and every alert is checked to be named in its chat's transcript.

Baseline, measured in the same run: the round trip of one POST of 17 alerts to the receiver
(also for the first and the last quarter of the posts: it grows with the alerts stored).
Run by hand:

    .venv/bin/python bench/alerts.py [--seconds 120]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import tempfile
from datetime import datetime
from pathlib import Path

from bot.dev.harness.alert_load import (
    CRITICAL,
    LOAD_S,
    PER_SECOND,
    WARNING,
    Outcome,
    run_scenario,
)
from bot.dev.harness.opsgate_process import read_db

REPO = Path(__file__).resolve().parents[1]

TOKEN = "7300000003:BENCH-alerts-token-for-the-benchmark"


def percentile(values: list[float], p: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ms(values: list[float]) -> str:
    if not values:
        return "(none)"
    p50, p90, p99 = (percentile(values, p) * 1000 for p in (50, 90, 99))
    return f"p50 {p50:.0f} ms, p90 {p90:.0f} ms, p99 {p99:.0f} ms, max {max(values) * 1000:.0f} ms"


def at(text: object) -> float:
    return datetime.fromisoformat(str(text)).timestamp()


def first_rows(db: Path) -> tuple[dict[str, tuple[float, str]], dict[str, float]]:
    """Per alert instance: (sent_at, kind) of the first sent row naming it, and created_at of
    the first row of any state naming it."""
    instance_of = {
        str(fp): str(instance)
        for fp, instance in read_db(
            db, "SELECT fingerprint, json_extract(labels, '$.instance') FROM alerts"
        )
    }
    sent: dict[str, tuple[float, str]] = {}
    enqueued: dict[str, float] = {}
    rows = read_db(
        db, "SELECT kind, fingerprints, state, created_at, sent_at FROM alert_outbox ORDER BY id"
    )
    for kind, fingerprints, state, created_at, sent_at in rows:
        for fp in json.loads(str(fingerprints)):
            instance = instance_of[fp]
            enqueued[instance] = min(enqueued.get(instance, math.inf), at(created_at))
            if state == "sent" and (instance not in sent or at(sent_at) < sent[instance][0]):
                sent[instance] = (at(sent_at), str(kind))
    return sent, enqueued


def report(outcome: Outcome, seconds: int) -> None:
    assert outcome.db is not None
    sent, enqueued = first_rows(outcome.db)
    accepted = outcome.accepted_at
    latency = {i: sent[i][0] - t for i, t in accepted.items() if i in sent}
    alone = [v for i, v in latency.items() if sent[i][1] != "digest"]
    digested = [v for i, v in latency.items() if sent[i][1] == "digest"]
    to_row = [enqueued[i] - t for i, t in accepted.items() if i in enqueued]
    named = set(outcome.named(CRITICAL)) | set(outcome.named(WARNING))
    messages = outcome.bot_messages()
    digests = outcome.digests()
    trips = outcome.round_trips
    print(
        f"load: {seconds} s x {PER_SECOND} alerts/s = {len(outcome.generated)} alerts"
        f" ({len(outcome.generated) * 60 / seconds:.0f} a minute), {len(outcome.accepted)}"
        f" accepted in {outcome.posts} posts; outbox drained {outcome.drain_s:.1f} s after"
    )
    print(
        f"messages: {len(messages)} ({len(messages) - digests} individual, {digests} digests);"
        f" alerts first named individually: {len(alone)}, in a digest: {len(digested)};"
        f" named in no chat message: {len(outcome.accepted - named)};"
        f" flood refusals: {outcome.faults.get('flood_refusals')}"
    )
    print(f"receiver 200 -> first sendMessage naming it: {ms(list(latency.values()))}")
    print(f"  first named individually: {ms(alone)}")
    print(f"  first named in a digest:  {ms(digested)}")
    print(f"receiver 200 -> first outbox row naming it (scheduler): {ms(to_row)}")
    print(f"baseline, one POST of {PER_SECOND} alerts to the receiver (round trip): {ms(trips)}")
    quarter = max(1, len(trips) // 4)
    print(f"  first quarter of the posts: {ms(trips[:quarter])}")
    print(f"  last quarter of the posts:  {ms(trips[-quarter:])}")
    if latency and trips:
        ratio = percentile(list(latency.values()), 50) / percentile(trips, 50)
        print(f"ratio of the p50s: {ratio:.0f}")


async def main(seconds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        outcome = await run_scenario(
            "bench", TOKEN, Path(tmp) / "run", faults=(0.0, 0.0), seconds=seconds
        )
        report(outcome, seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=LOAD_S)
    asyncio.run(main(parser.parse_args().seconds))
