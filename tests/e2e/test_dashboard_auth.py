"""The dashboard's refusals over plain HTTP against the real opsgate: initData that Telegram did
not sign, or signed too long ago, or for someone not in [people]; a one-time login link used
twice; writes without the CSRF token or the role (each checked to have changed nothing); and
the security headers of the page and its cookie."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx
import pytest

from bot.dev.harness.systemd import SystemdSandbox
from bot.dev.harness.telegram_webapp import encode, init_data, init_fields, sign, user_json
from bot.dev.sandbox import SandboxClient
from bot.runner import Opsgate
from services.approvals.model import RequestStatus
from services.deploy.model import DeploymentState as S
from tests.e2e.conftest import (
    ALICE,
    APPROVALS,
    BOB,
    CAROL,
    DEPLOYS,
    STRANGER,
    TOKEN,
    StartOpsgate,
)
from tests.e2e.deploy_app import PEOPLE_AND_CHATS, DeployApp, app_ops_text, installed_app
from tests.e2e.test_dashboard import ALERTS_TOKEN, CRITICAL, DASHBOARD, bot_message, dashboard_ops
from tests.e2e.test_deploy_chat import card, signoff_message

COOKIE = "opsgate_session"
CSRF_REFUSED = {"error": "missing or wrong CSRF token"}
MAX_AGE_S = 3600  # auth_max_age_s's default


@dataclass(frozen=True)
class Signed:
    """A signed-in person: the session cookie's value and the CSRF token."""

    cookie: str
    csrf: str
    body: dict[str, Any]

    def headers(self, csrf: str | None = "") -> dict[str, str]:
        """The cookie, and the CSRF header: ours by default, `csrf` if given, none for None."""
        headers = {"Cookie": f"{COOKIE}={self.cookie}"}
        if csrf is not None:
            headers["X-CSRF-Token"] = csrf or self.csrf
        return headers


def http(opsgate: Opsgate) -> httpx.AsyncClient:
    """A client with no cookie jar of its own: every cookie a test sends is one it chose."""
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{opsgate.http_port}", cookies=None, follow_redirects=False
    )


def session_cookie(response: httpx.Response) -> str | None:
    """The Set-Cookie header of the session cookie, whole (with its attributes), if any."""
    return next(
        (v for v in response.headers.get_list("set-cookie") if v.startswith(f"{COOKIE}=")), None
    )


def cookie_value(set_cookie: str) -> str:
    return set_cookie.split(";", 1)[0].split("=", 1)[1]


async def post_init_data(opsgate: Opsgate, raw: str) -> httpx.Response:
    async with http(opsgate) as client:
        return await client.post("/app/auth/telegram", json={"init_data": raw})


async def sign_in(opsgate: Opsgate, user: int, name: str) -> Signed:
    response = await post_init_data(opsgate, init_data(TOKEN, user, name.capitalize(), name))
    assert response.status_code == 200, response.text
    set_cookie = session_cookie(response)
    assert set_cookie is not None, response.headers
    body = response.json()
    return Signed(cookie_value(set_cookie), body["csrf"], body)


def refused(response: httpx.Response, status: int) -> str:
    """The refusal's reason, once its status is `status` and it set no session cookie."""
    assert response.status_code == status, (response.status_code, response.text)
    assert session_cookie(response) is None, response.headers
    return str(response.json()["error"])


