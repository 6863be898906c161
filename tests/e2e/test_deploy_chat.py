"""/deploy, the approval button, automatic rollback, /rollback, /releases and /history, through
the real bot, against the real systemd sandbox and a git repository the test creates."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.dev.harness.systemd import SystemdSandbox
from bot.dev.sandbox import SandboxClient, SandboxMessage
from bot.runner import Opsgate
from services.control.systemd import SystemdManager
from services.deploy.model import DeploymentState as S
from services.releases.build import GitSource
from tests.e2e.conftest import (
    ALICE,
    APPROVALS,
    BOB,
    CAROL,
    DEPLOYS,
    StartOpsgate,
    callback_answer_text,
)
from tests.e2e.deploy_app import PEOPLE_AND_CHATS, app_ops_text, installed_app


@pytest.fixture
async def app(
    systemd_sandbox: SystemdSandbox, tmp_path: Path, ops_file: Path
) -> AsyncIterator[tuple[Path, int]]:
    """t-deploy.service runs ROOT/current/app.py; the repository has v1, v2 and v3 (unhealthy)."""
    async with installed_app(
        systemd_sandbox, systemd_sandbox.work_dir / f"deploy-{tmp_path.name}"
    ) as deployed:
        ops_file.write_text(PEOPLE_AND_CHATS + app_ops_text(systemd_sandbox, deployed))
        yield deployed.root, deployed.port


def card(messages: list[SandboxMessage], marker: str) -> SandboxMessage | None:
    return next((m for m in reversed(messages) if m.from_bot and marker in m.text), None)


async def signoff_message(client: SandboxClient, deployment: str) -> SandboxMessage:
    """The approval message of deployment `deployment` ("#3") in the approvals chat."""
    return await client.wait_for(
        APPROVALS,
        lambda ms: next((m for m in ms if f"Deploy {deployment} " in m.text and m.buttons), None),
    )


async def press_approve(client: SandboxClient, user: int, deployment: str) -> str | None:
    """Press "Approve as admin" (the plain policy's only role) as `user`; the answer."""
    message = await signoff_message(client, deployment)
    pressed = await client.press_button(user, APPROVALS, message.message_id, 1)
    return await callback_answer_text(client, pressed)


async def deploy_and_wait(
    client: SandboxClient, user: int, text: str, approver: int | None = None
) -> SandboxMessage:
    reply = await client.reply_after(user, DEPLOYS, text, timeout=30)
    if approver is not None:
        assert "waits for sign-off in the approvals chat: admin ×1." in reply.text, reply.text
        answer = await press_approve(client, approver, reply.text.split()[1])
        assert answer == "Approved: signed off."
    message_id = reply.message_id

    def finished(messages: list[SandboxMessage]) -> SandboxMessage | None:
        done = [m for m in messages if m.from_bot and m.message_id >= message_id]
        return next(
            (m for m in done if any(s in m.text for s in ("runs ", "failed", "Nothing was"))),
            None,
        )

    return await client.wait_for(DEPLOYS, finished, timeout=90)


async def test_deploy_rollback_story(
    app: tuple[Path, int], start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    root, _ = app
    await start_opsgate()
    bad = await client.reply_after(CAROL, DEPLOYS, "/deploy app ../v1")
    assert bad.text.startswith("⚠️") and "Nothing was done" in bad.text
    dry = await client.reply_after(CAROL, DEPLOYS, "/deploy app v1 --dry-run")
    assert dry.text.startswith("🧪 Dry run: deploy app v1 to staging")
    assert not (root / "current").exists()

    own = await client.reply_after(CAROL, DEPLOYS, "/deploy app v1")
    assert own.text == "🕐 #1 app v1 waits for sign-off in the approvals chat: admin ×1."
    assert await press_approve(client, CAROL, "#1") == (
        "You asked for this deployment: someone else approves it."
    )
    assert await press_approve(client, BOB, "#1") == "This needs the role admin."
    assert await press_approve(client, ALICE, "#1") == "Approved: signed off."
    v1 = await client.wait_for(DEPLOYS, lambda ms: card(ms, "runs v1"), timeout=90)
    assert "✅ app runs v1." in v1.text

    v2 = await deploy_and_wait(client, CAROL, "/deploy app v2", approver=ALICE)
    assert "✅ app runs v2 (was v1)." in v2.text
    assert [b.text for row in v2.buttons for b in row] == ["↩️ Roll back"]

    v3 = await deploy_and_wait(client, CAROL, "/deploy app v3", approver=ALICE)
    assert "v3 failed" in v3.text
    assert "Rolled back: app runs v2 again; v3 is marked bad." in v3.text
    assert (root / "current").resolve().name == "v2"

    back = await client.reply_after(CAROL, DEPLOYS, "/rollback app v3")
    assert "marked bad" in back.text
    done = await deploy_and_wait(client, CAROL, "/rollback app v1")
    assert "✅ app runs v1 (was v2)." in done.text
    assert (root / "current").resolve().name == "v1"

    releases = await client.reply_after(BOB, DEPLOYS, "/releases app")
    assert "v1" in releases.text and "current" in releases.text and "bad" in releases.text
    history = await client.reply_after(BOB, DEPLOYS, "/history app")
    lines = history.text.splitlines()[1:]
    assert [line.split()[0] for line in lines[:4]] == ["✅", "↩️", "✅", "✅"]


async def test_bad_cancel_and_halt(
    app: tuple[Path, int], start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    opsgate = await start_opsgate()
    first = await deploy_and_wait(client, CAROL, "/deploy app v1", approver=ALICE)
    assert "✅ app runs v1." in first.text
    marked = await client.reply_after(CAROL, DEPLOYS, "/bad app v1 leaks memory")
    assert marked.text == "🚫 app v1 is marked bad: leaks memory. /rollback will not land on it."
    assert (await client.reply_after(CAROL, DEPLOYS, "/bad app v9")).text.startswith(
        "⛔ app has no"
    )
    assert (await client.reply_after(CAROL, DEPLOYS, "/bad nope v1")).text.startswith(
        "Unknown service"
    )

    waiting = await client.reply_after(CAROL, DEPLOYS, "/deploy app v2")
    assert "waits for sign-off" in waiting.text
    signoff = await signoff_message(client, "#2")
    approve = signoff.buttons[0][0].data
    assert approve is not None
    refused = await client.reply_after(BOB, DEPLOYS, "/cancel 2")
    assert refused.text.startswith("⛔ /cancel needs the role sre.")
    halted = await client.reply_after(CAROL, DEPLOYS, "/halt database migration went wrong")
    assert halted.text.splitlines() == [
        "🛑 HALT by carol: database migration went wrong",
        "Cancelled: #2",
        "Already switched, finishing or rolling back: none",
        "Plans paused: none",
        "Locked: production, staging",
        "Nothing ships until /unlock ENV.",
    ]
    again = await client.reply_after(CAROL, DEPLOYS, "/deploy app v2")
    assert again.text.startswith("⛔ staging is locked by carol") and "halt: database" in again.text
    # The sign-off ended with the deploy: its message says so, and its old button is stale.
    ended = await client.wait_for(
        APPROVALS,
        lambda ms: next(
            (m for m in ms if m.message_id == signoff.message_id and not m.buttons), None
        ),
    )
    assert "✖ Ended by carol: halt: database migration went wrong." in ended.text
    pressed = await client.press(ALICE, APPROVALS, signoff.message_id, approve)
    assert await callback_answer_text(client, pressed) == "This button is no longer valid."
    assert (await client.reply_after(CAROL, DEPLOYS, "/cancel 2")).text.startswith("⛔")
    kinds = [e.kind for e in await opsgate.services.audit.events(kind="opsgate.halt")]
    assert kinds == ["opsgate.halt"]


async def crash_mid_verify(opsgate: Opsgate, systemd_sandbox: SystemdSandbox, version: str) -> int:
    """What a run that died while verifying leaves behind: switched, restarted, in flight."""
    services = opsgate.services
    deploy = services.ops.services["app"].deploy
    assert deploy is not None and deploy.git is not None
    layout = services.releases.layout("app")
    deployment = await services.deployments.request("app", "staging", version, "1003")
    previous = await layout.current()
    for state in (S.APPROVED, S.PRE_CHECKS, S.BUILDING):
        await services.deployments.advance(deployment.id, state, "opsgate")
    await layout.prepare(version, GitSource(deploy.git), [])
    assert previous is not None
    await services.deployments.set_previous_version(deployment.id, previous)
    await services.deployments.advance(deployment.id, S.SWITCHING, "opsgate")
    await layout.switch(version)
    await SystemdManager(systemd_sandbox.host).restart("t-deploy.service")
    await services.deployments.advance(deployment.id, S.VERIFYING, "opsgate")
    await opsgate.stop()
    return deployment.id


async def test_restart_mid_verify_finishes_or_rolls_back(
    app: tuple[Path, int],
    start_opsgate: StartOpsgate,
    client: SandboxClient,
    systemd_sandbox: SystemdSandbox,
) -> None:
    root, _ = app
    opsgate = await start_opsgate()
    await deploy_and_wait(client, CAROL, "/deploy app v1", approver=ALICE)

    good = await crash_mid_verify(opsgate, systemd_sandbox, "v2")
    opsgate = await start_opsgate()
    resumed = await client.wait_for(DEPLOYS, lambda ms: card(ms, f"#{good} Resuming app v2"))
    done = await client.wait_for(
        DEPLOYS, lambda ms: card(ms, "✅ app runs v2 (was v1).") if resumed else None, timeout=60
    )
    assert "release in place" in done.text
    assert (await opsgate.services.deployments.get(good)).state is S.SUCCEEDED

    bad = await crash_mid_verify(opsgate, systemd_sandbox, "v3")
    opsgate = await start_opsgate()
    back = await client.wait_for(DEPLOYS, lambda ms: card(ms, "v3 is marked bad"), timeout=60)
    assert f"#{bad} Resuming app v3" in back.text
    assert "Rolled back: app runs v2 again" in back.text
    assert (root / "current").resolve().name == "v2"
    assert (await opsgate.services.deployments.get(bad)).state is S.ROLLED_BACK


async def test_emergency_deploy_skips_approval_and_asks_after_the_fact(
    app: tuple[Path, int], start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    ops_file.write_text(ops_file.read_text().replace("[roles]\n", "[roles]\noncall = [1001]\n", 1))
    opsgate = await start_opsgate()
    refused = await client.reply_after(CAROL, DEPLOYS, "/deploy app v1 --emergency")
    assert refused.text.startswith("⛔ That /deploy change needs the role oncall.")
    done = await deploy_and_wait(client, ALICE, "/deploy app v1 --emergency")
    assert "✅ app runs v1." in done.text
    notice = await client.wait_for(
        APPROVALS, lambda ms: next((m for m in ms if "Emergency deploy" in m.text), None)
    )
    assert notice.text.startswith("🚨 Emergency deploy #1: app v1 to staging by alice")
    [deployment] = await opsgate.services.deployments.history("app")
    assert deployment.emergency


async def rollback_timed(opsgate: Opsgate, client: SandboxClient, version: str) -> float:
    """/rollback app VERSION; seconds from the request to succeeded, by the events' times."""
    before = {d.id for d in await opsgate.services.deployments.history("app")}
    await client.send(CAROL, DEPLOYS, f"/rollback app {version}")
    deployments = opsgate.services.deployments
    for _ in range(300):
        new = [d for d in await deployments.history("app") if d.id not in before]
        if new and new[0].finished:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the rollback to {version} did not finish in 15 s")
    assert new[0].state is S.SUCCEEDED, new[0]
    events = {e.kind: e.at for e in await deployments.events(new[0].id)}
    return (events["deploy.succeeded"] - events["deploy.requested"]).total_seconds()


async def test_a_rollback_never_waits_for_a_slow_chat(
    app: tuple[Path, int], start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    ops_file.write_text(ops_file.read_text().replace("requires_approval = true", "", 1))
    opsgate = await start_opsgate()
    for version in ("v1", "v2"):
        assert (
            f"runs {version}"
            in (await deploy_and_wait(client, CAROL, f"/deploy app {version}")).text
        )
    quiet_s = await rollback_timed(opsgate, client, "v1")
    await client.wait_for(DEPLOYS, lambda ms: card(ms, "✅ app runs v1 (was v2)"), timeout=30)
    # Every Bot API answer now takes 4 s: a card post and each edit alone would outlast the
    # whole rollback, were the pipeline to wait for them.
    await client.set_slow(4)
    try:
        slow_s = await rollback_timed(opsgate, client, "v2")
    finally:
        await client.set_slow(0)
    assert slow_s < quiet_s + 1.0, (quiet_s, slow_s)
    # The card catches up once the chat does.
    done = await client.wait_for(
        DEPLOYS, lambda ms: card(ms, "✅ app runs v2 (was v1)"), timeout=60
    )
    assert "restart" in done.text
