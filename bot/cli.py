"""The `opsgate` command: run, demo, check-config, doctor, migrate; and a client of a running
opsgate's API (deploy, rollback, promote, flag, halt, lock, unlock, silence, unsilence,
status)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import SecretStr, ValidationError

from bot.api_client import COMMANDS as CLIENT_COMMANDS
from bot.api_client import add_commands, run_client
from bot.logs import configure_logging
from bot.runner import Opsgate
from bot.sdnotify import notify, start_watchdog, stop_watchdog
from bot.startup import LeadLost, check_token_format, explain, preflight
from config.database import redact_url
from config.opsfile import OpsFileError, load_ops_file
from config.settings import Settings
from services.alerts.engine import routing_warnings
from services.container import VERSION
from services.records.storage import Storage, StorageError, is_database_error

log = logging.getLogger("opsgate")

EXIT_ERROR = 1
EXIT_BAD_CONFIG = 2


def check_config(path: Path) -> int:
    try:
        ops = load_ops_file(path)
    except OpsFileError as exc:
        print(f"{path}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    print(
        f"{path}: OK ({len(ops.services)} service(s), {len(ops.environments)} environment(s), "
        f"{len(ops.people)} people, {len(ops.roles)} role(s))"
    )
    for warning in routing_warnings(ops):
        print(f"  warning: {warning}")
    return 0


async def serve_until_signalled(opsgate: Opsgate) -> None:
    await preflight(opsgate.settings)  # each common problem as one line, before any write
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watchdog = None
    try:
        # A follower waits in start() for the lead: a signal must still stop it.
        starting = asyncio.create_task(opsgate.start())
        signalled = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, signalled}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            log.info("signal received while following, shutting down")
            return
        starting.result()
        notify("READY=1")  # Type=notify: systemd counts opsgate started only now
        watchdog = start_watchdog()
        lost = asyncio.create_task(opsgate.lost_lead.wait())
        await asyncio.wait({signalled, lost}, return_when=asyncio.FIRST_COMPLETED)
        if opsgate.lost_lead.is_set():
            raise LeadLost(opsgate.lost_reason)
        log.info("signal received, shutting down")
    finally:
        notify("STOPPING=1")
        await stop_watchdog(watchdog)
        await opsgate.stop()


def run(settings: Settings) -> int:
    configure_logging(settings.log_level, settings.secrets(), settings.log_format)
    try:
        check_token_format(settings.bot_token.get_secret_value())  # before any network call
        ops = load_ops_file(settings.config)
        asyncio.run(serve_until_signalled(Opsgate(settings, ops)))
    except Exception as exc:
        # One line with the fix; the traceback only at DEBUG. The formatter scrubs secrets
        # from both (PTB puts the token in InvalidToken's text).
        problem = explain(exc)
        log.error("%s", problem)
        log.debug("the error in full", exc_info=exc)
        return problem.exit_code
    return 0


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        # Never echo input values: they may be secrets.
        problems = [
            f"OPSGATE_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        ]
        print(
            f"bad settings: {'; '.join(problems)} (fix them in the environment or .env;"
            " `opsgate run -h` lists them)",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_BAD_CONFIG) from None


def settings_help() -> str:
    """`run -h`'s list of the environment variables it reads, one line each."""
    lines = ["environment variables (also read from ./.env):"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "" if isinstance(default, SecretStr) or default in ("", None) else default
        suffix = f" (default: {shown})" if shown != "" else ""
        lines.append(f"  OPSGATE_{name.upper():<16} {field.description}{suffix}")
    lines.append(
        f"  {'OPSGATE_OPTIMIZE':<24} 0: never restart under -OO (see `precompile`; not read"
        " from .env)"
    )
    return "\n".join(lines)


def migrate(settings: Settings) -> int:
    """`opsgate migrate`: open the database (which migrates it) and say where it stands."""

    async def to_latest() -> int:
        storage = Storage(settings.db)
        async with storage:
            return await storage.version()

    where = redact_url(settings.db)
    try:
        version = asyncio.run(to_latest())
    except (StorageError, OSError) as exc:
        print(f"cannot migrate the database {where}: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except Exception as exc:
        if not is_database_error(exc):
            raise
        print(f"cannot migrate the database {where}: {exc}: check OPSGATE_DB", file=sys.stderr)
        return EXIT_BAD_CONFIG
    print(f"database {where}: schema version {version} (this opsgate's latest)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="opsgate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"opsgate {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "run",
        help="run the bot (settings from the environment / .env)",
        description="Run the bot until SIGTERM or SIGINT. Exit 2: a configuration problem,"
        " 1: another start-up problem; either is one line on stderr that says what to fix.",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check = sub.add_parser("check-config", help="validate an ops file")
    check.add_argument("file", nargs="?", type=Path, help="default: $OPSGATE_CONFIG")
    demo = sub.add_parser("demo", help="offline demo: sandbox + bot + terminal chat")
    demo.add_argument("--script", type=Path, help="play a scripted conversation and exit")
    sub.add_parser("doctor", help="check the token, chats, hosts and database; say what to fix")
    sub.add_parser(
        "migrate",
        help="bring the database (OPSGATE_DB) to this opsgate's schema, then exit",
        description="Apply the schema migrations this opsgate has and the database lacks; a"
        " failed step leaves the database at its last good version. `run` does the same at"
        " start; this is for doing it first, e.g. once before starting several opsgates on"
        " one PostgreSQL.",
    )
    sub.add_parser(
        "precompile",
        help="write the optimized bytecode `run` uses (about 5 MiB less memory); after installing",
        description="Compile the standard library, the environment's packages and opsgate with"
        " -OO. `run` then starts itself again under python -OO (docstrings stay on disk);"
        " OPSGATE_OPTIMIZE=0 turns that off. Run it again after each upgrade.",
    )
    add_commands(sub)
    args = parser.parse_args(argv)

    if args.command == "doctor":
        from bot.doctor import run_doctor

        return run_doctor(load_settings())
    if args.command == "migrate":
        return migrate(load_settings())
    if args.command == "precompile":
        from bot.launch import precompile

        return precompile()
    if args.command in CLIENT_COMMANDS:
        return run_client(args, load_settings())
    if args.command == "check-config":
        return check_config(args.file or load_settings().config)
    if args.command == "run":
        return run(load_settings())
    if args.command == "demo":
        from bot.dev.demo import run_demo

        return run_demo(args.script)
    parser.error(f"unknown command {args.command}")
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
