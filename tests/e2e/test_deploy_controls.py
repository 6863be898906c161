"""/drill, the Abort button on a running deploy's card, and deploy windows (freezes), through
the real bot, against the real systemd sandbox and a git repository the test creates."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from bot.dev.harness.systemd import SystemdSandbox
from bot.dev.sandbox import SandboxClient, SandboxMessage
from bot.runner import Opsgate
from handlers.buttons import NO_LONGER_VALID
from services.deploy.model import DeploymentKind
from services.deploy.model import DeploymentState as S
from tests.e2e.conftest import (
    ALICE,
    BOB,
    CAROL,
    DEPLOYS,
    StartOpsgate,
    callback_answer_text,
)
from tests.e2e.deploy_app import PEOPLE_AND_CHATS, DeployApp, app_ops_text, installed_app

LONG_WATCH = "watch_s = 30\nwatch_interval_s = 0.2\n"


def ops_text(
    systemd_sandbox: SystemdSandbox,
    app: DeployApp,
    *,
    staging: str = "",
    roles: str = "",
    deploy_extra: str = "watch_s = 0.5\nwatch_interval_s = 0.1\n",
) -> str:
    """The deploy ops text without approval (deploys start at once), with extra lines for
    [environments.staging] and [roles]."""
    text = PEOPLE_AND_CHATS + app_ops_text(
        systemd_sandbox, app, requires_approval=False, deploy_extra=deploy_extra
    )
    text = text.replace("requires_approval = false\n", "requires_approval = false\n" + staging, 1)
    return text.replace("[roles]\n", "[roles]\n" + roles, 1)


@pytest.fixture
async def app(
    systemd_sandbox: SystemdSandbox, tmp_path: Path, ops_file: Path
) -> AsyncIterator[DeployApp]:
    """t-deploy.service in staging (no approval); the repository has v1, v2 and v3."""
    async with installed_app(
        systemd_sandbox, systemd_sandbox.work_dir / f"controls-{tmp_path.name}"
    ) as deployed:
        ops_file.write_text(ops_text(systemd_sandbox, deployed))
        yield deployed


async def card_end(client: SandboxClient, message_id: int, *endings: str) -> SandboxMessage:
    """The card `message_id` once its text holds one of `endings` (its footer)."""

    def ended(messages: list[SandboxMessage]) -> SandboxMessage | None:
        return next(
            (
                m
                for m in messages
                if m.message_id == message_id and any(e in m.text for e in endings)
            ),
            None,
        )

    return await client.wait_for(DEPLOYS, ended, timeout=60)


async def wait_state(opsgate: Opsgate, deployment_id: int, state: S) -> None:
    """Poll the database until the deployment is in `state`; DB states do not touch the chat."""
    deployments = opsgate.services.deployments
    deadline = asyncio.get_running_loop().time() + 30
    while (seen := await deployments.get(deployment_id)).state is not state:
        # A finished deployment will never get there: fail now, not at the deadline.
        assert not seen.finished, f"#{deployment_id} ended {seen.state}: {seen.error}"
        assert asyncio.get_running_loop().time() < deadline, f"#{deployment_id}: {seen.state}"
        await asyncio.sleep(0.05)


async def served_version(app: DeployApp) -> str:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"http://127.0.0.1:{app.port}/")
    return str(response.json()["version"])


async def deploy_and_wait(client: SandboxClient, user: int, text: str) -> SandboxMessage:
    """A deploy without approval: its card is the reply; wait for the footer."""
    card = await client.reply_after(user, DEPLOYS, text, timeout=30)
    endings = ("app runs ", "Rolled back", "so did", "Nothing was switched")
    return await card_end(client, card.message_id, *endings)


def card_id(card: SandboxMessage) -> int:
    match = re.search(r"#(\d+) ", card.text)
    assert match is not None, card.text
    return int(match.group(1))


async def test_drill_goes_back_and_forward_again(
    app: DeployApp, start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    opsgate = await start_opsgate()
    refused = await client.reply_after(BOB, DEPLOYS, "/drill app")
    assert refused.text.startswith("⛔ /drill needs the role sre."), refused.text
    nothing = await client.reply_after(CAROL, DEPLOYS, "/drill app")
    assert nothing.text == "⛔ app has no current release to drill with"

    v1 = await deploy_and_wait(client, CAROL, "/deploy app v1")
    assert "✅ app runs v1." in v1.text
    # One release only: nothing to go back to, and no drill row is left behind.
    alone = await client.reply_after(CAROL, DEPLOYS, "/drill app")
    assert alone.text == "⛔ app has no earlier good release to drill with"
    v2 = await deploy_and_wait(client, CAROL, "/deploy app v2")
    assert "✅ app runs v2 (was v1)." in v2.text
    assert [d.kind for d in await opsgate.services.deployments.history("app")] == [
        DeploymentKind.DEPLOY,
        DeploymentKind.DEPLOY,
    ]

    drill = await client.reply_after(CAROL, DEPLOYS, "/drill app")
    assert drill.text == "🧯 #3 Rollback drill: app v2 → v1 → v2 in staging"
    done = await card_end(client, drill.message_id, "Drill passed", "Drill failed", "did not")
    footer = done.text.splitlines()[-1]
    assert re.fullmatch(
        r"🧯 Drill passed: app was healthy on v1 \d+\.\d\d s after the switch \(time to"
        r" recover\), and runs v2 again \(\d+\.\d\d s\)\.",
        footer,
    ), done.text
    assert done.buttons == []  # a drill offers no Roll back
    deployment = await opsgate.services.deployments.get(card_id(drill))
    assert (deployment.kind, deployment.state) == (DeploymentKind.DRILL, S.SUCCEEDED)
    assert deployment.previous_version == "v1"
    assert (app.root / "current").resolve().name == "v2"
    assert await served_version(app) == "v2"


async def test_drill_refused_in_production(
    app: DeployApp,
    start_opsgate: StartOpsgate,
    client: SandboxClient,
    ops_file: Path,
    systemd_sandbox: SystemdSandbox,
) -> None:
    # Marked production by the flag, whatever its name.
    ops_file.write_text(ops_text(systemd_sandbox, app, staging="production = true\n"))
    opsgate = await start_opsgate()
    flagged = await client.reply_after(CAROL, DEPLOYS, "/drill app")
    assert flagged.text == "⛔ Drills run outside production; app is in staging. Nothing was done."

    # An environment called production is production without the flag.
    text = ops_text(systemd_sandbox, app).replace(
        'environment = "staging"', 'environment = "production"'
    )
    ops_file.write_text(text)
    reloaded = await client.reply_after(ALICE, DEPLOYS, "/reload")
    assert reloaded.text.startswith("✅ Reloaded"), reloaded.text
    named = await client.reply_after(CAROL, DEPLOYS, "/drill app")
    assert named.text == "⛔ Drills run outside production; app is in production. Nothing was done."
    assert await opsgate.services.deployments.history("app") == []


async def test_abort_while_watching_rolls_back_without_marking_bad(
    app: DeployApp,
    start_opsgate: StartOpsgate,
    client: SandboxClient,
    ops_file: Path,
    systemd_sandbox: SystemdSandbox,
) -> None:
    opsgate = await start_opsgate()
    v1 = await deploy_and_wait(client, CAROL, "/deploy app v1")
    assert "✅ app runs v1." in v1.text
    # v1 watched briefly; v2 gets a long watch window to press Abort in.
    ops_file.write_text(ops_text(systemd_sandbox, app, deploy_extra=LONG_WATCH))
    reloaded = await client.reply_after(ALICE, DEPLOYS, "/reload")
    assert reloaded.text.startswith("✅ Reloaded"), reloaded.text

    card = await client.reply_after(CAROL, DEPLOYS, "/deploy app v2")
    deployment_id = card_id(card)
    await wait_state(opsgate, deployment_id, S.WATCHING)
    [running] = [m for m in await client.messages(DEPLOYS) if m.message_id == card.message_id]
    assert [(b.text, b.data) for row in running.buttons for b in row] == [
        ("⏹ Abort", f"ab:go:{deployment_id}")
    ]

    refused = await client.press_button(BOB, DEPLOYS, card.message_id, 1)
    assert await callback_answer_text(client, refused) == "This needs the role sre."
    # The gate answered without running the handler: the deploy still watches.
    assert (await opsgate.services.deployments.get(deployment_id)).state is S.WATCHING

    pressed = await client.press_button(CAROL, DEPLOYS, card.message_id, 1)
    answer = await callback_answer_text(client, pressed)
    assert answer == f"Aborting #{deployment_id}: rolling back…"
    done = await card_end(client, card.message_id, "Rolled back", "runs v2", "so did")
    assert (
        "⏹ Stopped: Aborted by carol while watching.\nRolled back: app runs v1 again." in done.text
    ), done.text
    assert "marked bad" not in done.text
    assert done.buttons == []
    deployment = await opsgate.services.deployments.get(deployment_id)
    assert deployment.state is S.ROLLED_BACK
    assert deployment.error is not None and "Aborted by carol while watching" in deployment.error
    assert await opsgate.services.releases.layout("app").bad_reason("v2") is None
    assert (app.root / "current").resolve().name == "v1"
    assert await served_version(app) == "v1"

    # Finished deploys, rolled back or succeeded, have nothing left to abort.
    for message_id, finished_id in ((card.message_id, deployment_id), (v1.message_id, 1)):
        late = await client.press(CAROL, DEPLOYS, message_id, f"ab:go:{finished_id}")
        assert await callback_answer_text(client, late) == NO_LONGER_VALID
    assert (await opsgate.services.deployments.get(1)).state is S.SUCCEEDED


async def test_freeze_holds_back_deploys_but_not_an_emergency(
    app: DeployApp,
    start_opsgate: StartOpsgate,
    client: SandboxClient,
    ops_file: Path,
    systemd_sandbox: SystemdSandbox,
) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start, end = now - timedelta(days=1), now + timedelta(days=1)
    span = f"start = {start.isoformat()}, end = {end.isoformat()}"
    freeze = f'freezes = [{{ {span}, reason = "quarter close" }}]\n'
    ops_file.write_text(ops_text(systemd_sandbox, app, staging=freeze, roles="oncall = [1001]\n"))
    opsgate = await start_opsgate()
    frozen = f"staging is frozen until {end:%Y-%m-%d %H:%M} UTC: quarter close"

    refused = await client.reply_after(CAROL, DEPLOYS, "/deploy app v2")
    assert refused.text.startswith(f"⛔ {frozen}. Nothing was done."), refused.text
    assert await opsgate.services.deployments.history("app") == []
    dry = await client.reply_after(CAROL, DEPLOYS, "/deploy app v2 --dry-run")
    assert dry.text.startswith("🧪 Dry run: deploy app v2 to staging"), dry.text
    assert f"⛔ It would be refused now: {frozen}." in dry.text
    not_oncall = await client.reply_after(CAROL, DEPLOYS, "/deploy app v2 --emergency")
    assert not_oncall.text.startswith("⛔ That /deploy change needs the role oncall.")
    assert await opsgate.services.deployments.history("app") == []

    done = await deploy_and_wait(client, ALICE, "/deploy app v2 --emergency")
    assert "✅ app runs v2." in done.text, done.text
    assert "emergency: windows and freezes do not apply" in done.text
    [deployment] = await opsgate.services.deployments.history("app")
    assert deployment.emergency and deployment.state is S.SUCCEEDED
    assert await served_version(app) == "v2"
