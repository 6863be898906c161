"""The ops dashboard (/app/) in a real headless Chromium, signed in with Telegram Mini App
initData, against the real bot, the Bot API sandbox and the real systemd sandbox: the services,
a deploy's steps advancing live without a reload, a sign-off ticked and approved, an alert
acked and a deploy aborted from the page, each read back from the chat it also changed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.dev.harness.browser import Browser, running_browser
from bot.dev.harness.systemd import SystemdSandbox
from bot.dev.harness.telegram_webapp import fragment, init_data
from bot.dev.sandbox import SandboxClient, SandboxMessage
from bot.runner import Opsgate
from services.deploy.model import DeploymentState as S
from tests.e2e.conftest import (
    ALICE,
    APPROVALS,
    BOB,
    CAROL,
    DEPLOYS,
    OPS_TEXT,
    TOKEN,
    StartOpsgate,
)
from tests.e2e.deploy_app import PEOPLE_AND_CHATS, DeployApp, app_ops_text, installed_app
from tests.e2e.test_deploy_chat import card, signoff_message
from tests.e2e.test_deploy_controls import LONG_WATCH, card_end, deploy_and_wait, wait_state

NAMES = {ALICE: "alice", BOB: "bob", CAROL: "carol"}
DASHBOARD = '[dashboard]\nurl = "https://ops.example.test/app/"\n'
CRITICAL = -100320
ALERTS_TOKEN = "dashboard-e2e-alerts-token"
ALERTS = f"""
[chats.alerts]
critical = {CRITICAL}
[alerts]
tick_s = 0.1
group_wait_s = 0.2
group_interval_s = 0.5
"""
# bob is qa: the only role staging's sign-off asks for, with one checklist item.
QA_SIGNOFF = """
[approvals]
check_s = 0.1
[approvals.checklists.qa]
items = [{ key = "smoke", text = "Smoke tests green on staging" }]
"""
STAGING_QA = "[environments.staging.approval]\nroles = { qa = 1 }\n"
# Each a few seconds, so every step shows in two or more of the page's polls (every ~1.5 s).
SLOW_STEPS = (
    'watch_s = 5\nwatch_interval_s = 0.2\nmigrate = [["sleep", "4"]]\nsmoke = [["sleep", "4"]]\n'
)
RENDERED = "document.body.dataset.rendered === '1'"


def dashboard_ops(
    systemd_sandbox: SystemdSandbox | None,
    app: DeployApp | None,
    *,
    deploy_extra: str = "watch_s = 0.5\nwatch_interval_s = 0.1\n",
    qa_signoff: bool = False,
) -> str:
    """[dashboard] and an alerts chat on top of the deploy tests' ops text (app in staging,
    no sign-off unless `qa_signoff`); without an app, the plain e2e ops text."""
    if systemd_sandbox is None or app is None:
        text = DASHBOARD + OPS_TEXT
    else:
        text = DASHBOARD + PEOPLE_AND_CHATS
        text += app_ops_text(
            systemd_sandbox, app, requires_approval=False, deploy_extra=deploy_extra
        )
    extra = ALERTS + (QA_SIGNOFF if qa_signoff else "")
    text = text.replace("[environments.production]", extra + "[environments.production]", 1)
    if qa_signoff:
        text = text.replace("[roles]\n", f"[roles]\nqa = [{BOB}]\n", 1)
        text = text.replace(
            "requires_approval = false\n", "requires_approval = false\n" + STAGING_QA, 1
        )
    return text


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One phone-sized Chromium for the module; each test starts it blank (`open_dashboard`)."""
    with running_browser() as started:
        yield started


@pytest.fixture
async def app(
    systemd_sandbox: SystemdSandbox, tmp_path: Path, ops_file: Path
) -> AsyncIterator[DeployApp]:
    async with installed_app(
        systemd_sandbox, systemd_sandbox.work_dir / f"dash-{tmp_path.name}"
    ) as deployed:
        ops_file.write_text(dashboard_ops(systemd_sandbox, deployed))
        yield deployed


def page_url(opsgate: Opsgate, user: int) -> str:
    """The page as a Telegram client opens it: initData in the fragment."""
    name = NAMES[user]
    data = init_data(TOKEN, user, name.capitalize(), username=name)
    return f"http://127.0.0.1:{opsgate.http_port}/app/{fragment(data)}"


async def open_dashboard(browser: Browser, opsgate: Opsgate, user: int) -> None:
    """A fresh visitor (no cookie) opens the Mini App as `user`; returns once it rendered."""
    await browser.reset()
    await browser.open(page_url(opsgate, user))
    await browser.wait_js(RENDERED, "the page's first render (body[data-rendered=1])")


async def console_errors(browser: Browser) -> list[str]:
    """Errors in the console (a script that failed, a CSP refusal), the favicon's 404 aside."""
    return [
        line
        for line in await browser.console()
        if line.startswith("SEVERE") and "favicon" not in line
    ]


def same_message(message_id: int, *markers: str) -> Any:
    """A wait_for predicate: message `message_id` once its text holds every marker."""

    def edited(messages: list[SandboxMessage]) -> SandboxMessage | None:
        return next(
            (
                m
                for m in messages
                if m.message_id == message_id and all(marker in m.text for marker in markers)
            ),
            None,
        )

    return edited


