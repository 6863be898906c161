"""Canary releases through the real bot: real systemd, nginx, HAProxy and Prometheus.

Each test deploys v1 (the stable version, blue), then v2 as a canary on green: its share of
the traffic steps 5 -> 25 -> 50 -> 100 while Prometheus' numbers for both colours are
compared, or it is stopped with the reason on the card. Users' requests run through the
proxy all along, and every one of them is checked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from bot.dev.harness.keepalive_load import KeepAliveLoad
from bot.dev.harness.nginx import RequestLoad, RequestResult
from bot.dev.sandbox import SandboxClient, SandboxMessage
from tests.e2e.canary_stage import Stage
from tests.e2e.conftest import CAROL, DEPLOYS, STRANGER, StartOpsgate, callback_answer_text
from tests.e2e.test_fleet import run_and_wait


def deployment_id(card: SandboxMessage) -> int:
    found = re.search(r"#(\d+) ", card.text)
    assert found is not None, card.text
    return int(found.group(1))


def served_by(result: RequestResult) -> str:
    return str(json.loads(result.body or "{}").get("version"))


def user_failures(results: list[RequestResult]) -> list[str]:
    """What users felt beyond the app's own injected errors: transport errors, proxy 5xx."""
    return [
        r.describe()
        for r in results
        if not r.ok and not (r.status == 500 and "injected" in (r.body or ""))
    ]


async def stable_v1(stage: Stage, start_opsgate: StartOpsgate, client: SandboxClient) -> None:
    await start_opsgate()
    first = await run_and_wait(client, "/deploy app v1")
    assert "✅ app runs v1." in first.text, first.text


def serving(stage: Stage, port: int | None = None) -> str:
    """The version users get now, through nginx (or the proxy on `port`)."""
    url = f"http://127.0.0.1:{port or stage.proxy_port}/"
    version: str = httpx.get(url, timeout=5).json()["version"]
    return version


async def test_a_healthy_canary_is_promoted_step_by_step_with_the_split_nginx_logged(
    stage: Stage, start_opsgate: StartOpsgate, client: SandboxClient, tmp_path: Path
) -> None:
    stage.write_ops(router="nginx")
    await stable_v1(stage, start_opsgate, client)
    with RequestLoad(stage.proxy_port, threads=3, interval_s=0.004) as load:
        card = await run_and_wait(client, "/deploy app v2")
    assert "✅ app runs v2 (was v1)." in card.text, card.text
    for weight in (5, 25, 50):
        assert f"{weight}% to green for 3 s" in card.text
    assert "100% to green: v2 is stable" in card.text
    assert re.search(r"errors 0\.0% vs 0\.0% \(≤ 5\.0%\) · p95 \d+ ms vs \d+ ms", card.text)
    assert user_failures(load.results) == []
    assert {served_by(r) for r in load.results} == {"v1", "v2"}
    assert serving(stage) == "v2"

    def chart(messages: list[SandboxMessage]) -> SandboxMessage | None:
        return next(
            (m for m in messages if m.photo and m.reply_to_message_id == card.message_id), None
        )

    picture = await client.wait_for(DEPLOYS, chart, timeout=20)
    assert picture.photo is not None and picture.photo.data.startswith(b"\x89PNG\r\n")
    assert (picture.caption or "").startswith(f"#{deployment_id(card)} canary vs stable")
    assert "Last at 50%: errors 0.0% vs 0.0%" in (picture.caption or "")

    shares = stage.split_by_step(tmp_path / "opsgate.db", deployment_id(card))
    assert [weight for weight, _, _ in shares] == [5, 25, 50], shares
    for weight, share, total in shares:
        assert total >= 100, shares
        assert abs(share * 100 - weight) <= 4, shares  # nginx's access log, per step


@pytest.mark.parametrize("source", ["prometheus", "nginx"])
async def test_three_times_the_stable_error_ratio_aborts_at_the_first_step(
    stage: Stage, start_opsgate: StartOpsgate, client: SandboxClient, source: str
) -> None:
    # Prometheus scraping both colours, or, without it, nginx's own access log.
    where = f'source = "nginx"\naccess_log = "{stage.access_log}"\n' if source == "nginx" else ""
    stage.write_ops(
        analysis=where + "max_error_ratio = 0.9\nerrors_vs_stable = { factor = 1.5, plus = 0.005 }"
    )
    stage.marker("errors", "v1", "0.1")  # stable answers 10% errors, the canary 30%
    stage.marker("errors", "v2", "0.3")
    await stable_v1(stage, start_opsgate, client)
    with RequestLoad(stage.proxy_port, threads=3, interval_s=0.004) as load:
        card = await run_and_wait(client, "/deploy app v2")
        after = load.now()
        load.wait_for_body(json.dumps({"version": "v1"}))
    assert re.search(
        r"Canary at 5%: errors \d+\.\d% > limit \d+\.\d% \(stable \d+\.\d%\)", card.text
    ), card.text
    assert "25% to green" not in card.text
    assert "Rolled back: app runs v1 again; v2 is marked bad." in card.text, card.text
    assert user_failures(load.results) == []
    later = [r for r in load.results if r.at > after]
    assert later and {served_by(r) for r in later} == {"v1"}  # traffic is back on stable
    assert serving(stage) == "v1"
    assert not (await stage.sandbox.host.run(["systemctl", "is-active", "t-canary@green"])).ok


