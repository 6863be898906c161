"""A service on a fleet, through the real bot: staging then production with promotion, rolling
deploys in batches, a failing host, /halt, fleet rollback and bad input.

The hosts are real: each its own systemd with its own sshd on a loopback address of its own
(bot/dev/harness/fleet.py); opsgate reaches them over ssh as the ops file says, and every
check of what runs is made on the host itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bot.dev.harness.fleet import Fleet, FleetApp, install_app_unit, remove_app_unit
from bot.dev.harness.gitrepo import AppRepo, make_app_repo
from bot.dev.sandbox import SandboxClient, SandboxMessage
from bot.runner import Opsgate
from services.control.systemd import SystemdManager
from services.deploy.model import Deployment
from services.releases.layout import ReleaseLayout
from tests.e2e.conftest import CAROL, DEPLOYS, StartOpsgate
from tests.e2e.deploy_app import PEOPLE_AND_CHATS
from tests.e2e.test_api import API_TOKEN, cli

UNIT = "t-fleet.service"
PRODUCTION = ["h1", "h2", "h3", "h4"]
STAGING = ["h5"]


@dataclass(frozen=True)
class FleetSetup:
    fleet: Fleet
    app: FleetApp
    repo: AppRepo
    ops_file: Path

    def write_ops(
        self, *, rollout: str = "batch = 2", production: str = "", within_s: float = 10
    ) -> None:
        """The ops file: staging on h5, production on h1-h4 (extra keys in `production`);
        `within_s`: how long a host has to answer healthy."""
        self.ops_file.write_text(
            PEOPLE_AND_CHATS
            + """
[environments.staging]
[environments.production]
[environments.qa]
"""
            + self.fleet.ops_hosts_toml()
            + f"""
[services.app]
unit = "{self.app.unit}"
[services.app.health]
url = "http://{{address}}:{self.app.port}/health"
consecutive = 1
within_s = {within_s:g}
interval_s = 0.1
[services.app.deploy]
root = "{self.app.root}"
git = "{self.repo.url}"
keep = 3
watch_s = 0
[services.app.rollout]
{rollout}
[services.app.environments.staging]
hosts = {STAGING!r}
[services.app.environments.production]
hosts = {PRODUCTION!r}
{production}
""".replace("'", '"')
        )

    async def current(self, names: list[str]) -> dict[str, str | None]:
        """What `current` points at on each host, read over ssh as opsgate reads it."""
        hosts = self.fleet.registry()
        try:
            found = await asyncio.gather(
                *(ReleaseLayout(hosts.get(n), self.app.root).current() for n in names)
            )
        finally:
            await hosts.aclose()
        return dict(zip(names, found, strict=True))

    async def serving(self, names: list[str]) -> dict[str, str]:
        """The version each host's app answers with on its own address."""
        async with httpx.AsyncClient(timeout=5) as http:
            answers = await asyncio.gather(
                *(http.get(self.fleet.host(n).url(self.app.port)) for n in names)
            )
        return {n: a.json()["version"] for n, a in zip(names, answers, strict=True)}

    async def main_pids(self, names: list[str]) -> dict[str, int | None]:
        async def pid(name: str) -> int | None:
            manager = SystemdManager(self.fleet.host(name).sandbox.host)
            return (await manager.show(UNIT)).main_pid

        return dict(zip(names, await asyncio.gather(*(pid(n) for n in names)), strict=True))


@pytest.fixture
async def setup(fleet: Fleet, ops_file: Path, tmp_path: Path) -> AsyncIterator[FleetSetup]:
    if len(fleet.hosts) < 5:
        pytest.fail("the fleet tests need five hosts (staging h5, production h1-h4)")
    repo = make_app_repo(fleet.shared_dir / f"repo-{tmp_path.name}")
    app = await install_app_unit(fleet, UNIT, root=f"/srv/{tmp_path.name}", port=fleet.free_port())
    try:
        yield FleetSetup(fleet, app, repo, ops_file)
    finally:
        await remove_app_unit(fleet, app)


