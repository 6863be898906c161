"""API and CLI parity with the chat: per-caller tokens of [api_tokens] (a person or a role),
halt / lock / silence / flag changes audited under the caller, refusals that change nothing,
and `opsgate deploy ... --wait --json` whose exit code says how the deployment ended."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bot.api_client import EXIT_OK, EXIT_REFUSED, EXIT_ROLLED_BACK
from bot.dev.harness.systemd import SystemdSandbox
from bot.runner import Opsgate
from tests.e2e.conftest import BOB, CAROL, StartOpsgate
from tests.e2e.deploy_app import PEOPLE_AND_CHATS, DeployApp, app_ops_text, installed_app
from tests.e2e.test_api import FLAGS, cli

CI, DEPLOYBOT, VIEWER, LEGACY = "ci-token-carol", "deploybot-token-sre", "viewer-bob", "legacy"


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


TOKENS = f"""
[api_tokens.ci]
sha256 = "{_sha(CI)}"
person = {CAROL}
[api_tokens.deploybot]
sha256 = "{_sha(DEPLOYBOT)}"
role = "sre"
[api_tokens.viewer]
sha256 = "{_sha(VIEWER)}"
person = {BOB}
"""


@pytest.fixture
async def app(
    systemd_sandbox: SystemdSandbox, tmp_path: Path, ops_file: Path
) -> AsyncIterator[DeployApp]:
    async with installed_app(
        systemd_sandbox, systemd_sandbox.work_dir / f"parity-{tmp_path.name}"
    ) as deployed:
        deploy = app_ops_text(systemd_sandbox, deployed, requires_approval=False)
        ops_file.write_text(FLAGS + TOKENS + PEOPLE_AND_CHATS + deploy)
        yield deployed


async def call(
    opsgate: Opsgate, token: str, verb: str, path: str, **kwargs: object
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{opsgate.http_port}") as http:
        return await http.request(verb, path, headers=headers, **kwargs)  # type: ignore[arg-type]


async def actors(opsgate: Opsgate, kind: str) -> list[str]:
    return [e.actor for e in await opsgate.services.audit.events(kind=kind)]


async def test_deploy_wait_exits_by_how_the_deployment_ended(
    app: DeployApp, start_opsgate: StartOpsgate
) -> None:
    opsgate = await start_opsgate()  # no OPSGATE_API_TOKEN: the ops file's tokens alone
    first = await cli(opsgate, "deploy", "app", "v1", "--wait", token=DEPLOYBOT)
    assert first.returncode == EXIT_OK, first.stderr
    assert first.stdout.splitlines()[-1] == "#1 deploy app v1: succeeded"
    good = await cli(opsgate, "deploy", "app", "v2", "--wait", "--json", token=CI)
    assert good.returncode == EXIT_OK, good.stderr
    ended = json.loads(good.stdout)
    assert (ended["state"], ended["version"], ended["requested_by"]) == (
        "succeeded",
        "v2",
        str(CAROL),
    )
    assert ended["trail"]["events"][-1]["kind"] == "deploy.succeeded"

    bad = await cli(opsgate, "deploy", "app", "v3", "--wait", "--json", "--timeout", "120",
                    token=DEPLOYBOT)  # fmt: skip
    assert bad.returncode == EXIT_ROLLED_BACK, (bad.stdout, bad.stderr)
    rolled = json.loads(bad.stdout)
    assert (rolled["state"], rolled["requested_by"]) == ("rolled_back", "deploybot (token)")
    # A role's token is no person: its rollback runs through the front door all the same.
    back = await cli(opsgate, "rollback", "app", "--wait", token=DEPLOYBOT)
    assert back.returncode == EXIT_OK, (back.stdout, back.stderr)
    assert back.stdout.splitlines()[-1] == "#4 rollback app v1: succeeded"
    plain = await cli(opsgate, "status", token=CI)
    assert "#3 deploy app v3: rolled_back" in plain.stdout


async def test_halt_lock_silence_and_flags_are_audited_under_the_caller(
    app: DeployApp, start_opsgate: StartOpsgate
) -> None:
    opsgate = await start_opsgate(api_token=LEGACY)
    locked = await cli(opsgate, "lock", "production", "db", "migration", "--json", token=CI)
    assert locked.returncode == 0, locked.stderr
    assert json.loads(locked.stdout)["locked_by"] == str(CAROL)
    assert await actors(opsgate, "env.locked") == [str(CAROL)]
    assert opsgate.services.ops.name_of(CAROL) == "carol"
    unlocked = await call(opsgate, DEPLOYBOT, "DELETE", "/api/locks/production")
    assert unlocked.status_code == 200, unlocked.text
    assert await actors(opsgate, "env.unlocked") == ["deploybot (token)"]

    silenced = await cli(opsgate, "silence", "alertname=DiskFull", "service=~web.*", "2h",
                         "--comment", "disk swap", "--json", token=DEPLOYBOT)  # fmt: skip
    assert silenced.returncode == 0, silenced.stderr
    made = json.loads(silenced.stdout)
    assert made["created_by"] == "deploybot (token)"
    assert made["matchers"] == ["alertname=DiskFull", "service=~web.*"]
    assert made["where"] == "local"  # no [alertmanager] in this ops file
    [active] = await opsgate.services.alerts.silences()
    assert str(active.id) == made["id"]
    ended = await cli(opsgate, "unsilence", str(made["id"]), token=CI)
    assert ended.returncode == 0, ended.stderr
    assert await opsgate.services.alerts.silences() == []
    assert await actors(opsgate, "alert.silenced") == ["deploybot (token)"]
    assert await actors(opsgate, "alert.unsilenced") == [str(CAROL)]

    for args in (["kill", "--reason", "bad data"], ["unkill"], ["off"], ["on"], ["10"],
                 ["exclude", "user", "555"], ["include", "user", "555"],
                 ["unexclude", "chat", "-1005"], ["allow", "777"], ["disallow", "777"],
                 ["chats", "group,supergroup"], ["chats", "all"]):  # fmt: skip
        moved = await cli(opsgate, "flag", "checkout", *args, token=DEPLOYBOT)
        assert moved.returncode == 0, (args, moved.stderr)
    flag = await opsgate.services.flags.get("checkout")
    assert flag is not None and (flag.enabled, flag.killed, flag.rollout_percent) == (
        True,
        False,
        10.0,
    )
    changes = await opsgate.services.flags.changes("checkout", limit=20)
    assert {c.actor for c in changes if c.version > 1} == {"deploybot (token)"}

    halted = await cli(opsgate, "halt", "bad", "release", "--json", token=DEPLOYBOT)
    assert halted.returncode == 0, halted.stderr
    assert sorted(json.loads(halted.stdout)["locked"]) == ["production", "staging"]
    assert set(await actors(opsgate, "env.locked")) == {str(CAROL), "deploybot (token)"}
    held = await call(opsgate, CI, "GET", "/api/locks")
    assert {lock["locked_by"] for lock in held.json()} == {"deploybot (token)"}

    # OPSGATE_API_TOKEN keeps working, with `requested_by` as before.
    legacy = await call(opsgate, LEGACY, "DELETE", "/api/locks/staging",
                        json={"requested_by": CAROL})  # fmt: skip
    assert legacy.status_code == 200, legacy.text
    unnamed = await call(opsgate, LEGACY, "DELETE", "/api/locks/production")
    assert unnamed.status_code == 422 and "requested_by" in unnamed.json()["error"]


async def test_a_token_without_the_role_is_refused_and_changes_nothing(
    app: DeployApp, start_opsgate: StartOpsgate
) -> None:
    opsgate = await start_opsgate(api_token=LEGACY)
    writes: list[tuple[str, str, dict[str, object]]] = [
        ("POST", "/api/deployments", {"service": "app", "version": "v1"}),
        ("POST", "/api/rollbacks", {"service": "app"}),
        ("POST", "/api/halt", {"reason": "stop"}),
        ("POST", "/api/locks/production", {"reason": "freeze"}),
        ("POST", "/api/silences", {"matchers": "alertname=X", "duration": "1h"}),
        ("POST", "/api/flags/checkout", {"percent": 50}),
        ("POST", "/api/flags/checkout", {"action": "kill"}),
        ("DELETE", "/api/silences/1", {}),
        ("DELETE", "/api/locks/production", {}),
    ]
    for verb, path, body in writes:
        refused = await call(opsgate, VIEWER, verb, path, json=body)
        assert refused.status_code == 403, (path, refused.text)
        assert "the token viewer does not hold the role sre" in refused.json()["error"]
    # A wrong or missing token: 401; a body that is not JSON: 400.
    assert (
        await call(opsgate, "nope", "POST", "/api/halt", json={"reason": "x"})
    ).status_code == 401
    assert (await call(opsgate, _sha(CI), "GET", "/api/locks")).status_code == 401
    async with httpx.AsyncClient() as http:
        bare = await http.post(f"http://127.0.0.1:{opsgate.http_port}/api/halt")
    assert bare.status_code == 401
    malformed = await call(opsgate, CI, "POST", "/api/locks/production", content=b"{not json")
    assert malformed.status_code == 400
    wrong = await cli(opsgate, "halt", "stop", token="nope")
    assert wrong.returncode == EXIT_REFUSED and "refused (401)" in wrong.stderr
    no_role = await cli(opsgate, "lock", "production", "freeze", token=VIEWER)
    assert no_role.returncode == EXIT_REFUSED and "refused (403)" in no_role.stderr

    services = opsgate.services
    assert await services.env_locks.all() == []
    assert await services.alerts.silences() == []
    assert await services.deployments.history(None, 10) == []
    flag = await services.flags.get("checkout")
    assert flag is not None and (flag.killed, flag.rollout_percent, flag.version) == (
        False,
        0.0,
        1,
    )
    kinds = {e.kind for e in await services.audit.events()}
    assert not kinds & {"env.locked", "alert.silenced", "flag.changed", "flag.killed"}
