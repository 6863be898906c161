"""`opsgate deploy ... --wait`: the client follows a deployment to its end, and its exit code
says how it ended; the client's request bodies; the per-caller token lookup."""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Iterator

import httpx
import pytest

from bot.api_client import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_ROLLED_BACK,
    EXIT_TIMEOUT,
    UsageError,
    add_commands,
    follow,
    request_of,
)
from bot.cli import main
from bot.http.bearer import token_by_hash

STARTED = {"id": 7, "kind": "deploy", "service": "web", "version": "v2", "finished_at": None}


def poller(states: list[str]) -> httpx.Client:
    """A client whose GET /api/deployments/7 walks through `states`, the last one finished."""
    answers: Iterator[str] = iter(states)

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/deployments/7"
        state = next(answers)
        done = "2026-12-06T10:00:00+00:00" if state not in ("building", "failed") else None
        return httpx.Response(200, json=STARTED | {"state": state, "finished_at": done})

    return httpx.Client(base_url="http://opsgate", transport=httpx.MockTransport(handle))


def args(as_json: bool = True, timeout: float = 60) -> argparse.Namespace:
    return argparse.Namespace(json=as_json, timeout=timeout, interval=0)


@pytest.mark.parametrize(
    ("states", "code"),
    [
        (["building", "succeeded"], EXIT_OK),
        (["building", "failed", "rolled_back"], EXIT_ROLLED_BACK),
        (["failed", "rollback_failed"], EXIT_FAILED),
        (["cancelled"], EXIT_CANCELLED),
    ],
)
def test_the_exit_code_says_how_it_ended(
    states: list[str], code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with poller(states) as http:
        assert follow(http, STARTED | {"state": "approved"}, args()) == code
    assert json.loads(capsys.readouterr().out)["state"] == states[-1]


def test_a_deployment_failed_before_the_switch_ends_failed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ended = STARTED | {"state": "failed", "finished_at": "2026-12-06T10:00:00+00:00"}
    with poller([]) as http:
        assert follow(http, ended, args(as_json=False)) == EXIT_FAILED
    assert capsys.readouterr().out == "#7 deploy web v2: failed\n"


def test_a_deployment_still_running_at_the_timeout_exits_6(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with poller(["building"] * 5) as http:
        assert follow(http, STARTED | {"state": "building"}, args(timeout=0)) == EXIT_TIMEOUT
    assert "#7 still building after 0 s" in capsys.readouterr().err


def test_without_json_it_prints_each_state_once(capsys: pytest.CaptureFixture[str]) -> None:
    with poller(["building", "building", "succeeded"]) as http:
        assert follow(http, STARTED | {"state": "approved"}, args(as_json=False)) == EXIT_OK
    assert capsys.readouterr().out.splitlines() == [
        "#7 deploy web v2: approved",
        "#7 deploy web v2: building",
        "#7 deploy web v2: succeeded",
    ]


def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_each_command_makes_its_request() -> None:
    assert request_of(parsed("halt", "bad", "release")) == (
        "POST",
        "/api/halt",
        {"reason": "bad release"},
    )
    assert request_of(parsed("lock", "production", "freeze")) == (
        "POST",
        "/api/locks/production",
        {"reason": "freeze"},
    )
    assert request_of(parsed("unlock", "production"))[:2] == ("DELETE", "/api/locks/production")
    assert request_of(parsed("silence", "alertname=X", "job=~a.*", "2h", "--comment", "c")) == (
        "POST",
        "/api/silences",
        {"matchers": "alertname=X job=~a.*", "duration": "2h", "comment": "c"},
    )
    assert request_of(parsed("unsilence", "#4"))[:2] == ("DELETE", "/api/silences/4")
    assert request_of(parsed("lock", "../halt", "x"))[1] == "/api/locks/..%2Fhalt"
    assert request_of(parsed("flag", "checkout", "25%"))[2] == {"percent": 25.0}
    assert request_of(parsed("flag", "checkout", "kill", "--reason", "x"))[2] == {
        "action": "kill",
        "reason": "x",
    }
    assert request_of(parsed("flag", "checkout", "exclude", "chat", "-100"))[2] == {
        "action": "exclude",
        "target": {"kind": "chat", "id": "-100"},
    }
    for bad in (["flag", "k", "exclude", "room", "1"], ["flag", "k", "soon"], ["silence", "2h"]):
        with pytest.raises(UsageError):
            request_of(parsed(*bad))


def test_a_usage_error_exits_2_before_asking(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPSGATE_API_TOKEN", "t")
    monkeypatch.setenv("OPSGATE_HTTP_ADDR", "127.0.0.1:9")  # nothing is asked
    assert main(["flag", "checkout", "sometimes"]) == 2
    assert "not a percentage" in capsys.readouterr().err


def test_a_token_is_found_by_its_hash_only() -> None:
    hashes = [
        ("ci", hashlib.sha256(b"secret-1").hexdigest()),
        ("bot", hashlib.sha256(b"s2").hexdigest()),
    ]
    assert token_by_hash(b"s2", hashes) == "bot"
    assert token_by_hash(b"secret-1", hashes) == "ci"
    assert token_by_hash(hashes[0][1].encode(), hashes) is None  # the hash is not the token
    assert token_by_hash(b"", hashes) is None
