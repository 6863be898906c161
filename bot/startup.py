"""`opsgate run`'s start-up problems, each turned into one line that says what to fix.

    StartupError            one line for the operator; exit code 1 (the network, another program)
     └── ConfigurationError the fix is a setting or a file; exit code 2

`preflight` checks what commonly fails before anything is written or sent: the database's
place, the HTTP address, then the token with one getMe (a short, bounded wait when the Bot API
cannot be reached). `explain` translates what Opsgate.start may still raise. No line ever
carries the token; the log formatter scrubs it as well.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sqlite3
import tempfile
from pathlib import Path

from telegram import Bot
from telegram.error import BadRequest, InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.request import HTTPXRequest

from config.database import is_postgres_url
from config.opsfile import OpsFileError
from config.settings import BOT_TOKEN_PATTERN, Settings
from services.flags.types import BucketingChangeRefused
from services.records.storage import is_database_error
from services.tls import client_context

UNREACHABLE_WAIT_S = 10.0  # how long an unreachable Bot API is retried before giving up
ATTEMPT_TIMEOUT_S = 5.0


class StartupError(Exception):
    """opsgate cannot start; str() is the one line to show."""

    exit_code = 1


class ConfigurationError(StartupError):
    exit_code = 2


def check_token_format(token: str) -> None:
    if not token:
        raise ConfigurationError(
            "OPSGATE_BOT_TOKEN is not set: get a token from @BotFather and set it in the"
            " environment or in .env"
        )
    if not BOT_TOKEN_PATTERN.match(token):
        raise ConfigurationError(
            "OPSGATE_BOT_TOKEN is not a bot token (expected digits:secret, as @BotFather"
            " gives it, e.g. 123456789:AAH...): copy it again from @BotFather"
        )


class LeadLost(StartupError):
    """This opsgate led a shared PostgreSQL and lost its session: it stopped acting (exit 1;
    started again, it follows)."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"lost the database, and with it the lead ({reason}): stopped acting; another"
            " opsgate takes over, and this one follows when started again"
        )


def ops_file_problem(exc: OpsFileError) -> ConfigurationError:
    return ConfigurationError(
        f"ops file {exc.source}: {len(exc.problems)} problem(s): {'; '.join(exc.problems)}"
        " (fix the file; `opsgate check-config` lists them)"
    )


def database_problem(db: Path, reason: str) -> ConfigurationError:
    return ConfigurationError(
        f"cannot write the database OPSGATE_DB={db} ({reason}): point OPSGATE_DB at a writable"
        " directory (under systemd, one listed in ReadWritePaths=)"
    )


def check_database_place(target: str | Path) -> None:
    """A SQLite file's directory exists (or is made, as Storage does) and takes a new file.
    (A PostgreSQL URL is checked by connecting to it.)"""
    if str(target) == ":memory:" or is_postgres_url(str(target)):
        return
    db = Path(target)
    for above in db.parents:
        if above.exists() and not above.is_dir():
            raise database_problem(db, f"{above} is a file, not a directory")
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        if db.exists():
            with db.open("r+b"):
                pass
        # SQLite writes its journal beside the file: the directory must take new files.
        with tempfile.NamedTemporaryFile(dir=db.parent, prefix=".opsgate-probe-"):
            pass
    except OSError as exc:
        raise database_problem(db, exc.strerror or str(exc)) from None


def http_problem(addr: str, exc: OSError) -> StartupError:
    if exc.errno == errno.EADDRINUSE:
        return StartupError(
            f"the HTTP address {addr} (OPSGATE_HTTP_ADDR) is in use by another program: stop"
            " it, or set OPSGATE_HTTP_ADDR to a free port"
        )
    return ConfigurationError(
        f"cannot listen on {addr} (OPSGATE_HTTP_ADDR): {exc.strerror or exc}: use an address"
        " of this host and a free port, e.g. 127.0.0.1:8080"
    )


def check_http_address(settings: Settings) -> None:
    """Bind and let go at once, as the HTTP side will bind later (SO_REUSEADDR alike)."""
    host = settings.http_host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, settings.http_port))
    except OSError as exc:
        raise http_problem(settings.http_addr, exc) from None


def token_rejected() -> ConfigurationError:
    return ConfigurationError(
        "the Bot API rejected OPSGATE_BOT_TOKEN (getMe: 401/404): copy the token again from"
        " @BotFather (/mybots, API Token), or check OPSGATE_BOT_API_URL"
    )


def unreachable(url: str, exc: TelegramError) -> StartupError:
    return StartupError(
        f"cannot reach the Bot API at {url} (OPSGATE_BOT_API_URL): {exc.message}: check the"
        " network, the proxy or firewall, and the URL (`opsgate doctor` tells more)"
    )


async def check_bot_api(settings: Settings, wait_s: float = UNREACHABLE_WAIT_S) -> None:
    """One getMe; while the Bot API cannot be reached, retried for `wait_s` seconds."""
    url = settings.bot_api_url
    tls = {"verify": client_context()}
    general = HTTPXRequest(
        connect_timeout=ATTEMPT_TIMEOUT_S, read_timeout=ATTEMPT_TIMEOUT_S, httpx_kwargs=tls
    )
    updates = HTTPXRequest(httpx_kwargs=tls)
    token = settings.bot_token.get_secret_value()
    bot = Bot(token, url, request=general, get_updates_request=updates)
    loop = asyncio.get_running_loop()
    deadline, pause = loop.time() + wait_s, 0.5
    try:
        while True:
            try:
                await bot.get_me()
                return
            except InvalidToken:
                raise token_rejected() from None
            except BadRequest as exc:
                raise StartupError(f"the Bot API at {url} refused getMe: {exc.message}") from None
            except (NetworkError, RetryAfter) as exc:  # refused, timed out, DNS, 5xx, 429
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise unreachable(url, exc) from None
                await asyncio.sleep(min(pause, remaining))
                pause *= 2
    finally:
        await general.shutdown()
        await updates.shutdown()


async def preflight(settings: Settings) -> None:
    """The local checks first (quick, and they need no network), then the Bot API."""
    check_database_place(settings.db)
    check_http_address(settings)
    await check_bot_api(settings)


def explain(exc: BaseException) -> StartupError:
    """What Opsgate.start raised, as one line; anything unknown keeps its own words."""
    if isinstance(exc, StartupError):
        return exc
    if isinstance(exc, OpsFileError):
        return ops_file_problem(exc)
    if isinstance(exc, BucketingChangeRefused):
        return ConfigurationError(f"{exc}: the ops file was not taken")
    if isinstance(exc, InvalidToken):
        return token_rejected()
    if isinstance(exc, NetworkError) and not isinstance(exc, BadRequest):
        return StartupError(f"lost the Bot API while starting: {exc.message}: try again")
    if isinstance(exc, sqlite3.OperationalError | PermissionError) or is_database_error(exc):
        reason = " ".join(str(exc).split())  # libpq's messages run over several lines
        return ConfigurationError(f"cannot open the database: {reason}: check OPSGATE_DB")
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return StartupError(
            f"the HTTP address is in use by another program ({exc.strerror}): stop it, or set"
            " OPSGATE_HTTP_ADDR to a free port"
        )
    text = " ".join(str(exc).split()) or "no details"
    return StartupError(f"opsgate stopped on an error: {type(exc).__name__}: {text}")
