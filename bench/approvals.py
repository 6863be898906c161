"""Sign-off latency and edits: time from the last required press to the deployment starting,
and how many times the approval message is edited per press.

Baseline, measured in the same run: the round trip of a press that changes nothing (a
replayed tick: the bot reads the request and answers, nothing else). opsgate runs in-process
against the Bot API sandbox; the deployment's own pipeline is beside the point (its service
has nothing to build), only the moment it starts. Run by hand:

    .venv/bin/python bench/approvals.py [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr

from bot.dev.demo import seed_sandbox
from bot.dev.sandbox import SandboxClient, SandboxMessage, SandboxThread
from bot.runner import Opsgate
from config.opsfile import parse_ops_text
from config.settings import Settings, UpdateMode

REPO = Path(__file__).resolve().parents[1]

TOKEN = "7300000002:BENCH-approvals-token-for-the-bench"
REQUESTER, QA, SECURITY = 1001, 1002, 1003
DEPLOYS, APPROVALS = -100100, -100200
OPS = """
[people]
1001 = "alice"
1002 = "bob"
1003 = "carol"
[roles]
sre = [1001]
qa = [1002]
security = [1003]
[chats]
deploys = -100100
approvals = -100200
[approvals.checklists.qa]
items = [{ key = "regression", text = "Regression green" }, { key = "manual", text = "Smoke" }]
[approvals.checklists.security]
items = [{ key = "scan", text = "Scan clean" }, { key = "secrets", text = "No secrets" }]
[environments.production.approval]
roles = { qa = 1, security = 1 }
[services.app]
environment = "production"
unit = "bench-app.service"
[services.app.deploy]
root = "/nonexistent/bench-app"
artifact = "/nonexistent/bench-app-{version}"
"""


async def wait_answer(client: SandboxClient, callback_id: str) -> None:
    while await client.callback_answer(callback_id) is None:
        await client.wait_change(await client.version(), 1.0)


async def signoff(client: SandboxClient, deployment: str) -> SandboxMessage:
    return await client.wait_for(
        APPROVALS,
        lambda ms: next((m for m in ms if f"Deploy {deployment} " in m.text and m.buttons), None),
    )


async def edits_of(client: SandboxClient, message_id: int) -> int:
    return next(m.edits for m in await client.messages(APPROVALS) if m.message_id == message_id)


async def edits_after(client: SandboxClient, message_id: int, before: int) -> int:
    """Edits since `before`, counted once the message has been quiet for 0.5 s (the bot
    answers a press first and edits after)."""
    while True:
        version = await client.version()
        if await client.wait_change(version, 0.5) == version:
            return await edits_of(client, message_id) - before


async def one_run(
    client: SandboxClient, opsgate: Opsgate, number: int
) -> tuple[float, float, list[int], int]:
    """(last press -> pre_checks event, seconds), (no-op press round trip), edits per press."""
    await client.send(REQUESTER, DEPLOYS, f"/deploy app v{number}")
    message = await signoff(client, f"#{number}")
    # Presses in order: qa's two ticks, qa approves, security's two ticks, security approves.
    plan = [(QA, 1), (QA, 2), (QA, 3), (SECURITY, 1), (SECURITY, 2)]
    edits: list[int] = []
    for user, index in plan:
        before = await edits_of(client, message.message_id)
        current = next(
            m for m in await client.messages(APPROVALS) if m.message_id == message.message_id
        )
        data = [b for row in current.buttons for b in row][index - 1].data
        assert data is not None
        await wait_answer(client, await client.press(user, APPROVALS, message.message_id, data))
        edits.append(await edits_after(client, message.message_id, before))
    # A replay of security's first tick: a press that changes nothing (the baseline).
    current = next(
        m for m in await client.messages(APPROVALS) if m.message_id == message.message_id
    )
    tick = next(b.data for row in current.buttons for b in row if b.data and "tick" in b.data)
    assert tick is not None
    before = await edits_of(client, message.message_id)
    started = time.perf_counter()
    replay = tick.replace("untick", "tick")  # ticking what is ticked already
    await wait_answer(client, await client.press(SECURITY, APPROVALS, message.message_id, replay))
    noop = time.perf_counter() - started
    replay_edits = await edits_after(client, message.message_id, before)
    # The last required press: security approves.
    approve = next(b.data for row in current.buttons for b in row if b.data and ":ok:" in b.data)
    assert approve is not None
    pressed_at = datetime.now(UTC)
    before = await edits_of(client, message.message_id)
    await wait_answer(client, await client.press(SECURITY, APPROVALS, message.message_id, approve))
    started_at = await pre_checks_at(opsgate, number)
    while not (await opsgate.services.deployments.get(number)).finished:  # frees the lock
        await client.wait_change(await client.version(), 0.1)
    edits.append(await edits_after(client, message.message_id, before))
    return (started_at - pressed_at).total_seconds(), noop, edits, replay_edits


async def pre_checks_at(opsgate: Opsgate, deployment_id: int) -> datetime:
    """When the deployment entered pre_checks, by its event (polled: it is a DB row)."""
    for _ in range(2000):
        events = await opsgate.services.deployments.events(deployment_id)
        found = next((e.at for e in events if e.data.get("to") == "pre_checks"), None)
        if found is not None:
            return found
        await asyncio.sleep(0.005)
    raise TimeoutError(f"#{deployment_id} never started")


async def main(runs: int) -> None:
    with SandboxThread(TOKEN) as sandbox, tempfile.TemporaryDirectory() as tmp:
        ops_file = Path(tmp) / "ops.toml"
        ops_file.write_text(OPS)
        async with SandboxClient(sandbox.control_url) as client:
            await client.reset()
            await seed_sandbox(client, parse_ops_text(OPS))
            settings = Settings(
                _env_file=None,
                bot_token=SecretStr(TOKEN),
                bot_api_url=sandbox.base_url,
                config=ops_file,
                db=Path(tmp) / "opsgate.db",
                http_addr="127.0.0.1:0",
                mode=UpdateMode.POLLING,
            )
            results = []
            for number in range(1, runs + 1):
                # A fresh process per run: PTB's rate limiter holds a group to 20 messages a
                # minute (as Telegram does), which would measure the limiter, not opsgate.
                opsgate = Opsgate(settings)
                await opsgate.start()
                try:
                    results.append(await one_run(client, opsgate, number))
                finally:
                    await opsgate.stop()
    to_start = [r[0] for r in results]
    noop = [r[1] for r in results]
    edits = [e for r in results for e in r[2]]
    median, baseline = statistics.median(to_start), statistics.median(noop)
    print(f"runs: {runs}, presses measured: {len(edits)}")
    print(
        f"last required press -> deployment in pre_checks: median {median * 1000:.1f} ms"
        f" (min {min(to_start) * 1000:.1f}, max {max(to_start) * 1000:.1f})"
    )
    print(f"baseline, a press that changes nothing (round trip): median {baseline * 1000:.1f} ms")
    print(f"ratio: {median / baseline:.2f}")
    mean = statistics.mean(edits)
    print(f"approval message edits per press that changes something: {sorted(set(edits))}")
    print(f"  (mean {mean:.2f}); per replayed press: {sorted({r[3] for r in results})}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    asyncio.run(main(parser.parse_args().runs))
