"""Alert load: 1000 alerts a minute for two minutes, with and without a restart of opsgate, and
across a failover between two opsgates on one PostgreSQL.

The scenario itself (what is sent, how the outcome is read) lives in
bot/dev/harness/alert_load.py, which bench/alerts.py uses too; this module judges it.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from bot.dev.harness.alert_load import (
    CRITICAL,
    LOAD_S,
    PER_SECOND,
    REPEAT_EVERY,
    WARNING,
    Outcome,
    run_scenario,
    severity,
)
from bot.dev.harness.postgres import PostgresCluster


def check(outcome: Outcome, *, exact: bool) -> None:
    """Accounted for in the right chat; with `exact`, no duplicates and no flood refusals."""
    where = f"{outcome.name} (log: {outcome.log})"
    assert outcome.alive, f"{where}: opsgate is not running at the end"
    assert len(outcome.accepted) == len(outcome.generated), f"{where}: some posts never accepted"
    assert outcome.stored == outcome.accepted, f"{where}: stored alerts differ from accepted"
    assert set(outcome.outbox) <= {"sent", "folded"}, f"{where}: outbox {outcome.outbox}"
    expected = {CRITICAL: "critical", WARNING: "warning"}
    for chat_id, level in expected.items():
        named = outcome.named(chat_id)
        wanted = {i for i in outcome.accepted if severity(i) == level}
        missing = sorted(wanted - set(named))
        assert not missing, f"{where}: {len(missing)} {level} alerts in no message: {missing[:10]}"
        stray = sorted(set(named) - wanted)
        assert not stray, f"{where}: {len(stray)} alerts in the {level} chat wrongly: {stray[:10]}"
    injected = outcome.faults["injected"]
    assert injected["429"] > 0 and injected["5xx"] > 0, f"{where}: no faults injected {injected}"
    if exact:
        assert outcome.duplicates() == {}, f"{where}: named twice: {outcome.duplicates()}"
        assert outcome.faults["flood_refusals"] == 0, f"{where}: {outcome.faults}"
        repeats = (LOAD_S // REPEAT_EVERY) * PER_SECOND
        assert (outcome.new_firing, outcome.unchanged) == (len(outcome.accepted), repeats)


async def test_thousand_alerts_a_minute_with_and_without_a_restart_and_across_a_failover(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    started = time.monotonic()
    results = await asyncio.gather(
        run_scenario(
            "plain", "7100000021:AAE2E-load-plain-token-for-the-test", tmp_path / "plain", seed=9
        ),
        run_scenario(
            "restart",
            "7100000022:AAE2E-load-restart-token-for-the-test",
            tmp_path / "restart",
            seed=1,
            restart=True,
        ),
        run_scenario(
            "failover",
            "7100000023:AAE2E-load-failover-token-for-the-test",
            tmp_path / "failover",
            seed=1,
            postgres_url=postgres.schema_url(),
        ),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    plain, restarted, failed_over = (r for r in results if isinstance(r, Outcome))
    print(f"\nalert load, {time.monotonic() - started:.0f} s wall:", file=sys.stderr)
    for outcome in (plain, restarted, failed_over):
        print("  " + outcome.summary(), file=sys.stderr)
    check(plain, exact=True)
    check(restarted, exact=False)
    check(failed_over, exact=False)
    assert failed_over.takeover_s is not None
    # Half the batches went to the follower first: it relayed them to the leader.
    assert failed_over.relayed > 0, failed_over.summary()
