"""`opsgate deploy|rollback|promote|restore|flag|halt|lock|unlock|silence|unsilence|status`: a
running opsgate, through its HTTP API, so a pipeline can do what the chat does, under the same
roles.

    OPSGATE_API_TOKEN    the bearer token: one of the ops file's [api_tokens] (it says who
                         asks), or the process-wide token (then say who: --as / the next line)
    OPSGATE_REQUESTED_BY the Telegram user id a request is made as (or --as ID)
    OPSGATE_HTTP_ADDR    where opsgate listens (or --url http://host:port)

`deploy|rollback|promote|restore ... --wait` follows the deployment to its end; the exit code
says how it ended (EXIT_* below): 0 succeeded, 3 failed, 4 rolled back, 5 cancelled, 6 still running
when --timeout ran out; 1 refused or unreachable, 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from config.settings import Settings
from services.flags.edits import USAGE as TARGETING_USAGE
from services.flags.edits import parse_targeting
from services.flags.types import InvalidTargeting

EXIT_OK = 0
EXIT_REFUSED = 1  # opsgate said no (the reason is on stderr), or could not be reached
EXIT_USAGE = 2
EXIT_FAILED = 3  # failed before the switch, or its rollback failed too
EXIT_ROLLED_BACK = 4
EXIT_CANCELLED = 5  # cancelled, rejected at sign-off, or stopped by a halt
EXIT_TIMEOUT = 6  # --wait: still in flight when --timeout ran out
EXIT_OF_STATE = {
    "succeeded": EXIT_OK,
    "failed": EXIT_FAILED,
    "rollback_failed": EXIT_FAILED,
    "rolled_back": EXIT_ROLLED_BACK,
    "cancelled": EXIT_CANCELLED,
}
ENDED = frozenset(EXIT_OF_STATE) - {"failed"}  # "failed" may yet roll back: see finished_at
FOLLOWED = ("deploy", "rollback", "promote", "restore")
COMMANDS = (*FOLLOWED, "flag", "halt", "lock", "unlock", "silence", "unsilence", "status")
FLAG_VERBS = ("on", "off", "kill", "unkill", "include")


def add_commands(sub: Any) -> None:
    """The client subcommands, on the `opsgate` parser's subparsers."""
    for name, help_text in (
        ("deploy", "request a deploy: SERVICE VERSION [--to ENVIRONMENT] [--emergency] [--wait]"),
        ("rollback", "request a rollback: SERVICE [VERSION] [--in ENVIRONMENT] [--wait]"),
        ("promote", "deploy what runs in one environment to the next: SERVICE [--from ENV]"),
        ("restore", "restore a database from a rollback point: SERVICE [POINT] (none: list)"),
        ("flag", "change a flag: KEY PERCENT | on | off | kill | unkill | " + TARGETING_USAGE),
        ("halt", "emergency stop: REASON (everything stops until unlocked)"),
        ("lock", "lock an environment against deploys: ENVIRONMENT REASON"),
        ("unlock", "lift an environment's lock: ENVIRONMENT"),
        ("silence", "silence alerts: MATCHER... DURATION [--comment TEXT]"),
        ("unsilence", "end a silence: ID"),
        ("status", "services, deployments in flight, firing alerts"),
    ):
        command = sub.add_parser(name, help=help_text)
        command.add_argument("--url", help="opsgate's HTTP side (default: OPSGATE_HTTP_ADDR)")
        if name != "status":
            command.add_argument("--as", dest="requested_by", type=int, help="your user id")
            command.add_argument("--json", action="store_true", help="print opsgate's JSON")
        if name in FOLLOWED:
            command.add_argument("--wait", action="store_true", help="follow it to its end")
            command.add_argument("--timeout", type=float, default=3600, help="seconds (--wait)")
            command.add_argument("--interval", type=float, default=1, help=argparse.SUPPRESS)
        _add_arguments(name, command)


