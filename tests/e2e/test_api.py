"""The JSON API and the `opsgate deploy|rollback|flag|status` client: a CI pipeline requests a
deploy through the API, approvers sign it off in Telegram, it runs. Same checks as the chat."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bot.dev.harness.systemd import SystemdSandbox
from bot.dev.sandbox import SandboxClient
from bot.runner import Opsgate
from tests.e2e.conftest import ALICE, APPROVALS, BOB, CAROL, DEPLOYS, StartOpsgate
from tests.e2e.deploy_app import PEOPLE_AND_CHATS, DeployApp, app_ops_text, installed_app
from tests.e2e.test_deploy_chat import card, press_approve

API_TOKEN = "api-e2e-token"
FLAGS = '[flags.checkout]\ndescription = "new checkout"\n'


@pytest.fixture
async def app(
    systemd_sandbox: SystemdSandbox, tmp_path: Path, ops_file: Path
) -> AsyncIterator[DeployApp]:
    async with installed_app(
        systemd_sandbox, systemd_sandbox.work_dir / f"api-{tmp_path.name}"
    ) as deployed:
        ops_file.write_text(FLAGS + PEOPLE_AND_CHATS + app_ops_text(systemd_sandbox, deployed))
        yield deployed


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


async def cli(opsgate: Opsgate, *args: str, token: str = API_TOKEN) -> Ran:
    """`opsgate ARGS` as a real process (asynchronously: opsgate runs on this event loop)."""
    env = {
        **os.environ,
        "OPSGATE_API_TOKEN": token,
        "OPSGATE_HTTP_ADDR": f"127.0.0.1:{opsgate.http_port}",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


async def api(opsgate: Opsgate, verb: str, path: str, **kwargs: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{opsgate.http_port}") as http:
        return await http.request(verb, path, headers=headers, **kwargs)  # type: ignore[arg-type]


async def test_a_pipeline_requests_a_deploy_that_people_sign_off(
    app: DeployApp, start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    opsgate = await start_opsgate(api_token=API_TOKEN)
    asked = await cli(opsgate, "deploy", "app", "v1", "--as", str(CAROL))
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.strip() == "#1 deploy app v1: awaiting_approval"
    # The same sign-off as from the chat: the approval message, then the card.
    assert await press_approve(client, ALICE, "#1") == "Approved: signed off."
    done = await client.wait_for(DEPLOYS, lambda ms: card(ms, "app runs v1"), timeout=90)
    assert "✅ app runs v1." in done.text
    [deployment] = (await api(opsgate, "GET", "/api/deployments?service=app")).json()
    assert (deployment["state"], deployment["requested_by"]) == ("succeeded", str(CAROL))
    one = (await api(opsgate, "GET", "/api/deployments/1")).json()
    kinds = [e["kind"] for e in one["trail"]["events"]]
    assert "approval.requested" in kinds and kinds[-1] == "deploy.succeeded"

    status = await cli(opsgate, "status")
    assert status.returncode == 0, status.stderr
    assert "#1 deploy app v1: succeeded" in status.stdout
    moved = await cli(opsgate, "flag", "checkout", "25", "--as", str(CAROL))
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout) == {
        "key": "checkout",
        "rollout_percent": 25.0,
        "enabled": True,
        "killed": False,
        "version": 2,
        "targeting": {
            "allow": [],
            "segments": [],
            "chat_types": [],
            "excluded_chats": [],
            "excluded_users": [],
        },
    }
    flags = (await api(opsgate, "GET", "/api/flags")).json()
    assert [(f["key"], f["rollout_percent"]) for f in flags] == [("checkout", 25.0)]


async def test_the_api_refuses_what_the_chat_refuses(
    app: DeployApp, start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    opsgate = await start_opsgate(api_token=API_TOKEN)
    wrong = await cli(opsgate, "deploy", "app", "v1", "--as", str(CAROL), token="nope")
    assert wrong.returncode == 1 and "refused (401)" in wrong.stderr
    cases = [
        (
            {"service": "app", "version": "v1", "requested_by": BOB},
            403,
            "does not hold the role sre",
        ),
        ({"service": "nope", "version": "v1", "requested_by": CAROL}, 404, "unknown service"),
        ({"service": "app", "version": "../v1", "requested_by": CAROL}, 422, "version:"),
        ({"service": "app", "version": "v1", "requested_by": 4242}, 422, "requested_by"),
        (
            {"service": "app", "version": "v1", "requested_by": CAROL, "emergency": True},
            403,
            "oncall",
        ),
    ]
    for body, status, reason in cases:
        response = await api(opsgate, "POST", "/api/deployments", json=body)
        assert (response.status_code, reason in response.json()["error"]) == (status, True), body
    bad = await api(opsgate, "POST", "/api/deployments", content=b"{not json")
    assert bad.status_code == 400
    assert (await api(opsgate, "GET", "/api/deployments")).json() == []  # nothing was made
    assert [m for m in await client.messages(APPROVALS) if m.from_bot] == []
    spec = (await api(opsgate, "GET", "/api/openapi.json")).json()
    assert spec["openapi"].startswith("3.") and "/api/deployments" in spec["paths"]
    async with httpx.AsyncClient() as http:
        open_door = await http.get(f"http://127.0.0.1:{opsgate.http_port}/api/services")
    assert open_door.status_code == 401


async def test_an_emergency_deploy_through_the_api_tells_the_approvers_as_the_chat_does(
    app: DeployApp, start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    ops_file.write_text(
        ops_file.read_text().replace("[roles]\n", f"[roles]\noncall = [{ALICE}]\n", 1)
    )
    opsgate = await start_opsgate(api_token=API_TOKEN)
    body = {"service": "app", "version": "v1", "requested_by": ALICE, "emergency": True}
    asked = await api(opsgate, "POST", "/api/deployments", json=body)
    assert asked.status_code == 202, asked.text
    # No sign-off: it went ahead at once (by now it may already be past "approved").
    assert asked.json()["emergency"] and asked.json()["state"] != "awaiting_approval"
    notice = await client.wait_for(
        APPROVALS, lambda ms: next((m for m in ms if "Emergency deploy" in m.text), None)
    )
    assert notice.text.startswith("🚨 Emergency deploy #1: app v1 to staging by alice")
    done = await client.wait_for(DEPLOYS, lambda ms: card(ms, "app runs v1"), timeout=90)
    assert "✅ app runs v1." in done.text
