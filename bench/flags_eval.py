"""In-process flag evaluations per second: the engine alone, no HTTP, no database.

Rows:
  bucket            the sticky-bucket hash alone (MurmurHash3 + multiply-shift)
  one flag at 25%   evaluate() of one flag with a targeting key (context checked, SPLIT)
  lookup + one      the same through a store snapshot, as the OFREP endpoint does it
  all 20 flags      evaluate_all() over 20 flags with mixed targeting, per call and per flag

Each row runs for about `--seconds` (after a short warm-up) over 10,000 distinct targeting keys
and reports calls per second and microseconds per call, single-threaded. Run by hand:

    .venv/bin/python bench/flags_eval.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

from services.flags.bucketing import bucket
from services.flags.engine import evaluate, evaluate_all, segment_sets
from services.flags.types import EvaluationContext, Flag, FlagSnapshot, Targeting

REPO = Path(__file__).resolve().parents[1]

KEYS = [f"user-{i}" for i in range(10_000)]
CONTEXTS = [
    EvaluationContext(key, {"chat_id": -1001000 - i % 50, "chat_type": "group"})
    for i, key in enumerate(KEYS)
]
SEGMENTS = segment_sets({"beta": [f"user-{i}" for i in range(0, 10_000, 97)]})


def twenty_flags() -> list[Flag]:
    """A mix like a real set: some plain rollouts, some targeted, some off."""
    flags = []
    for i in range(20):
        targeting = Targeting()
        if i % 4 == 1:
            targeting = Targeting(
                user_ids=frozenset({"user-1", "user-2"}),
                segments=("beta",),
                excluded_chats=frozenset({"-1001000"}),
            )
        elif i % 4 == 2:
            targeting = Targeting(chat_types=frozenset({"group", "supergroup"}))
        percent = [5.0, 25.0, 50.0, 100.0, 0.0][i % 5]
        flags.append(
            Flag(f"flag_{i}", enabled=i % 7 != 6, rollout_percent=percent, targeting=targeting)
        )
    return flags


def rate(seconds: float, call: Callable[[int], object]) -> tuple[float, int]:
    """Calls per second of call(i), i running over the key indexes, for about `seconds`."""
    for i in range(2_000):  # warm-up
        call(i % len(KEYS))
    calls, started = 0, time.perf_counter()
    deadline = started + seconds
    while True:
        for i in range(len(KEYS)):
            call(i)
        calls += len(KEYS)
        if time.perf_counter() >= deadline:
            break
    return calls / (time.perf_counter() - started), calls


def main(seconds: float) -> None:
    checkout = Flag("checkout_v2", enabled=True, rollout_percent=25.0)
    flags = twenty_flags()
    snapshot = FlagSnapshot({f.key: f for f in [checkout, *flags]}, "bench")

    rows: list[tuple[str, Callable[[int], object], int]] = [
        ("bucket", lambda i: bucket("checkout_v2", KEYS[i]), 1),
        ("one flag at 25%", lambda i: evaluate(checkout, checkout.key, CONTEXTS[i], SEGMENTS), 1),
        (
            "lookup + one",
            lambda i: evaluate(snapshot.get("checkout_v2"), "checkout_v2", CONTEXTS[i], SEGMENTS),
            1,
        ),
        ("all 20 flags", lambda i: evaluate_all(flags, CONTEXTS[i], SEGMENTS), 20),
    ]
    print(f"python {platform.python_version()} on {platform.machine()}, {seconds:g} s per row")
    print(f"{'row':<18}{'calls/s':>12}{'us/call':>10}{'flags/s':>12}{'calls':>10}")
    for name, call, per_call in rows:
        per_second, calls = rate(seconds, call)
        print(
            f"{name:<18}{per_second:>12,.0f}{1e6 / per_second:>10.2f}"
            f"{per_second * per_call:>12,.0f}{calls:>10,}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    main(parser.parse_args().seconds)