def _add_arguments(name: str, command: argparse.ArgumentParser) -> None:
    if name == "deploy":
        command.add_argument("service")
        command.add_argument("version")
        command.add_argument("--to", dest="environment", help="the environment")
        command.add_argument("--emergency", action="store_true")
    elif name == "rollback":
        command.add_argument("service")
        command.add_argument("version", nargs="?")
        command.add_argument("--in", dest="environment", help="the environment")
    elif name == "restore":
        command.add_argument("service")
        command.add_argument("point", nargs="?", help="a rollback point's id (none: list them)")
        command.add_argument("--in", dest="environment", help="the environment")
    elif name == "promote":
        command.add_argument("service")
        command.add_argument("--from", dest="source", help="where it runs now")
    elif name == "flag":
        command.add_argument("key")
        command.add_argument("value", help="a percentage, or " + " | ".join(FLAG_VERBS))
        command.add_argument("target", nargs="*", help="a targeting change's words")
        command.add_argument("--reason", default="", help="why (kill)")
    elif name in ("halt", "lock"):
        if name == "lock":
            command.add_argument("environment")
        command.add_argument("reason", nargs="+")
    elif name == "unlock":
        command.add_argument("environment")
    elif name == "silence":
        command.add_argument("words", nargs="+", metavar="MATCHER... DURATION")
        command.add_argument("--comment", default="")
    elif name == "unsilence":
        command.add_argument("id")


def run_client(args: argparse.Namespace, settings: Settings) -> int:
    token = settings.api_token.get_secret_value()
    if not token:
        print("OPSGATE_API_TOKEN is not set", file=sys.stderr)
        return EXIT_USAGE
    url = (args.url or f"http://{settings.http_addr}").rstrip("/")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        try:
            if args.command == "status":
                return _status(http)
            verb, path, body = request_of(args)
            asked = _requester(args)
            if asked is not None:  # a token of [api_tokens] says who asks by itself
                body["requested_by"] = asked
            response = http.request(verb, path, json=body) if verb != "GET" else http.get(path)
            if args.command in FOLLOWED and args.wait and response.is_success:
                return follow(http, response.json(), args)
            return _show(response, args.json)
        except UsageError as exc:
            print(exc, file=sys.stderr)
            return EXIT_USAGE
        except httpx.HTTPError as exc:
            print(f"cannot reach opsgate at {url}: {exc}", file=sys.stderr)
            return EXIT_REFUSED


class UsageError(ValueError):
    """Arguments the API would refuse anyway; said before asking it."""


def request_of(args: argparse.Namespace) -> tuple[str, str, dict[str, Any]]:
    """(method, path, JSON body) of a client command."""
    body: dict[str, Any]
    if args.command == "deploy":
        body = {"service": args.service, "version": args.version, "emergency": args.emergency}
        body |= {"environment": args.environment} if args.environment else {}
        return "POST", "/api/deployments", body
    if args.command == "rollback":
        body = {"service": args.service}
        body |= {"version": args.version} if args.version else {}
        body |= {"environment": args.environment} if args.environment else {}
        return "POST", "/api/rollbacks", body
    if args.command == "restore":
        where = {"environment": args.environment} if args.environment else {}
        if args.point is None:
            return "GET", "/api/restores?" + urlencode({"service": args.service} | where), {}
        return "POST", "/api/restores", {"service": args.service, "point": args.point} | where
    if args.command == "promote":
        body = {"service": args.service} | ({"from": args.source} if args.source else {})
        return "POST", "/api/promotions", body
    if args.command == "flag":
        return "POST", f"/api/flags/{_segment(args.key)}", _flag_body(args)
    if args.command == "halt":
        return "POST", "/api/halt", {"reason": " ".join(args.reason)}
    if args.command == "lock":
        return "POST", f"/api/locks/{_segment(args.environment)}", {"reason": " ".join(args.reason)}
    if args.command == "unlock":
        return "DELETE", f"/api/locks/{_segment(args.environment)}", {}
    if args.command == "silence":
        if len(args.words) < 2:
            raise UsageError("usage: opsgate silence label=value [...] DURATION (like 2h)")
        matchers, duration = " ".join(args.words[:-1]), args.words[-1]
        return (
            "POST",
            "/api/silences",
            {"matchers": matchers, "duration": duration}
            | ({"comment": args.comment} if args.comment else {}),
        )
    return "DELETE", f"/api/silences/{_segment(args.id.lstrip('#'))}", {}


def _segment(text: str) -> str:
    """One path segment, whatever it holds: `../halt` must not become another route."""
    return quote(text, safe="")


