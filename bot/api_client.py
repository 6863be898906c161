"""`opsgate deploy|rollback|flag|status`: a running opsgate, through its HTTP API, so a CI
pipeline can request a deploy that approvers then sign off in Telegram.

    OPSGATE_API_TOKEN    the API's bearer token
    OPSGATE_HTTP_ADDR    where opsgate listens (or --url http://host:port)
    OPSGATE_REQUESTED_BY the Telegram user id the request is made as (or --as ID)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import httpx

from config.settings import Settings

EXIT_REFUSED = 1
EXIT_USAGE = 2


def add_commands(sub: Any) -> None:
    """The client subcommands, on the `opsgate` parser's subparsers."""
    for name, help_text in (
        ("deploy", "request a deploy: SERVICE VERSION [--to ENVIRONMENT] [--emergency]"),
        ("rollback", "request a rollback: SERVICE [VERSION] [--in ENVIRONMENT]"),
        ("promote", "deploy what runs in one environment to the next: SERVICE [--from ENV]"),
        ("flag", "set a flag's rollout: KEY PERCENT"),
        ("status", "services, deployments in flight, firing alerts"),
    ):
        command = sub.add_parser(name, help=help_text)
        command.add_argument("--url", help="opsgate's HTTP side (default: OPSGATE_HTTP_ADDR)")
        if name != "status":
            command.add_argument("--as", dest="requested_by", type=int, help="your user id")
        if name == "deploy":
            command.add_argument("service")
            command.add_argument("version")
            command.add_argument("--to", dest="environment", help="the environment")
            command.add_argument("--emergency", action="store_true")
        elif name == "rollback":
            command.add_argument("service")
            command.add_argument("version", nargs="?")
            command.add_argument("--in", dest="environment", help="the environment")
        elif name == "promote":
            command.add_argument("service")
            command.add_argument("--from", dest="source", help="where it runs now")
        elif name == "flag":
            command.add_argument("key")
            command.add_argument("percent", type=float)


def run_client(args: argparse.Namespace, settings: Settings) -> int:
    token = settings.api_token.get_secret_value()
    if not token:
        print("OPSGATE_API_TOKEN is not set", file=sys.stderr)
        return EXIT_USAGE
    url = (args.url or f"http://{settings.http_addr}").rstrip("/")
    headers = {"Authorization": f"Bearer {token}"}
    requested_by = getattr(args, "requested_by", None) or _env_requester()
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        try:
            if args.command == "status":
                return _status(http)
            if requested_by is None:
                print("say who asks: --as USER_ID or OPSGATE_REQUESTED_BY", file=sys.stderr)
                return EXIT_USAGE
            if args.command == "deploy":
                body = {"service": args.service, "version": args.version}
                body |= {"requested_by": requested_by, "emergency": args.emergency}
                body |= {"environment": args.environment} if args.environment else {}
                return _show(http.post("/api/deployments", json=body))
            if args.command == "rollback":
                body = {"service": args.service, "requested_by": requested_by}
                body |= {"version": args.version} if args.version else {}
                body |= {"environment": args.environment} if args.environment else {}
                return _show(http.post("/api/rollbacks", json=body))
            if args.command == "promote":
                body = {"service": args.service, "requested_by": requested_by}
                body |= {"from": args.source} if args.source else {}
                return _show(http.post("/api/promotions", json=body))
            body = {"percent": args.percent, "requested_by": requested_by}
            return _show(http.post(f"/api/flags/{args.key}", json=body))
        except httpx.HTTPError as exc:
            print(f"cannot reach opsgate at {url}: {exc}", file=sys.stderr)
            return EXIT_REFUSED


def _env_requester() -> int | None:
    text = os.environ.get("OPSGATE_REQUESTED_BY", "")
    return int(text) if text.isdigit() else None


def _show(response: httpx.Response) -> int:
    body = response.json()
    if response.is_success:
        if "state" in body:
            print(
                f"#{body['id']} {body['kind']} {body['service']} {body['version']}: {body['state']}"
            )
        else:
            print(json.dumps(body))
        return 0
    print(f"refused ({response.status_code}): {body.get('error', body)}", file=sys.stderr)
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