def bot_message(marker: str) -> Any:
    """A wait_for predicate: the bot's newest message holding `marker`."""
    return lambda ms: next((m for m in reversed(ms) if m.from_bot and marker in m.text), None)


async def test_the_page_signs_in_with_init_data_and_shows_the_services(
    app: DeployApp, start_opsgate: StartOpsgate, client: SandboxClient, browser: Browser
) -> None:
    opsgate = await start_opsgate()
    done = await deploy_and_wait(client, CAROL, "/deploy app v1")
    assert "✅ app runs v1." in done.text

    await open_dashboard(browser, opsgate, ALICE)
    who = await browser.wait_text("#who", "alice")
    assert "admin" in who and "sre" in who, who
    await browser.wait_text("#live", "live")
    row = "#services tr.service[data-service='app'][data-environment='staging']"
    await browser.wait_text(f"{row} .version", "v1")
    [health] = await browser.texts(f"{row} .health")
    [hosts] = await browser.texts(f"{row} .hosts")
    assert health.strip() and hosts.strip(), (health, hosts)
    history = await browser.wait_text("#history tr.deployment[data-id='1']", "v1")
    assert "app" in history
    assert await browser.texts("#deploys section.deploy") == []  # nothing in flight
    assert await console_errors(browser) == []  # no script error, nothing the CSP refused
    # The fragment is gone from the address bar once read: initData stays out of the history.
    assert "tgWebAppData" not in await browser.run("return location.href")

    # A Telegram client may hand initData over as window.Telegram.WebApp.initData instead.
    await browser.reset()
    data = init_data(TOKEN, BOB, "Bob", username="bob")
    await browser.inject(
        f"window.Telegram = {{WebApp: {{initData: {json.dumps(data)}, ready() {{}}}}}};"
    )
    await browser.open(f"http://127.0.0.1:{opsgate.http_port}/app/")
    await browser.wait_js(RENDERED, "the first render, signed in from Telegram.WebApp")
    assert (await browser.wait_css("#who")).startswith("bob")
    await browser.wait_text(f"{row} .version", "v1")


async def test_a_running_deploys_steps_advance_without_a_reload(
    app: DeployApp,
    systemd_sandbox: SystemdSandbox,
    ops_file: Path,
    start_opsgate: StartOpsgate,
    client: SandboxClient,
    browser: Browser,
) -> None:
    ops_file.write_text(dashboard_ops(systemd_sandbox, app, deploy_extra=SLOW_STEPS))
    opsgate = await start_opsgate()
    await open_dashboard(browser, opsgate, BOB)  # a viewer: no role that deploys
    await browser.run("window.__same = 1")  # gone if the page reloads or navigates

    await client.send(CAROL, DEPLOYS, "/deploy app v1")
    deploy = "#deploys section.deploy[data-id='1']"
    running = f"{deploy} li.step[data-status='running']"
    done = f"{deploy} li.step[data-status='ok']"
    # In order, each seen by a later poll than the one before it.
    await browser.wait_text(running, "migration", timeout=60)
    await browser.wait_text(done, "migration")
    await browser.wait_text(running, "smoke")
    await browser.wait_text(done, "smoke")
    await browser.wait_text(running, "watch")
    # One read of the list (a poll may redraw it between two reads).
    seen = await browser.run(
        "return Array.from(document.querySelectorAll(arguments[0]),"
        " e => [e.innerText, e.dataset.status]);",
        f"{deploy} li.step",
    )
    steps, statuses = [text for text, _ in seen], [status for _, status in seen]
    [migration, smoke, watch] = (
        next(i for i, text in enumerate(steps) if marker in text)
        for marker in ("migration", "smoke", "watch")
    )
    assert migration < smoke < watch, steps
    assert statuses[watch] == "running" and set(statuses[:watch]) == {"ok"}, seen
    assert await browser.texts(f"{deploy} button.abort") == []  # bob may not abort

    # Finished: it leaves the deploys in flight for the history.
    await browser.wait_gone(deploy, timeout=60)
    await browser.wait_css("#history tr.deployment[data-id='1']")
    assert (await opsgate.services.deployments.get(1)).state is S.SUCCEEDED
    assert await browser.run("return window.__same") == 1  # the same document throughout
    assert await console_errors(browser) == []