def _flag_body(args: argparse.Namespace) -> dict[str, Any]:
    value = args.value.lower()
    try:
        edit = parse_targeting([value, *args.target])
    except InvalidTargeting as exc:
        raise UsageError(f"opsgate flag KEY {exc}") from None
    if edit is not None:
        return edit.to_json()
    if value == "split":
        if len(args.target) != 1:
            raise UsageError("usage: opsgate flag KEY split control=50,treatment=50")
        try:
            pairs = [part.split("=", 1) for part in args.target[0].split(",") if part]
            return {"action": "split", "split": {name: int(weight) for name, weight in pairs}}
        except ValueError:
            raise UsageError("usage: opsgate flag KEY split control=50,treatment=50") from None
    if value == "include":
        if len(args.target) != 2 or args.target[0] not in ("chat", "user"):
            raise UsageError(f"usage: opsgate flag KEY {value} chat|user ID")
        return {"action": value, "target": {"kind": args.target[0], "id": args.target[1]}}
    if args.target:
        raise UsageError("only targeting changes take more words")
    if value in FLAG_VERBS:
        return {"action": value} | ({"reason": args.reason} if args.reason else {})
    try:
        return {"percent": float(value.rstrip("%"))}
    except ValueError:
        raise UsageError(f"not a percentage or one of {', '.join(FLAG_VERBS)}: {value}") from None


def follow(http: httpx.Client, deployment: dict[str, Any], args: argparse.Namespace) -> int:
    """Poll GET /api/deployments/{id} until the deployment ends (or --timeout); the exit code
    says how it ended. A poll that fails (opsgate restarting) is tried again."""
    deadline = time.monotonic() + args.timeout
    seen = None
    while True:
        if deployment["state"] != seen and not args.json:
            print(_deployment_line(deployment), flush=True)
        seen = deployment["state"]
        if deployment.get("finished_at") is not None or seen in ENDED:
            break
        if time.monotonic() >= deadline:
            if args.json:
                print(json.dumps(deployment))
            print(f"#{deployment['id']} still {seen} after {args.timeout:g} s", file=sys.stderr)
            return EXIT_TIMEOUT
        time.sleep(args.interval)
        try:
            response = http.get(f"/api/deployments/{deployment['id']}")
        except httpx.HTTPError:
            continue
        if response.is_success:
            deployment = response.json()
        elif response.status_code < 500:
            return _show(response, args.json)
    if args.json:
        print(json.dumps(deployment))
    elif deployment.get("error"):
        print(deployment["error"], file=sys.stderr)
    return EXIT_OF_STATE.get(str(seen), EXIT_FAILED)


def _requester(args: argparse.Namespace) -> int | None:
    if args.requested_by is not None:
        return int(args.requested_by)
    text = os.environ.get("OPSGATE_REQUESTED_BY", "")
    return int(text) if text.isdigit() else None


def _show(response: httpx.Response, as_json: bool = False) -> int:
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:200]}
    if response.is_success:
        if as_json:
            print(json.dumps(body))
        elif isinstance(body, dict) and "state" in body:
            print(_deployment_line(body))
        else:
            print(json.dumps(body))
        return EXIT_OK
    error = body.get("error", body) if isinstance(body, dict) else body
    print(f"refused ({response.status_code}): {error}", file=sys.stderr)
    return EXIT_REFUSED


def _status(http: httpx.Client) -> int:
    for path in ("/api/services", "/api/deployments?limit=5", "/api/alerts"):
        response = http.get(path)
        if not response.is_success:
            return _show(response)
    services = http.get("/api/services").json()
    for s in services:
        health = (
            "-" if s["health"] is None else ("ok" if s["health"]["ok"] else s["health"]["reason"])
        )
        print(f"{s['name']:<16} {s['state']:<20} health: {health}")
    for d in http.get("/api/deployments?limit=5").json():
        print(_deployment_line(d))
    alerts = http.get("/api/alerts").json()
    print(f"alerts firing: {sum(len(g['alerts']) for g in alerts)} in {len(alerts)} group(s)")
    return 0


def _deployment_line(d: dict[str, Any]) -> str:
    return f"#{d['id']} {d['kind']} {d['service']} {d['version']}: {d['state']}"