async def run_and_wait(client: SandboxClient, text: str, timeout: float = 120) -> SandboxMessage:
    """Send `text` as carol (admin, no sign-off in these environments); the finished card."""
    reply = await client.reply_after(CAROL, DEPLOYS, text, timeout=30)
    first = reply.message_id

    def finished(messages: list[SandboxMessage]) -> SandboxMessage | None:
        cards = [m for m in messages if m.from_bot and m.message_id >= first]
        # The card's last line once it is finished (a step may say "failed" before that).
        ends = ("✅ app runs", "Rolled back:", "Nothing was", "so did the rollback", "⛔")
        return next((m for m in cards if any(e in m.text for e in ends)), None)

    return await client.wait_for(DEPLOYS, finished, timeout=timeout)


async def test_staging_then_production_with_promotion_enforced(
    setup: FleetSetup, start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    setup.write_ops(production='promote_from = "staging"')
    await start_opsgate()

    refused = await client.reply_after(CAROL, DEPLOYS, "/deploy app v1 to production")
    assert refused.text == (
        "⛔ app v1 has not run in staging; production takes only versions that succeeded"
        " there (deploy it there first: /deploy app v1 to staging)."
    )
    nothing = await client.reply_after(CAROL, DEPLOYS, "/promote app")
    assert nothing.text.startswith("⛔ app in staging does not run one version on every host")
    assert await setup.current(PRODUCTION + STAGING) == dict.fromkeys(PRODUCTION + STAGING)

    staged = await run_and_wait(client, "/deploy app v1")  # staging: the first environment
    assert "✅ app runs v1." in staged.text, staged.text
    assert await setup.current(STAGING) == {"h5": "v1"}
    assert await setup.current(PRODUCTION) == dict.fromkeys(PRODUCTION)

    promoted = await run_and_wait(client, "/promote app")
    assert "to production" in promoted.text
    assert "batch 1/2: h1 h2" in promoted.text and "batch 2/2: h3 h4" in promoted.text
    assert "✅ h1 h2 h3 h4" in promoted.text
    assert "✅ app runs v1." in promoted.text, promoted.text
    assert await setup.current(PRODUCTION) == dict.fromkeys(PRODUCTION, "v1")
    assert await setup.serving(PRODUCTION + STAGING) == dict.fromkeys(PRODUCTION + STAGING, "v1")

    services = await client.reply_after(CAROL, DEPLOYS, "/services")
    assert "app (production): v1 on 4/4 hosts, all healthy" in services.text, services.text
    assert "app (staging) active/running" in services.text
    releases = await client.reply_after(CAROL, DEPLOYS, "/releases app production")
    assert "v1 on 4/4 hosts" in releases.text
    history = await client.reply_after(CAROL, DEPLOYS, "/history app")
    lines = history.text.splitlines()
    assert "→ production (succeeded) · 4/4 hosts healthy" in lines[1], lines
    assert "→ staging (succeeded)" in lines[2], lines


async def test_a_failing_host_stops_the_rollout_and_the_switched_hosts_go_back(
    setup: FleetSetup, start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    setup.write_ops(rollout="batch = 1")
    await start_opsgate()
    first = await run_and_wait(client, "/deploy app v1 to production")
    assert "✅ app runs v1." in first.text, first.text
    before = await setup.main_pids(PRODUCTION)

    setup.app.broken_marker(setup.fleet.host("h3"), "v2").write_text("broken on h3 only\n")
    failed = await run_and_wait(client, "/deploy app v2 to production")
    assert "v2 failed" in failed.text, failed.text
    assert "h3: app was not healthy" in failed.text
    assert "Stopped the rollout at batch 3 of 4" in failed.text
    assert "Rolled back: app runs v1 again; v2 is marked bad." in failed.text

    # Checked on each host: the three that switched run v1 again; h4 was never touched.
    assert await setup.current(PRODUCTION) == dict.fromkeys(PRODUCTION, "v1")
    assert await setup.serving(PRODUCTION) == dict.fromkeys(PRODUCTION, "v1")
    after = await setup.main_pids(PRODUCTION)
    assert after["h4"] == before["h4"]
    assert all(after[h] != before[h] for h in ("h1", "h2", "h3"))
    history = await client.reply_after(CAROL, DEPLOYS, "/history app")
    assert "(rolled_back) · ⏪ h1 h2 h3 · ⏳ 1 more" in history.text, history.text


async def test_halt_stops_a_rollout_between_hosts(
    setup: FleetSetup, start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    setup.write_ops(rollout="batch = 4")
    await start_opsgate()
    assert "✅ app runs v1." in (await run_and_wait(client, "/deploy app v1 to production")).text
    before = await setup.main_pids(PRODUCTION)
    setup.write_ops(rollout="batch = 1\npause_s = 30")
    reloaded = await client.reply_after(CAROL, DEPLOYS, "/reload")
    assert "reloaded" in reloaded.text.lower(), reloaded.text

    reply = await client.reply_after(CAROL, DEPLOYS, "/deploy app v2 to production", timeout=30)
    await client.wait_for(
        DEPLOYS,
        lambda ms: next(
            (m for m in ms if m.message_id >= reply.message_id and "✅ h1 · ⏳ 3 more" in m.text),
            None,
        ),
        timeout=60,
    )
    halted = await client.reply_after(CAROL, DEPLOYS, "/halt bad numbers on h1")
    assert "Halted" in halted.text or "halt" in halted.text.lower(), halted.text
    card = await client.wait_for(
        DEPLOYS,
        lambda ms: next(
            (m for m in ms if m.message_id >= reply.message_id and "Stopped" in m.text), None
        ),
        timeout=60,
    )
    assert "Halted by carol between hosts" in card.text, card.text
    assert "Rolled back: app runs v1 again." in card.text
    assert await setup.current(PRODUCTION) == dict.fromkeys(PRODUCTION, "v1")
    after = await setup.main_pids(PRODUCTION)
    assert after["h1"] != before["h1"]  # switched, then back
    assert {h: after[h] for h in PRODUCTION[1:]} == {h: before[h] for h in PRODUCTION[1:]}


async def test_fleet_rollback_goes_back_on_every_host_at_once(
    setup: FleetSetup, start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    setup.write_ops(rollout="batch = 4\nparallel = 4")
    await start_opsgate()
    assert "✅ app runs v1." in (await run_and_wait(client, "/deploy app v1 to production")).text
    v2 = await run_and_wait(client, "/deploy app v2 to production")
    assert "✅ app runs v2 (was v1)." in v2.text, v2.text
    assert await setup.serving(PRODUCTION) == dict.fromkeys(PRODUCTION, "v2")

    back = await run_and_wait(client, "/rollback app in production")
    assert "✅ app runs v1 (was v2)." in back.text, back.text
    assert "switch 4 host(s) to v1" in back.text
    assert await setup.current(PRODUCTION) == dict.fromkeys(PRODUCTION, "v1")
    assert await setup.serving(PRODUCTION) == dict.fromkeys(PRODUCTION, "v1")
    assert await setup.current(STAGING) == {"h5": None}  # another environment: untouched


async def test_bad_input_gets_a_clear_answer_and_changes_nothing(
    setup: FleetSetup, start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    setup.write_ops(production='promote_from = "staging"')
    opsgate = await start_opsgate()
    answers = {
        "/deploy app v1 to nowhere": "⛔ app has no environment 'nowhere' (it has: staging,"
        " production).",
        "/deploy app v1 to qa": "⛔ app has no environment 'qa' (it has: staging, production).",
        "/deploy app v1 to": "Usage: /deploy SERVICE VERSION [to ENVIRONMENT] [--dry-run |"
        " --emergency]",
        "/deploy app v1 to Prod;rm": "Usage: /deploy SERVICE VERSION [to ENVIRONMENT] [--dry-run |"
        " --emergency]",
        "/rollback app in nowhere": "⛔ app has no environment 'nowhere' (it has: staging,"
        " production).",
        "/promote app from production": "⛔ No environment of app is promoted from production."
        " Nothing was done.",
        "/deploy app v9 to production": "⛔ app v9 has not run in staging; production takes only"
        " versions that succeeded there (deploy it there first: /deploy app v9 to staging).",
    }
    for text, expected in answers.items():
        reply = await client.reply_after(CAROL, DEPLOYS, text)
        assert reply.text == expected, (text, reply.text)
    assert await opsgate.services.deployments.history() == []
    assert await setup.current(PRODUCTION + STAGING) == dict.fromkeys(PRODUCTION + STAGING)


async def test_the_api_and_the_cli_take_the_environment_and_show_every_host(
    setup: FleetSetup, start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    setup.write_ops(rollout="batch = 2", production='promote_from = "staging"')
    opsgate = await start_opsgate(api_token=API_TOKEN)
    base = f"http://127.0.0.1:{opsgate.http_port}"
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as api:
        refused = await api.post(
            "/api/deployments",
            json={"service": "app", "version": "v1", "requested_by": CAROL, "environment": "qa"},
        )
        assert refused.status_code == 404, refused.text
        assert "app has no environment 'qa'" in refused.json()["error"]
        not_promoted = await api.post(
            "/api/deployments",
            json={"service": "app", "version": "v1", "requested_by": CAROL,
                  "environment": "production"},
        )  # fmt: skip
        assert not_promoted.status_code == 409, not_promoted.text
        assert "has not run in staging" in not_promoted.json()["error"]

        ran = await cli(opsgate, "deploy", "app", "v1", "--to", "staging", "--as", str(CAROL))
        assert ran.returncode == 0, ran.stderr
        await wait_finished(opsgate, 1)
        promoted = await cli(opsgate, "promote", "app", "--as", str(CAROL))
        assert promoted.returncode == 0, promoted.stderr
        assert promoted.stdout.startswith("#2 deploy app v1"), promoted.stdout
        assert (await wait_finished(opsgate, 2)).state == "succeeded"

        services = (await api.get("/api/services")).json()
        production = next(s for s in services if s["environment"] == "production")
        assert production["version"] == "v1" and production["healthy_hosts"] == 4
        assert [(h["host"], h["version"]) for h in production["hosts"]] == [
            (h, "v1") for h in PRODUCTION
        ]
        assert all(h["health"]["ok"] for h in production["hosts"])
        staging = next(s for s in services if s["environment"] == "staging")
        assert [h["host"] for h in staging["hosts"]] == STAGING

        back = await api.post(
            "/api/rollbacks",
            json={"service": "app", "requested_by": CAROL, "environment": "production"},
        )
        assert back.status_code == 422, back.text  # v1 is all production ever ran
        assert "no earlier good release" in back.json()["error"]
    assert await setup.current(PRODUCTION) == dict.fromkeys(PRODUCTION, "v1")


async def wait_finished(opsgate: Opsgate, deployment_id: int, timeout: float = 120) -> Deployment:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        deployment = await opsgate.services.deployments.get(deployment_id)
        if deployment.finished:
            return deployment
        assert asyncio.get_running_loop().time() < deadline, deployment.describe()
        await asyncio.sleep(0.2)


async def test_a_failed_host_within_the_allowance_goes_back_and_the_rollout_goes_on(
    setup: FleetSetup, start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    setup.write_ops(rollout="batch = 2\nmax_failed_hosts = 1")
    await start_opsgate()
    assert "✅ app runs v1." in (await run_and_wait(client, "/deploy app v1 to production")).text
    setup.app.broken_marker(setup.fleet.host("h2"), "v2").write_text("broken on h2 only\n")

    done = await run_and_wait(client, "/deploy app v2 to production")
    assert "✅ app runs v2 (was v1)." in done.text, done.text
    assert "failed: h2, back on their release: h2" in done.text
    assert await setup.current(PRODUCTION) == {"h1": "v2", "h2": "v1", "h3": "v2", "h4": "v2"}
    assert await setup.serving(PRODUCTION) == {"h1": "v2", "h2": "v1", "h3": "v2", "h4": "v2"}
    history = await client.reply_after(CAROL, DEPLOYS, "/history app")
    assert "(succeeded) · ✅ h1 h3 h4 · ⏪ h2" in history.text, history.text
    services = await client.reply_after(CAROL, DEPLOYS, "/services")
    # Healthy, but not one version: yellow, with who runs what.
    assert "🟡 app (production): 4/4 hosts healthy; v1 on h2 · v2 on h1 h3 h4" in services.text