async def test_a_signoff_ticked_and_approved_from_the_page(
    app: DeployApp,
    systemd_sandbox: SystemdSandbox,
    ops_file: Path,
    start_opsgate: StartOpsgate,
    client: SandboxClient,
    browser: Browser,
) -> None:
    ops_file.write_text(dashboard_ops(systemd_sandbox, app, qa_signoff=True))
    opsgate = await start_opsgate()
    asked = await client.reply_after(CAROL, DEPLOYS, "/deploy app v1", timeout=30)
    assert "waits for sign-off in the approvals chat: qa ×1." in asked.text, asked.text
    message = await signoff_message(client, "#1")
    assert "☐ Smoke tests green on staging" in message.text

    await open_dashboard(browser, opsgate, BOB)
    signoff = "#signoffs section.signoff[data-deployment='1']"
    role = f"{signoff} div.role[data-role='qa']"
    await browser.wait_css(role)
    [role_id] = await browser.attributes(role, "data-role-id")
    [item] = await browser.attributes(f"{role} input.item", "data-item")
    box = f"{role} input.item[data-item='{item}']"
    checked = f"document.querySelector({json.dumps(box)}).checked"
    assert await browser.run(f"return {checked}") is False

    await browser.click(box)
    # Ticked on the server: the chat's message says so (a checkbox ticks itself when clicked).
    await client.wait_for(APPROVALS, same_message(message.message_id, "☑", "bob"))
    await browser.wait_js(checked, "the item still ticked after the next poll")

    await browser.click(f"{role} button.approve[data-role-id='{role_id}']")
    await browser.wait_text("#message", "Approved")
    edited = await client.wait_for(APPROVALS, same_message(message.message_id, "Signed off"))
    assert "qa — 1/1 ✅: bob" in edited.text, edited.text
    assert edited.edits > message.edits
    finished = await client.wait_for(DEPLOYS, lambda ms: card(ms, "app runs v1"), timeout=90)
    assert "✅ app runs v1." in finished.text
    assert (await opsgate.services.deployments.get(1)).state is S.SUCCEEDED
    approved = await opsgate.services.audit.events(kind="approval.approved")
    assert [(e.actor, e.data.get("role")) for e in approved] == [(str(BOB), "qa")]
    await browser.wait_gone(signoff)  # nothing waits any more
    assert await console_errors(browser) == []


async def test_an_alert_acked_from_the_page(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path, browser: Browser
) -> None:
    ops_file.write_text(dashboard_ops(None, None))
    await client.add_chat(CRITICAL, "supergroup", "Critical")
    opsgate = await start_opsgate(alerts_token=ALERTS_TOKEN)
    labels = {"alertname": "QueueStuck", "severity": "critical", "service": "worker"}
    body = {"alerts": [{"labels": labels, "annotations": {"summary": "no progress"}}]}
    async with httpx.AsyncClient() as http:
        posted = await http.post(
            f"http://127.0.0.1:{opsgate.http_port}/webhooks/generic",
            json=body,
            headers={"Authorization": f"Bearer {ALERTS_TOKEN}"},
        )
    assert posted.status_code == 200, posted.text
    message = await client.wait_for(CRITICAL, bot_message("QueueStuck"), timeout=30)
    assert "is on it" not in message.text

    await open_dashboard(browser, opsgate, CAROL)
    group = "#alerts section.alert-group"
    await browser.wait_text(group, "QueueStuck")
    [group_id] = await browser.attributes(group, "data-group")
    this = f"{group}[data-group='{group_id}']"
    assert "not acked" in await browser.wait_css(f"{this} .acked")
    await browser.click(f"{this} button.ack[data-group='{group_id}']")
    await browser.wait_text(f"{this} .acked", "acked by carol")
    acked = await client.wait_for(CRITICAL, same_message(message.message_id, "carol is on it"))
    assert "QueueStuck" in acked.text
    [firing] = await opsgate.services.alerts.firing_groups()
    assert firing.acked_by == str(CAROL)
    assert await console_errors(browser) == []


async def test_a_deploy_aborted_from_the_page_rolls_back(
    app: DeployApp,
    systemd_sandbox: SystemdSandbox,
    ops_file: Path,
    start_opsgate: StartOpsgate,
    client: SandboxClient,
    browser: Browser,
) -> None:
    opsgate = await start_opsgate()
    assert "✅ app runs v1." in (await deploy_and_wait(client, CAROL, "/deploy app v1")).text
    # v2 gets a long watch window to abort it in.
    ops_file.write_text(dashboard_ops(systemd_sandbox, app, deploy_extra=LONG_WATCH))
    reloaded = await client.reply_after(ALICE, DEPLOYS, "/reload")
    assert reloaded.text.startswith("✅ Reloaded"), reloaded.text
    started = await client.reply_after(CAROL, DEPLOYS, "/deploy app v2", timeout=30)
    await wait_state(opsgate, 2, S.WATCHING)

    deploy = "#deploys section.deploy[data-id='2']"
    await open_dashboard(browser, opsgate, BOB)  # no `control` role: no Abort for him
    await browser.wait_text(f"{deploy} li.step[data-status='running']", "watch")
    assert await browser.texts(f"{deploy} button.abort") == []
    await open_dashboard(browser, opsgate, CAROL)
    await browser.click(f"{deploy} button.abort[data-id='2']")
    done = await card_end(client, started.message_id, "Rolled back", "runs v2")
    assert "⏹ Stopped: Aborted by carol while watching." in done.text, done.text
    assert "Rolled back: app runs v1 again." in done.text
    await browser.wait_gone(deploy, timeout=60)
    await browser.wait_css("#history tr.deployment[data-id='2']")
    assert (await opsgate.services.deployments.get(2)).state is S.ROLLED_BACK
    assert (app.root / "current").resolve().name == "v1"
    assert await console_errors(browser) == []
