"""Four eyes on rollouts that reach many users: above a flag's threshold a change is a
request that someone else with the flags role approves, from its buttons or with
/flag KEY approve ID; the requester cannot, a stale request is refused. Through the real bot."""

from __future__ import annotations

from pathlib import Path

import httpx

from bot.dev.sandbox import SandboxClient
from bot.runner import Opsgate
from tests.e2e.conftest import (
    ALICE,
    BOB,
    CAROL,
    DEPLOYS,
    OPS_TEXT,
    StartOpsgate,
    callback_answer_text,
)

API_TOKEN = "four-eyes-e2e-token"
FLAGS = "[flags.checkout]\nfour_eyes_above = 25\n"


async def percent(opsgate: Opsgate) -> float:
    flag = await opsgate.services.flags.get("checkout")
    assert flag is not None
    return flag.rollout_percent


async def kinds(opsgate: Opsgate) -> list[str]:
    rows = await opsgate.services.storage.db.execute_fetchall(
        "SELECT kind FROM events WHERE kind GLOB 'flag.change_*' ORDER BY id"
    )
    return [row[0] for row in rows]


async def test_a_rollout_above_the_threshold_waits_for_someone_else(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    ops_file.write_text(FLAGS + OPS_TEXT)
    opsgate = await start_opsgate(api_token=API_TOKEN)

    low = await client.reply_after(CAROL, DEPLOYS, "/flag checkout 20")
    assert low.text == "🚩 checkout changed by carol:\n• rollout: 0% → 20%"  # at or under: at once

    asked = await client.reply_after(CAROL, DEPLOYS, "/flag checkout 50")
    assert asked.text.startswith(
        "👀 checkout: rollout to 50% needs a second person (four eyes), asked by carol."
    )
    assert [b.text for row in asked.buttons for b in row] == ["✅ Approve", "✖ Reject"]
    assert await percent(opsgate) == 20

    own = await client.press_button(CAROL, DEPLOYS, asked.message_id, 1)
    assert await callback_answer_text(client, own) == (
        "You asked for this change: someone else approves it."
    )
    no_role = await client.press_button(BOB, DEPLOYS, asked.message_id, 1)
    assert "sre" in await callback_answer_text(client, no_role)
    assert await percent(opsgate) == 20

    approved = await client.press_button(ALICE, DEPLOYS, asked.message_id, 1)
    assert await callback_answer_text(client, approved) == "Approved: applied."
    assert await percent(opsgate) == 50
    [message] = [m for m in await client.messages(DEPLOYS) if m.message_id == asked.message_id]
    assert message.text == (
        "✅ checkout: rollout to 50%, asked by carol, approved by alice and applied."
    )
    assert message.buttons == []
    replay = await client.press(ALICE, DEPLOYS, asked.message_id, "fe:ok:1")  # decided already
    assert await callback_answer_text(client, replay) == "This request is no longer valid."
    changes = await opsgate.services.flags.changes("checkout", limit=1)
    assert changes[0].actor == str(ALICE) and "asked by 1003" in changes[0].note

    # Stale: the flag moved after the request; approving it is refused and said so.
    stale = await client.reply_after(CAROL, DEPLOYS, "/flag checkout 80")
    await client.reply_after(CAROL, DEPLOYS, "/flag checkout 10")
    pressed = await client.press_button(ALICE, DEPLOYS, stale.message_id, 1)
    assert await callback_answer_text(client, pressed) == (
        "checkout changed since this was asked: ask again."
    )
    assert await percent(opsgate) == 10

    # Rejected, with the command this time.
    rejected = await client.reply_after(CAROL, DEPLOYS, "/flag checkout 60")
    request_id = int(rejected.text.rsplit("approve ", 1)[1].rstrip(")."))
    said = await client.reply_after(ALICE, DEPLOYS, f"/flag checkout reject {request_id}")
    assert said.text == "✖ The change to checkout was rejected; nothing was changed."
    assert await percent(opsgate) == 10

    # Asked through the API: 202 and a request number, approved in chat.
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {API_TOKEN}"}) as http:
        answer = await http.post(
            f"http://127.0.0.1:{opsgate.http_port}/api/flags/checkout",
            json={"percent": 90, "requested_by": CAROL},
        )
    assert answer.status_code == 202, answer.text
    pending = answer.json()["pending_approval"]
    assert await percent(opsgate) == 10
    done = await client.reply_after(ALICE, DEPLOYS, f"/flag checkout approve {pending}")
    assert done.text == "🚩 checkout changed by alice:\n• rollout: 10% → 90%"
    assert await kinds(opsgate) == [
        "flag.change_requested",
        "flag.change_approved",
        "flag.change_requested",
        "flag.change_stale",
        "flag.change_requested",
        "flag.change_rejected",
        "flag.change_requested",
        "flag.change_approved",
    ]


async def test_a_plan_that_goes_above_the_threshold_starts_once_approved(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    ops_file.write_text(FLAGS + OPS_TEXT)
    opsgate = await start_opsgate()
    asked = await client.reply_after(CAROL, DEPLOYS, "/flag checkout plan 5:1h,25:1h,100")
    assert "plan 5 → 25 → 100 needs a second person" in asked.text
    assert await opsgate.services.plans.current("checkout") is None
    approved = await client.press_button(ALICE, DEPLOYS, asked.message_id, 1)
    assert await callback_answer_text(client, approved) == "Approved: applied."
    plan = await opsgate.services.plans.current("checkout")
    assert plan is not None and plan.steps == (5, 25, 100)
    assert await percent(opsgate) == 5
