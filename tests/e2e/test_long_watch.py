"""A long watch through the real bot on the systemd sandbox: it goes on after the deploy
succeeded, survives a restart of opsgate, ends clean, or rolls back on a breach."""

from __future__ import annotations

from pathlib import Path

from bot.dev.harness.systemd import SystemdSandbox
from bot.dev.sandbox import SandboxClient, SandboxMessage
from services.deploy.model import DeploymentState as S
from tests.e2e.conftest import CAROL, DEPLOYS, StartOpsgate
from tests.e2e.deploy_app import PEOPLE_AND_CHATS, DeployApp, app_ops_text, installed_app

# A threshold of 1 s makes these watches long ones (they are read at most once a second).
LONG = "background_watch_after_s = 1\nwatch_interval_s = 0.2\nmax_failed_checks = 2\n"


def bot_says(marker: str, after: int = 0):  # type: ignore[no-untyped-def]
    def find(messages: list[SandboxMessage]) -> SandboxMessage | None:
        return next(
            (m for m in messages if m.from_bot and m.message_id > after and marker in m.text),
            None,
        )

    return find


async def deploy(client: SandboxClient, version: str) -> SandboxMessage:
    asked = await client.reply_after(CAROL, DEPLOYS, f"/deploy app {version}", timeout=30)
    return await client.wait_for(
        DEPLOYS, bot_says(f"app runs {version}", asked.message_id - 1), timeout=90
    )


def write_ops(ops_file: Path, sandbox: SystemdSandbox, app: DeployApp, watch_s: float) -> None:
    extra = f"watch_s = {watch_s}\n{LONG}"
    text = app_ops_text(sandbox, app, requires_approval=False, deploy_extra=extra)
    ops_file.write_text(PEOPLE_AND_CHATS + text)


async def test_a_long_watch_ends_clean_in_the_deploys_chat(
    systemd_sandbox: SystemdSandbox,
    tmp_path: Path,
    ops_file: Path,
    start_opsgate: StartOpsgate,
    client: SandboxClient,
) -> None:
    base = systemd_sandbox.work_dir / f"long-{tmp_path.name}"
    async with installed_app(systemd_sandbox, base) as app:
        write_ops(ops_file, systemd_sandbox, app, watch_s=2)
        opsgate = await start_opsgate()
        card = await deploy(client, "v1")
        assert "in the background" in card.text
        assert (await opsgate.services.deployments.get(1)).state is S.SUCCEEDED
        ended = await client.wait_for(DEPLOYS, bot_says("ended clean"), timeout=60)
        assert ended.text.startswith("✅ The 2s watch of app v1 (#1) ended clean: no breach in")
        row = await opsgate.services.long_watches.get(1)
        assert row is not None and row.state == "clean" and row.readings >= 1


async def test_a_long_watch_survives_a_restart_and_rolls_back_on_a_breach(
    systemd_sandbox: SystemdSandbox,
    tmp_path: Path,
    ops_file: Path,
    start_opsgate: StartOpsgate,
    client: SandboxClient,
) -> None:
    base = systemd_sandbox.work_dir / f"long-{tmp_path.name}"
    async with installed_app(systemd_sandbox, base) as app:
        write_ops(ops_file, systemd_sandbox, app, watch_s=3600)
        opsgate = await start_opsgate()
        await deploy(client, "v1")
        await deploy(client, "v2")
        services = opsgate.services
        assert (await services.deployments.get(2)).state is S.SUCCEEDED
        await client.wait_for(DEPLOYS, bot_says("(#1) ended (superseded)"), timeout=30)
        watching = await services.long_watches.watching()
        assert [(w.deployment_id, w.previous_version) for w in watching] == [(2, "v1")]
        await opsgate.stop()

        (app.root / "broken-v2").write_text("")  # v2 goes bad while opsgate is down
        opsgate = await start_opsgate()  # the same database: the watch resumes from its row
        breached = await client.wait_for(DEPLOYS, bot_says("was breached"), timeout=60)
        assert "The 1h 0m watch of app v2 (#2) was breached: app failed its health check" in (
            breached.text
        )
        assert "Rolling back to v1 (#3)." in breached.text
        await client.wait_for(DEPLOYS, bot_says("app runs v1 (was v2)"), timeout=90)
        assert (app.root / "current").resolve().name == "v1"
        services = opsgate.services
        row = await services.long_watches.get(2)
        assert row is not None and row.state == "breached" and row.rollback_id == 3
        assert (await services.deployments.get(3)).state is S.SUCCEEDED
        assert await services.releases.layouts("app", "staging")["sandbox"].is_bad("v2")