@pytest.mark.parametrize("router", ["nginx", "haproxy"])
async def test_a_latency_breach_names_the_p95_and_its_limit(
    stage: Stage, start_opsgate: StartOpsgate, client: SandboxClient, router: str
) -> None:
    stage.write_ops(router=router, analysis="max_latency_p95_s = 0.2")
    stage.marker("slow", "v2", "0.4")
    await stable_v1(stage, start_opsgate, client)
    front = stage.haproxy.listen_port if router == "haproxy" else stage.proxy_port
    with RequestLoad(front, threads=4, interval_s=0.004) as load:
        card = await run_and_wait(client, "/deploy app v2")
    assert re.search(r"Canary at 5%: p95 \d+ ms > limit 200 ms", card.text), card.text
    assert "Rolled back: app runs v1 again; v2 is marked bad." in card.text, card.text
    assert user_failures(load.results) == []
    assert serving(stage, front) == "v1"


async def test_haproxy_changes_every_weight_under_keep_alive_load_without_a_failure(
    stage: Stage, start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    stage.write_ops(router="haproxy")
    await stable_v1(stage, start_opsgate, client)
    stage.haproxy.set_weights({"blue": 100, "green": 0})
    with KeepAliveLoad(stage.haproxy.listen_port, threads=4, idle_s=(0.005, 0.05)) as load:
        card = await run_and_wait(client, "/deploy app v2")
        assert "✅ app runs v2 (was v1)." in card.text, card.text
        load.wait_for_side("green")
    assert "HAProxy app weights set live (no reload)" in card.text
    assert load.failures == []
    assert load.total > 300
    assert load.connections_opened == 4  # no connection was ever closed under a client
    assert {r.side for r in load.results} == {"blue", "green"}
    assert stage.haproxy.get_weight("green") == 100 and stage.haproxy.get_weight("blue") == 0


async def test_a_shadow_shows_the_new_versions_errors_while_users_get_stable_answers(
    stage: Stage, start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    stage.write_ops(
        shadow=f"""[services.app.deploy.canary.shadow]
duration_s = 4
mirror_file = "{stage.nginx_prefix}/mirror.conf"
"""
    )
    stage.marker("errors", "v2", "0.5")
    await stable_v1(stage, start_opsgate, client)
    with RequestLoad(stage.proxy_port, threads=3, interval_s=0.004) as load:
        card = await run_and_wait(client, "/deploy app v2")
    assert "shadow 4 s: mirror to green" in card.text, card.text
    assert re.search(
        r"Canary in the shadow: errors \d+\.\d% > limit 5\.0% \(stable (0\.0%|–)\)", card.text
    )
    assert "5% to green" not in card.text
    assert [r.describe() for r in load.results if not r.ok] == []
    assert {served_by(r) for r in load.results} == {"v1"}  # users only ever saw stable
    assert (stage.nginx_prefix / "mirror.conf").read_text().startswith("#")  # mirror is off


async def test_pause_resume_and_promote_from_the_card(
    stage: Stage, start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    stage.write_ops(step_s=600)  # each step would last ten minutes
    await stable_v1(stage, start_opsgate, client)
    with RequestLoad(stage.proxy_port, threads=3, interval_s=0.004) as load:
        reply = await client.reply_after(CAROL, DEPLOYS, "/deploy app v2", timeout=30)

        def at_five(messages: list[SandboxMessage]) -> SandboxMessage | None:
            cards = [m for m in messages if m.message_id >= reply.message_id]
            return next((m for m in cards if "requests" in m.text and "5% to" in m.text), None)

        card = await client.wait_for(DEPLOYS, at_five, timeout=60)
        labels = [b.text for row in card.buttons for b in row]
        assert labels == ["⏩ Promote", "⏸ Pause", "▶️ Resume", "⏹ Abort"]
        stranger = await client.press_button(STRANGER, DEPLOYS, card.message_id, 1)
        assert await callback_answer_text(client, stranger) == "This needs the role sre."
        pressed = await client.press_button(CAROL, DEPLOYS, card.message_id, 2)
        assert await callback_answer_text(client, pressed) == (
            f"⏸ #{deployment_id(card)}: paused at 5%; analysis goes on."
        )
        await client.wait_for(DEPLOYS, lambda ms: any("⏸ paused" in m.text for m in ms), timeout=20)
        again = await client.press_button(CAROL, DEPLOYS, card.message_id, 2)
        assert "already paused" in await callback_answer_text(client, again)
        resumed = await client.press_button(CAROL, DEPLOYS, card.message_id, 3)
        assert await callback_answer_text(client, resumed) == (
            f"▶️ #{deployment_id(card)}: resumed at 5%."
        )
        promoted = await client.press_button(CAROL, DEPLOYS, card.message_id, 1)
        assert "promoting the canary" in await callback_answer_text(client, promoted)

        def finished(messages: list[SandboxMessage]) -> SandboxMessage | None:
            return next((m for m in messages if "✅ app runs v2" in m.text), None)

        done = await client.wait_for(DEPLOYS, finished, timeout=60)
    assert "promoted by hand" in done.text
    assert "25% to green" not in done.text
    assert user_failures(load.results) == []
    assert serving(stage) == "v2"
    stale = await client.press(CAROL, DEPLOYS, card.message_id, card.buttons[0][1].data or "")
    assert "no longer valid" in (await callback_answer_text(client, stale))


async def test_abort_and_halt_put_traffic_back_on_stable_without_marking_it_bad(
    stage: Stage, start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    stage.write_ops(step_s=600)
    await stable_v1(stage, start_opsgate, client)
    with RequestLoad(stage.proxy_port, threads=3, interval_s=0.004) as load:
        for stop in ("abort", "halt"):
            reply = await client.reply_after(CAROL, DEPLOYS, "/deploy app v2", timeout=30)

            def card_at(
                marker: str, since: int = reply.message_id
            ) -> Callable[[list[SandboxMessage]], SandboxMessage | None]:
                def find(messages: list[SandboxMessage]) -> SandboxMessage | None:
                    cards = [m for m in messages if m.message_id >= since and m.from_bot]
                    return next((m for m in cards if marker in m.text), None)

                return find

            card = await client.wait_for(DEPLOYS, card_at("requests"), timeout=60)
            if stop == "abort":
                pressed = await client.press_button(CAROL, DEPLOYS, card.message_id, 4)
                assert "rolling back" in await callback_answer_text(client, pressed)
            else:
                await client.send(CAROL, DEPLOYS, "/halt bad smell")
            done = await client.wait_for(DEPLOYS, card_at("app runs v1 again"), timeout=60)
            assert "Traffic is back on stable." in done.text, done.text
            assert ("Aborted by carol" if stop == "abort" else "Halted by carol") in done.text
            assert "marked bad" not in done.text
            assert serving(stage) == "v1"
    assert user_failures(load.results) == []


async def test_a_step_without_traffic_says_so_and_fails_after_its_timeout(
    stage: Stage, start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    stage.write_ops(traffic_timeout_s=4)  # nobody sends requests: nothing to judge
    await stable_v1(stage, start_opsgate, client)
    card = await run_and_wait(client, "/deploy app v2")
    assert "too few to judge (need 10)" in card.text, card.text
    assert "Too little traffic to judge the canary at 5% for 4 s" in card.text
    assert "Rolled back: app runs v1 again" in card.text
    assert "marked bad" not in card.text  # it was never judged
    assert "25% to green" not in card.text
    assert serving(stage) == "v1"


async def test_a_query_prometheus_rejects_stops_the_deploy_before_anything_starts(
    stage: Stage, start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    unbalanced = 'sum(rate(http_requests_total{instance="{instance}"}[{window}])'  # no ")"
    stage.write_ops(analysis=f"queries = {{ requests = '{unbalanced}' }}")
    await stable_v1(stage, start_opsgate, client)
    card = await run_and_wait(client, "/deploy app v2")
    assert "Prometheus rejected" in card.text, card.text
    assert "Nothing was started; fix the query." in card.text
    assert "Rolled back" not in card.text  # it ended before the switch
    assert serving(stage) == "v1"
    assert not (await stage.sandbox.host.run(["systemctl", "is-active", "t-canary@green"])).ok
    assert "marked bad" not in card.text
