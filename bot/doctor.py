"""`opsgate doctor`: is everything opsgate needs reachable, and what to fix if not.

    ops file      it loads, with every problem listed
    token         getMe answers (the token itself is never printed)
    chats         every chat in [chats] and the alert routes can be read by the bot
    hosts         systemctl (or supervisorctl) answers for every service, on its host
    database      SQLite's file or PostgreSQL opens, migrates and takes a write
    bytecode      whether `opsgate run` starts on the optimized bytecode (advice, not a failure)

Exit 0 when all is well, 1 when something needs fixing (each line says what).
"""

from __future__ import annotations

import asyncio

from telegram import Bot
from telegram.error import InvalidToken, TelegramError

from bot.app import file_url_for
from bot.launch import optimized_bytecode_installed
from config.database import is_postgres_url, redact_url
from config.inventory import Service
from config.opsfile import OpsConfig, OpsFileError, load_ops_file
from config.settings import Settings
from services.hosts.registry import Hosts, UnknownHostError, hosts_from_config
from services.records.storage import Storage

OK, BAD, NOTE = "✓", "✗", "·"


class Report:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.failed = False

    def ok(self, text: str) -> None:
        self.lines.append(f"{OK} {text}")

    def bad(self, text: str, fix: str) -> None:
        self.failed = True
        self.lines.append(f"{BAD} {text}\n    fix: {fix}")

    def note(self, text: str, advice: str) -> None:
        """Works as it is; better with the advice taken."""
        self.lines.append(f"{NOTE} {text}\n    advice: {advice}")


async def check_chats(bot: Bot, ops: OpsConfig, report: Report) -> None:
    for chat_id in sorted(ops.group_chat_ids()):
        try:
            chat = await bot.get_chat(chat_id)
        except TelegramError as exc:
            report.bad(
                f"chat {chat_id}: not reachable ({exc})",
                "add the bot to that group (and make it an admin if it must read replies),"
                " or correct the id: /whoami in the chat shows it",
            )
            continue
        report.ok(f"chat {chat_id}: {chat.title or chat.type}")


def control_argv(service: Service) -> list[str]:
    if service.manager == "supervisor":
        assert service.supervisor_config is not None
        return [service.supervisorctl, "-c", service.supervisor_config, "version"]
    return ["systemctl", *(["--user"] if service.user_manager else []), "--version"]


async def check_hosts(ops: OpsConfig, hosts: Hosts, report: Report) -> None:
    seen: set[tuple[str, str]] = set()
    every = [(n, s, h) for n, s in sorted(ops.services.items()) for h in s.all_hosts()]
    for name, service, host in every:
        key = (host, service.manager)
        if key in seen:
            continue
        seen.add(key)
        what = f"host {host} ({service.manager}, for {name})"
        try:
            result = await hosts.get(host).run(control_argv(service), timeout=20)
        except UnknownHostError as exc:
            report.bad(f"{what}: {exc}", "add it under [hosts]")
            continue
        if result.ok:
            first = (result.stdout.strip().splitlines() or ["answers"])[0]
            report.ok(f"{what}: {first[:80]}")
        else:
            detail = (result.stderr or result.stdout).strip().splitlines()
            report.bad(
                f"{what}: {result.summary}: {detail[-1][:160] if detail else 'no output'}",
                "check [hosts] (address, user, prefix) and that the manager is installed",
            )


async def check_database(settings: Settings, report: Report) -> None:
    where = redact_url(settings.db)
    try:
        async with Storage(settings.db) as storage:
            writable = await storage.is_writable()
            version = await storage.version()
    except Exception as exc:  # any failure to open is what this check reports
        fix = "check OPSGATE_DB and its directory"
        if is_postgres_url(settings.db):
            fix = "check OPSGATE_DB, that PostgreSQL runs there and lets this user in"
        report.bad(f"database {where}: {exc}", fix)
        return
    if writable:
        report.ok(f"database {where}: schema version {version}, writable")
    else:
        report.bad(
            f"database {where}: not writable",
            "check the file's permissions, or that the server is not a read-only standby",
        )


async def diagnose(settings: Settings) -> Report:
    report = Report()
    try:
        ops = load_ops_file(settings.config)
    except OpsFileError as exc:
        report.bad(f"ops file {settings.config}: {len(exc.problems)} problem(s)", "see below")
        report.lines += [f"    {problem}" for problem in exc.problems]
        return report
    report.ok(f"ops file {settings.config}: {len(ops.services)} service(s)")
    bot = Bot(
        settings.bot_token.get_secret_value(),
        base_url=settings.bot_api_url,
        base_file_url=file_url_for(settings.bot_api_url),
    )
    try:
        async with bot:  # getMe
            report.ok(f"token: the bot is @{bot.username}")
            await check_chats(bot, ops, report)
    except InvalidToken:
        report.bad("token: refused by the Bot API", "set OPSGATE_BOT_TOKEN from @BotFather")
    except TelegramError as exc:  # its text may carry the URL, and so the token: not shown
        report.bad(
            f"token: the Bot API did not answer ({type(exc).__name__})",
            "check OPSGATE_BOT_API_URL and the network",
        )
    hosts = hosts_from_config(ops.hosts)
    try:
        await check_hosts(ops, hosts, report)
    finally:
        await hosts.aclose()
    await check_database(settings, report)
    check_bytecode(report)
    return report


def check_bytecode(report: Report) -> None:
    if optimized_bytecode_installed():
        report.ok("bytecode: optimized, `opsgate run` starts under python -OO")
    else:
        report.note(
            "bytecode: plain, `opsgate run` runs without -OO",
            "`opsgate precompile` (as the Python environment's owner) saves about 5 MiB",
        )


def run_doctor(settings: Settings) -> int:
    report = asyncio.run(diagnose(settings))
    print("\n".join(report.lines))
    print("all good" if not report.failed else "something needs fixing (see ✗ above)")
    return 1 if report.failed else 0