async def test_init_data_telegram_did_not_sign_for_a_listed_person_is_refused(
    start_opsgate: StartOpsgate, ops_file: Path
) -> None:
    ops_file.write_text(dashboard_ops(None, None))
    opsgate = await start_opsgate()
    now = int(time.time())
    alice = init_fields(ALICE, "Alice", "alice")

    forged = sign(alice, "7100000001:AAE-some-other-bot-token-entirely-xx")
    assert refused(await post_init_data(opsgate, forged), 401)
    # Signed for bob, then the user swapped for alice: the hash no longer matches.
    as_bob = dict(parse_qsl(sign(init_fields(BOB, "Bob", "bob"), TOKEN)))
    as_bob["user"] = user_json(ALICE, "Alice", "alice")
    assert refused(await post_init_data(opsgate, encode(as_bob)), 401)

    stale = sign({**alice, "auth_date": str(now - MAX_AGE_S - 120)}, TOKEN)
    assert refused(await post_init_data(opsgate, stale), 401)
    undated = sign({k: v for k, v in alice.items() if k != "auth_date"}, TOKEN)
    assert refused(await post_init_data(opsgate, undated), 401)
    for malformed in ("", "hash", "user=%7B&hash=00", "%%%"):
        assert refused(await post_init_data(opsgate, malformed), 401), malformed

    # Properly signed, but for someone who is not in [people]: known to Telegram, not to us.
    stranger = init_data(TOKEN, STRANGER, "Stranger", "stranger")
    assert refused(await post_init_data(opsgate, stranger), 403)
    async with http(opsgate) as client:
        assert (await client.get("/app/api/state")).status_code == 401
        assert (await client.get("/app/api/session")).status_code == 401
        forged_cookie = {"Cookie": f"{COOKIE}={ALICE}.{now + 3600}.nonce.c2lnbmF0dXJl"}
        assert (await client.get("/app/api/session", headers=forged_cookie)).status_code == 401

    # The same route lets alice in (so the refusals above were about the data, not the route).
    alice_in = await sign_in(opsgate, ALICE, "alice")
    assert (alice_in.body["person"], set(alice_in.body["roles"])) == (ALICE, {"admin", "sre"})
    async with http(opsgate) as client:
        session = await client.get("/app/api/session", headers=alice_in.headers(None))
    assert (session.status_code, session.json()["name"]) == (200, "alice"), session.text
    signed_in = await opsgate.services.audit.events(kind="dashboard.signed_in")
    assert [e.actor for e in signed_in] == [str(ALICE)]  # one: no refusal signed anyone in


async def test_sign_in_attempts_are_rate_limited(
    start_opsgate: StartOpsgate, ops_file: Path
) -> None:
    ops_file.write_text(dashboard_ops(None, None))
    opsgate = await start_opsgate()
    forged = sign(init_fields(ALICE, "Alice", "alice"), "7100000001:AAE-not-this-bots-token-xx")
    answers = [(await post_init_data(opsgate, forged)).status_code for _ in range(25)]
    assert 401 in answers and 429 in answers, answers
    first = answers.index(429)
    assert set(answers[:first]) == {401} and set(answers[first:]) == {429}, answers
    # Limited, a valid sign-in waits too, and so does a login link.
    limited = await post_init_data(opsgate, init_data(TOKEN, ALICE, "Alice", "alice"))
    assert refused(limited, 429) and int(limited.headers["retry-after"]) >= 1
    async with http(opsgate) as client:
        link = await client.get("/app/login", params={"token": "x" * 43})
    assert link.status_code == 429


async def test_the_page_and_its_session_carry_the_security_headers(
    start_opsgate: StartOpsgate, ops_file: Path
) -> None:
    ops_file.write_text(dashboard_ops(None, None))
    opsgate = await start_opsgate()
    async with http(opsgate) as client:
        page = await client.get("/app/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = directives(page.headers["content-security-policy"])
        assert "'self'" in csp["script-src"] and "'unsafe-inline'" not in csp["script-src"], csp
        assert "https://web.telegram.org" in csp["frame-ancestors"], csp
        assert page.headers["x-content-type-options"] == "nosniff"
        scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page.text, re.S | re.I)
        assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)
        assert not re.search(r"\son[a-z]+\s*=", page.text, re.I)  # no inline handlers
        for asset, kind in (("/app/static/app.js", "javascript"), ("/app/static/app.css", "css")):
            served = await client.get(asset)
            assert served.status_code == 200 and kind in served.headers["content-type"], asset
            assert served.headers["x-content-type-options"] == "nosniff", asset

    response = await post_init_data(opsgate, init_data(TOKEN, ALICE, "Alice", "alice"))
    assert response.status_code == 200, response.text
    set_cookie = session_cookie(response)
    assert set_cookie is not None
    attributes = {a.strip().split("=")[0].lower() for a in set_cookie.split(";")[1:]}
    assert {"httponly", "samesite", "path"} <= attributes, set_cookie
    assert re.search(r"samesite=(lax|strict|none)", set_cookie, re.I), set_cookie
    assert cookie_value(set_cookie) not in response.text  # the page's script never sees it

    signed = Signed(cookie_value(set_cookie), response.json()["csrf"], response.json())
    async with http(opsgate) as client:
        state = await client.get("/app/api/state", headers=signed.headers(None))
        assert state.status_code == 200, state.text
        assert {"services", "deployments", "history", "signoffs", "alerts", "flags", "dora"} <= set(
            state.json()
        )
        etag = state.headers["etag"]
        again = await client.get(
            "/app/api/state", headers={**signed.headers(None), "If-None-Match": etag}
        )
        assert again.status_code == 304 and again.content == b""


