"""The proxy's weights: nginx's upstream text (no weight 0, so a slot without a share is left
out), and HAProxy's runtime API on a real HAProxy."""

from pathlib import Path

import pytest

from bot.dev.demo_web import free_port
from bot.dev.harness.haproxy import require_haproxy, running_haproxy, write_haproxy_config
from config.canary import CanaryConfig, HaproxyRouter
from services.control.traffic import (
    HaproxyWeights,
    NginxWeights,
    ProxyReloadFailed,
    mirror_text,
    split,
)
from services.hosts.runner import LocalHost

CANARY = CanaryConfig.model_validate(
    {"steps": [5, 100], "analysis": {"prometheus_url": "http://127.0.0.1:9090"}}
)


def weights() -> NginxWeights:
    return NginxWeights(
        "web",
        LocalHost(),
        upstream_file="/tmp/unused.conf",
        reload=["true"],
        canary=CANARY,
        ports={"blue": 8101, "green": 8102},
    )


def test_both_slots_with_their_weights() -> None:
    assert split("green", 5) == {"green": 5, "blue": 95}
    assert weights().text(split("green", 5)) == (
        "upstream web {\n"
        "    server 127.0.0.1:8101 weight=95;\n"
        "    server 127.0.0.1:8102 weight=5;\n"
        "}\n"
    )


def test_a_slot_at_zero_is_left_out() -> None:
    assert weights().text(split("green", 100)) == (
        "upstream web {\n    server 127.0.0.1:8102 weight=100;\n}\n"
    )


def test_the_mirror_keeps_a_slow_shadow_from_holding_clients() -> None:
    assert CANARY.shadow is None
    shadow = CanaryConfig.model_validate(
        {
            "steps": [100],
            "analysis": {"prometheus_url": "http://127.0.0.1:9090"},
            "shadow": {"mirror_file": "/etc/nginx/mirror.conf", "timeout_s": 1.5},
        }
    ).shadow
    assert shadow is not None
    text = mirror_text(shadow, 8102)
    assert text.startswith("mirror /_opsgate_shadow;\nlocation = /_opsgate_shadow {\n")
    assert "proxy_read_timeout 1.5s;" in text
    assert "proxy_pass http://127.0.0.1:8102$request_uri;" in text


async def test_haproxy_weights_are_set_and_read_back_on_a_real_haproxy(tmp_path: Path) -> None:
    require_haproxy()
    files = write_haproxy_config(
        tmp_path, free_port(), {"blue": (free_port(), 100), "green": (free_port(), 0)}
    )
    with running_haproxy(files):
        router = HaproxyWeights(HaproxyRouter(admin=str(files.admin_socket), backend="app"))
        assert await router.weights() == {"blue": 100, "green": 0}
        await router.set_weights(split("green", 25))
        assert await router.weights() == {"blue": 75, "green": 25}
        assert await router.shows({"green": 25, "blue": 75})
        assert not await router.shows({"green": 50, "blue": 50})
        wrong = HaproxyWeights(HaproxyRouter(admin=str(files.admin_socket), backend="nope"))
        with pytest.raises(ProxyReloadFailed, match="HAProxy refused the weights"):
            await wrong.set_weights(split("green", 5))
        assert await router.weights() == {"blue": 75, "green": 25}  # nothing changed
    with pytest.raises(ProxyReloadFailed, match="did not answer"):
        await router.weights()
