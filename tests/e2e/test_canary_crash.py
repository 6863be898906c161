"""A canary survives a crash: `opsgate run` (a real process) is SIGKILLed in the middle of its
steps, with users' traffic split between the versions, and a new process picks up the step it
left, with its analysis, and promotes the canary, or puts traffic back on stable on a breach.

The hold (OPSGATE_HOLD_AT=canary.step.2) stops the rollout right after the row for the second
step (25%) was written and before the proxy changed: the worst moment, the database is ahead
of the proxy (which still sends 5% to the canary).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.dev.harness.nginx import RequestLoad
from bot.dev.harness.opsgate_process import OpsgateProcess, opsgate_process, read_db
from bot.dev.sandbox import SandboxClient, SandboxMessage, SandboxThread
from tests.e2e.canary_stage import Stage
from tests.e2e.conftest import CAROL, DEPLOYS, TOKEN
from tests.e2e.test_fleet_crash import wait_finished

POLL_S = 0.05


@pytest.fixture
async def bot(
    sandbox: SandboxThread, client: SandboxClient, stage: Stage, tmp_path: Path
) -> AsyncIterator[OpsgateProcess]:
    async with opsgate_process(
        tmp_path,
        bot_token=TOKEN,
        bot_api_url=sandbox.base_url,
        config=str(stage.ops_file),
        db=str(tmp_path / "crash.db"),
        http_addr="127.0.0.1:0",
        log_level="INFO",
    ) as running:
        yield running


async def held_at_step(db: Path, deployment_id: int, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    sql = "SELECT phase, step, weight FROM canary_rollouts WHERE deployment_id = ?"
    while read_db(db, sql, deployment_id) != [("steps", 1, 25)]:
        assert asyncio.get_running_loop().time() < deadline, read_db(db, sql, deployment_id)
        await asyncio.sleep(POLL_S)


def card_with(*markers: str) -> Callable[[list[SandboxMessage]], SandboxMessage | None]:
    def find(messages: list[SandboxMessage]) -> SandboxMessage | None:
        return next((m for m in messages if m.from_bot and all(s in m.text for s in markers)), None)

    return find


@pytest.mark.parametrize("breach_after_restart", [False, True], ids=["promoted", "breached"])
async def test_sigkill_in_a_step_resumes_that_step_with_its_analysis(
    stage: Stage,
    bot: OpsgateProcess,
    client: SandboxClient,
    tmp_path: Path,
    breach_after_restart: bool,
) -> None:
    stage.write_ops()
    db = tmp_path / "crash.db"
    await bot.start()
    await client.reply_after(CAROL, DEPLOYS, "/deploy app v1", timeout=60)  # it is up
    assert (await wait_finished(db, 1, timeout=90))[0] == "succeeded"

    await bot.restart(OPSGATE_HOLD_AT="canary.step.2")
    with RequestLoad(stage.proxy_port, threads=3, interval_s=0.004) as load:
        await client.send(CAROL, DEPLOYS, "/deploy app v2")
        await held_at_step(db, 2)
        await bot.kill()
        split = {r.body for r in load.results[-200:]}
        assert split == {'{"version": "v1"}', '{"version": "v2"}'}  # users' traffic is split
        if breach_after_restart:
            stage.marker("errors", "v2", "0.5")
        await bot.start(OPSGATE_HOLD_AT="")
        state, error = await wait_finished(db, 2, timeout=120)
        after = load.now()
        await asyncio.sleep(1)  # what users get once it ended

    resumed = await client.wait_for(DEPLOYS, card_with("♻️ #2 Resuming"), timeout=30)
    assert "canary resumed at 25%" in resumed.text, resumed.text
    assert "25% to green for 3 s" in resumed.text
    assert [
        r.describe() for r in load.results if not r.ok and "injected" not in (r.body or "")
    ] == []
    later = {r.body for r in load.results if r.at > after}
    if breach_after_restart:
        assert state == "rolled_back", error
        assert "Canary at 25%: errors" in error
        assert later == {'{"version": "v1"}'}
    else:
        assert (state, error) == ("succeeded", "")
        assert "50% to green for 3 s" in resumed.text
        assert later == {'{"version": "v2"}'}
    phases = read_db(db, "SELECT phase FROM canary_rollouts WHERE deployment_id = 2")
    assert phases == [("back",)] if breach_after_restart else [("done",)]
    analyses = read_db(
        db, "SELECT count(*) FROM canary_analyses WHERE deployment_id = 2 AND weight = 25"
    )
    assert int(str(analyses[0][0])) >= 1  # the resumed step was analysed, not skipped