def directives(csp: str) -> dict[str, str]:
    """A Content-Security-Policy header as {directive: its sources}."""
    pairs = (part.strip().split(None, 1) for part in csp.split(";") if part.strip())
    return {p[0].lower(): (p[1] if len(p) > 1 else "") for p in pairs}


async def test_a_one_time_login_link_works_once(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    ops_file.write_text(dashboard_ops(None, None))
    opsgate = await start_opsgate()
    sent = await client.reply_after(ALICE, ALICE, "/dashboard")  # alice's private chat
    links = [b.url for row in sent.buttons for b in row if b.url and "/app/login?" in b.url]
    assert links, sent
    public = urlsplit(links[0])
    assert public.scheme == "https" and public.netloc == "ops.example.test", links[0]
    local = urlunsplit(("http", f"127.0.0.1:{opsgate.http_port}", *public[2:]))

    async with http(opsgate) as web:
        first = await web.get(local)
        assert first.status_code == 303, first.text
        assert urlsplit(first.headers["location"]).path == "/app/"
        set_cookie = session_cookie(first)
        assert set_cookie is not None and "httponly" in set_cookie.lower(), first.headers
        cookie = {"Cookie": f"{COOKIE}={cookie_value(set_cookie)}"}
        web.cookies.clear()  # only the cookie a request names is sent
        session = await web.get("/app/api/session", headers=cookie)
        assert session.status_code == 200 and session.json()["person"] == ALICE, session.text

        replayed = await web.get(local)
        assert replayed.status_code == 401, replayed.text
        assert session_cookie(replayed) is None and "text/html" in replayed.headers["content-type"]
        mangled = local.replace("token=", "token=x", 1)
        assert (await web.get(mangled)).status_code == 401

    # A link is for people in [people] only: a stranger's private chat gets none. (/whoami
    # answers anyone: once it has, the /dashboard before it was handled.)
    await client.send(STRANGER, STRANGER, "/dashboard")
    await client.reply_after(STRANGER, STRANGER, "/whoami")
    strangers = [m for m in await client.messages(STRANGER) if m.from_bot]
    assert not any("/app/login?" in (b.url or "") for m in strangers for r in m.buttons for b in r)


async def test_writes_without_the_csrf_token_change_nothing(
    start_opsgate: StartOpsgate, client: SandboxClient, ops_file: Path
) -> None:
    ops_file.write_text(dashboard_ops(None, None))
    await client.add_chat(CRITICAL, "supergroup", "Critical")
    opsgate = await start_opsgate(alerts_token=ALERTS_TOKEN)
    labels = {"alertname": "DiskFull", "severity": "critical", "service": "worker"}
    async with httpx.AsyncClient() as web:
        posted = await web.post(
            f"http://127.0.0.1:{opsgate.http_port}/webhooks/generic",
            json={"alerts": [{"labels": labels}]},
            headers={"Authorization": f"Bearer {ALERTS_TOKEN}"},
        )
    assert posted.status_code == 200, posted.text
    message = await client.wait_for(CRITICAL, bot_message("DiskFull"), timeout=30)
    [group] = await opsgate.services.alerts.firing_groups()
    signed = await sign_in(opsgate, CAROL, "carol")

    ack = f"/app/api/alerts/{group.id}/ack"
    async with http(opsgate) as web:
        for headers in (signed.headers(None), signed.headers("not-the-token")):
            answer = await web.post(ack, headers=headers)
            assert (answer.status_code, answer.json()) == (403, CSRF_REFUSED), answer.text
        # Another person's token is no better than none.
        bob = await sign_in(opsgate, BOB, "bob")
        answer = await web.post(ack, headers=signed.headers(bob.csrf))
        assert (answer.status_code, answer.json()) == (403, CSRF_REFUSED)
        logout = await web.post("/app/auth/logout", headers=signed.headers(None))
        assert logout.status_code == 403
        assert (await web.get("/app/api/session", headers=signed.headers(None))).status_code == 200

        [after] = await opsgate.services.alerts.firing_groups()
        assert after.acked_by is None
        assert await opsgate.services.audit.events(kind="alert.acked") == []
        [now] = [m for m in await client.messages(CRITICAL) if m.message_id == message.message_id]
        assert (now.text, now.edits) == (message.text, message.edits)

        # With the token, the same request acks it (the refusals were about the token alone).
        done = await web.post(ack, headers=signed.headers())
        assert done.status_code == 200, done.text
    await client.wait_for(CRITICAL, bot_message("carol is on it"))
    assert [e.actor for e in await opsgate.services.audit.events(kind="alert.acked")] == [
        str(CAROL)
    ]


@pytest.fixture
async def app(
    systemd_sandbox: SystemdSandbox, tmp_path: Path, ops_file: Path
) -> AsyncIterator[DeployApp]:
    """t-deploy.service in staging, whose deploys need one admin's sign-off."""
    async with installed_app(
        systemd_sandbox, systemd_sandbox.work_dir / f"dash-auth-{tmp_path.name}"
    ) as deployed:
        ops_file.write_text(DASHBOARD + PEOPLE_AND_CHATS + app_ops_text(systemd_sandbox, deployed))
        yield deployed


async def test_a_signoff_needs_the_role_and_the_token_from_the_page_too(
    app: DeployApp, start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    opsgate = await start_opsgate()
    asked = await client.reply_after(CAROL, DEPLOYS, "/deploy app v1", timeout=30)
    assert "waits for sign-off in the approvals chat: admin ×1." in asked.text, asked.text
    message = await signoff_message(client, "#1")
    request = await opsgate.services.approvals.for_deployment(1)
    assert request is not None
    [role] = request.roles
    approve = f"/app/api/signoffs/roles/{role.id}/approve"
    reject = f"/app/api/signoffs/roles/{role.id}/reject"

    bob = await sign_in(opsgate, BOB, "bob")  # in [people], holds no role
    alice = await sign_in(opsgate, ALICE, "alice")  # admin
    async with http(opsgate) as web:
        for path, body in ((approve, None), (reject, {"reason": "not today"})):
            answer = await web.post(path, json=body, headers=bob.headers())
            assert answer.status_code == 403, answer.text
            assert "error" in answer.json()
        # The right person without the token is refused too.
        answer = await web.post(approve, headers=alice.headers(None))
        assert (answer.status_code, answer.json()) == (403, CSRF_REFUSED)

        still = await opsgate.services.approvals.for_deployment(1)
        assert still is not None and still.status is RequestStatus.OPEN
        assert still.roles[0].votes == ()
        for kind in ("approval.approved", "approval.rejected"):
            assert await opsgate.services.audit.events(kind=kind) == [], kind
        assert (await opsgate.services.deployments.get(1)).state is S.AWAITING_APPROVAL
        [now] = [m for m in await client.messages(APPROVALS) if m.message_id == message.message_id]
        assert (now.text, now.edits) == (message.text, message.edits)

        done = await web.post(approve, headers=alice.headers())
        assert done.status_code == 200, done.text
    finished = await client.wait_for(DEPLOYS, lambda ms: card(ms, "app runs v1"), timeout=90)
    assert "✅ app runs v1." in finished.text
    approved = await opsgate.services.audit.events(kind="approval.approved")
    assert [e.actor for e in approved] == [str(ALICE)]
