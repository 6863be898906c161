import pytest

from config.settings import DEFAULT_BOT_API_URL, Settings, UpdateMode, split_http_addr


def test_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSGATE_BOT_TOKEN", "123456:SECRETSECRET")
    monkeypatch.setenv("OPSGATE_HTTP_ADDR", "0.0.0.0:9000")
    monkeypatch.setenv("OPSGATE_MODE", "webhook")
    settings = Settings(_env_file=None)
    assert settings.bot_api_url == DEFAULT_BOT_API_URL
    assert settings.http_host == "0.0.0.0"
    assert settings.http_port == 9000
    assert settings.mode is UpdateMode.WEBHOOK
    assert settings.secrets() == ["123456:SECRETSECRET"]


def test_token_never_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSGATE_BOT_TOKEN", "123456:SECRETSECRET")
    monkeypatch.setenv("OPSGATE_API_TOKEN", "api-secret-value")
    settings = Settings(_env_file=None)
    assert "SECRETSECRET" not in repr(settings)
    assert "api-secret-value" not in str(settings.model_dump())


@pytest.mark.parametrize("addr", ["nohost", ":80", "host:", "host:99999", "host:http"])
def test_bad_http_addr(addr: str) -> None:
    with pytest.raises(ValueError):
        split_http_addr(addr)


def test_ipv6_http_addr() -> None:
    assert split_http_addr("[::1]:8080") == ("::1", 8080)
