"""In-process flag evaluations per second: opsgate's engine against Python peer SDKs.

One boolean flag, `checkout_v2`, rolled out to 25 % of users keyed by the user id, evaluated
in-process (no HTTP, no network: every peer is configured offline) for the same 10,000 user
ids, single-threaded. Contexts are built once, before timing, for every contender alike.

Contenders and exactly how each is configured:

  opsgate (flagd-v2)      services/flags/engine.evaluate(flag, "checkout_v2", ctx, segments)
                          with Flag("checkout_v2", enabled=True, rollout_percent=25.0), no
                          targeting, the default bucketing scheme flagd-v2;
                          ctx = EvaluationContext("user-N", {}).
  opsgate (flagd-v3)      the same with scheme=BucketingScheme.V3 (the CBOR bucketing value).
  opsgate LiveFlagSource  LiveFlagSource.evaluate("checkout_v2", ctx): what OFREP calls per
                          request (snapshot lookup, ops-file segments and scheme, and whatever
                          the source does besides, such as counting evaluations), over a real
                          FlagStore on SQLite in a temporary directory, the flag created and set
                          to 25 % through the store.
  GrowthBook 4.0.0        one GrowthBook(features=...) instance, feature
                          {"defaultValue": False, "rules": [{"force": True, "coverage": 0.25,
                          "hashAttribute": "id"}]} (a percentage rollout rule); per call
                          gb.set_attributes({"id": "user-N"}) then gb.is_on("checkout_v2").
  UnleashClient 6.9.1     UnleashClient(url=<unused>, app_name, disable_metrics=True,
                          disable_registration=True, cache=FileCache bootstrapped from a dict):
                          toggle `checkout_v2` enabled with one `flexibleRollout` strategy
                          {rollout: "25", stickiness: "userId", groupId: "checkout_v2"};
                          initialize_client(fetch_toggles=False) (offline connector, no server
                          is ever asked); per call client.is_enabled("checkout_v2",
                          {"userId": "user-N"}).
  flagd-core 2.0.0        openfeature-flagd-core's FlagdCore, set_flags() with flagd JSON:
                          state ENABLED, variants {on: true, off: false}, defaultVariant off,
                          targeting {"fractional": [["on", 25], ["off", 75]]} (bucketing by the
                          targeting key, flagd's v3 scheme); per call
                          core.resolve_boolean_value("checkout_v2", False, ctx) with
                          ctx = openfeature EvaluationContext(targeting_key="user-N").

Rounds are interleaved: each round runs every contender once, for about `--seconds` each (after
a warm-up), in a rotated order; the table gives each contender's median over the rounds, its
best and worst round, and the ratio of opsgate's medians to the best peer's median. Before
timing, each contender's share of users on is printed (about 25 % each: the configurations are
equivalent), and opsgate under flagd-v3 is checked key by key against flagd-core.

A second table times parts of opsgate's engine alone (the bucket hash, a snapshot lookup, 20
flags with mixed targeting per context). Run by hand:

    .venv/bin/python bench/flags_eval.py [--seconds 1] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from growthbook import GrowthBook
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext as SdkContext
from UnleashClient import UnleashClient
from UnleashClient.cache import FileCache

from config.opsfile import parse_ops_text
from services.flags.bucketing import BucketingScheme, bucket
from services.flags.engine import evaluate, evaluate_all, segment_sets
from services.flags.serving import LiveFlagSource
from services.flags.store import FlagStore
from services.flags.types import EvaluationContext, Flag, FlagSnapshot, Targeting
from services.records.audit import AuditLog
from services.records.storage import Storage

KEY = "checkout_v2"
USERS = [f"user-{i}" for i in range(10_000)]
PEERS = ("GrowthBook", "UnleashClient", "flagd-core")

Contender = Callable[[int], bool]  # user index -> on?


def opsgate(scheme: BucketingScheme) -> Contender:
    flag = Flag(KEY, enabled=True, rollout_percent=25.0)
    contexts = [EvaluationContext(user, {}) for user in USERS]
    segments = segment_sets({})

    def call(i: int) -> bool:
        return evaluate(flag, KEY, contexts[i], segments, scheme).value is True

    return call


def live_source(directory: Path) -> Contender:
    async def build() -> LiveFlagSource:
        async with Storage(directory / "flags.db") as storage:
            store = FlagStore(storage, AuditLog(storage))
            await store.load()
            await store.create(KEY, "bench", "bench")
            await store.set_enabled(KEY, True, "bench")
            await store.set_rollout(KEY, 25.0, "bench")
        return LiveFlagSource(store, lambda: ops)  # evaluations read the in-memory snapshot

    ops = parse_ops_text("")
    source = asyncio.run(build())
    contexts = [EvaluationContext(user, {}) for user in USERS]
    return lambda i: source.evaluate(KEY, contexts[i]).value is True


def growthbook() -> Contender:
    rule = {"force": True, "coverage": 0.25, "hashAttribute": "id"}
    gb = GrowthBook(features={KEY: {"defaultValue": False, "rules": [rule]}})
    attributes = [{"id": user} for user in USERS]

    def call(i: int) -> bool:
        gb.set_attributes(attributes[i])
        return gb.is_on(KEY)

    return call


def unleash(directory: Path) -> Contender:
    strategy = {
        "name": "flexibleRollout",
        "parameters": {"rollout": "25", "stickiness": "userId", "groupId": KEY},
    }
    toggles = {
        "version": 1,
        "features": [{"name": KEY, "enabled": True, "strategies": [strategy]}],
    }
    cache = FileCache("opsgate-bench", directory=str(directory))
    cache.bootstrap_from_dict(toggles)
    client = UnleashClient(
        url="http://127.0.0.1:9/unused",  # never asked: no registration, metrics or fetch
        app_name="opsgate-bench",
        disable_metrics=True,
        disable_registration=True,
        cache=cache,
    )
    client.initialize_client(fetch_toggles=False)
    contexts = [{"userId": user} for user in USERS]
    return lambda i: client.is_enabled(KEY, contexts[i])


def flagd_core() -> Contender:
    core = FlagdCore()
    core.set_flags(
        {
            "flags": {
                KEY: {
                    "state": "ENABLED",
                    "variants": {"on": True, "off": False},
                    "defaultVariant": "off",
                    "targeting": {"fractional": [["on", 25], ["off", 75]]},
                }
            }
        }
    )
    contexts = [SdkContext(targeting_key=user) for user in USERS]
    return lambda i: core.resolve_boolean_value(KEY, False, contexts[i]).value is True


def rate(seconds: float, call: Contender) -> float:
    """Calls per second of call(i), i running over the user indexes, for about `seconds`."""
    for i in range(2_000):  # warm-up
        call(i)
    calls, started = 0, time.perf_counter()
    deadline = started + seconds
    while True:
        for i in range(len(USERS)):
            call(i)
        calls += len(USERS)
        if time.perf_counter() >= deadline:
            break
    return calls / (time.perf_counter() - started)


def peers_table(contenders: dict[str, Contender], seconds: float, rounds: int) -> None:
    names = list(contenders)
    print(f"{'contender':<24}{'share on':>9}")
    shares = {name: [call(i) for i in range(len(USERS))] for name, call in contenders.items()}
    for name in names:
        print(f"{name:<24}{sum(shares[name]) / len(USERS):>9.2%}")
    v3, flagd = shares["opsgate (flagd-v3)"], shares["flagd-core"]
    disagree = sum(a != b for a, b in zip(v3, flagd, strict=True))
    print(f"opsgate (flagd-v3) and flagd-core disagree on {disagree} of {len(USERS):,} users\n")

    runs: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            runs[name].append(rate(seconds, contenders[name]))
    medians = {name: statistics.median(values) for name, values in runs.items()}
    best_peer = max(PEERS, key=lambda name: medians[name])
    print(f"median of {rounds} interleaved rounds, {seconds:g} s per contender per round")
    print(f"{'contender':<24}{'evals/s':>12}{'min':>12}{'max':>12}{'vs ' + best_peer:>20}")
    for name in names:
        values = runs[name]
        ratio = medians[name] / medians[best_peer]
        print(
            f"{name:<24}{medians[name]:>12,.0f}{min(values):>12,.0f}{max(values):>12,.0f}"
            f"{ratio:>19.2f}x"
        )


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


def engine_table(seconds: float) -> None:
    checkout = Flag(KEY, enabled=True, rollout_percent=25.0)
    flags = twenty_flags()
    snapshot = FlagSnapshot({f.key: f for f in [checkout, *flags]}, "bench")
    segments = segment_sets({"beta": USERS[::97]})
    chats = [
        EvaluationContext(user, {"chat_id": -1001000 - i % 50, "chat_type": "group"})
        for i, user in enumerate(USERS)
    ]
    rows: list[tuple[str, Callable[[int], Any], int]] = [
        ("bucket", lambda i: bucket(KEY, USERS[i]), 1),
        ("chat context", lambda i: evaluate(checkout, KEY, chats[i], segments), 1),
        ("lookup + one", lambda i: evaluate(snapshot.get(KEY), KEY, chats[i], segments), 1),
        ("all 20 flags", lambda i: evaluate_all(flags, chats[i], segments), 20),
    ]
    print(f"\nopsgate's engine alone, one run of {seconds:g} s per row")
    print(f"{'row':<24}{'calls/s':>12}{'us/call':>10}{'flags/s':>12}")
    for name, call, per_call in rows:
        per_second = rate(seconds, call)
        print(
            f"{name:<24}{per_second:>12,.0f}{1e6 / per_second:>10.2f}"
            f"{per_second * per_call:>12,.0f}"
        )


def main(seconds: float, rounds: int) -> None:
    logging.disable(logging.WARNING)  # the peers' start-up notes
    warnings.simplefilter("ignore")
    packages = ("growthbook", "UnleashClient", "openfeature-flagd-core", "mmh3")
    found = ", ".join(f"{p} {version(p)}" for p in packages)
    print(f"python {platform.python_version()} on {platform.machine()}; {found}\n")
    with tempfile.TemporaryDirectory() as tmp:
        contenders = {
            "opsgate (flagd-v2)": opsgate(BucketingScheme.V2),
            "opsgate (flagd-v3)": opsgate(BucketingScheme.V3),
            "opsgate LiveFlagSource": live_source(Path(tmp)),
            "GrowthBook": growthbook(),
            "UnleashClient": unleash(Path(tmp)),
            "flagd-core": flagd_core(),
        }
        peers_table(contenders, seconds, rounds)
    engine_table(seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    main(args.seconds, args.rounds)
