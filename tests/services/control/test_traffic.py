"""The proxy's weights as text: nginx has no weight 0, so a slot without a share is left out."""

from config.canary import CanaryConfig
from services.control.traffic import NginxWeights, mirror_text, split
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
