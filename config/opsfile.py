"""The ops file: services, environments, people, roles and chats, as typed and checked data.

Loading never stops at the first problem: every problem is reported with its path in the file
(`services.web.health.url: not a valid URL`) so an admin can fix them all in one go.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    StringConstraints,
    ValidationError,
)

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
UNIT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9:_.@\\-]{0,200}\.(service|socket|target|timer)$"

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
UnitName = Annotated[str, StringConstraints(pattern=UNIT_PATTERN)]
ChatId = int
UserId = Annotated[int, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BotOptions(_Strict):
    # Chats not named in [chats] and private chats of people not in [people] get no answer,
    # except /whoami, which only tells the asker their own ids.
    ignore_unlisted_chats: bool = True


class AlertChats(_Strict):
    critical: ChatId | None = None
    warning: ChatId | None = None
    info: ChatId | None = None


class Chats(_Strict):
    deploys: ChatId | None = None
    approvals: ChatId | None = None
    alerts: AlertChats = AlertChats()


class Environment(_Strict):
    description: str = ""


class HttpHealth(_Strict):
    url: HttpUrl
    expect_status: int = Field(default=200, ge=100, le=599)
    timeout_s: float = Field(default=5.0, gt=0, le=120)


# Hosts: where a service's commands run. These patterns keep config text from ever being read as
# an ssh option (a leading "-") or needing shell quoting.
HOST_ADDRESS_PATTERN = r"^(?:[A-Za-z0-9][A-Za-z0-9.-]{0,252}|[0-9A-Fa-f:.]{2,45})$"
SSH_USER_PATTERN = r"^[a-z_][a-z0-9_.-]{0,31}$"
PREFIX_ARG_PATTERN = r"^[A-Za-z0-9_./:=@%+,-]{1,200}$"
FILE_PATH_PATTERN = r"^/[A-Za-z0-9_./@+,-]{1,255}$"
LOCAL_HOST = "local"

HostAddress = Annotated[str, StringConstraints(pattern=HOST_ADDRESS_PATTERN)]
SshUser = Annotated[str, StringConstraints(pattern=SSH_USER_PATTERN)]
PrefixArg = Annotated[str, StringConstraints(pattern=PREFIX_ARG_PATTERN)]
FilePath = Annotated[str, StringConstraints(pattern=FILE_PATH_PATTERN)]


class HostConfig(_Strict):
    # Without an address the host is this machine, usually behind a prefix (["sudo", "-n"]).
    address: HostAddress | None = None
    user: SshUser | None = None
    port: int = Field(default=22, ge=1, le=65535)
    identity_file: FilePath | None = None
    known_hosts_file: FilePath | None = None
    accept_new_host_keys: bool = False
    connect_timeout_s: int = Field(default=10, ge=1, le=300)
    multiplex: bool = True
    prefix: list[PrefixArg] = []


class Service(_Strict):
    environment: Name
    unit: UnitName
    description: str = ""
    health: HttpHealth | None = None
    host: Name = LOCAL_HOST


class OpsConfig(_Strict):
    bot: BotOptions = BotOptions()
    people: dict[UserId, Name] = {}
    roles: dict[Name, list[UserId]] = {}
    chats: Chats = Chats()
    environments: dict[Name, Environment] = {}
    services: dict[Name, Service] = {}
    hosts: dict[Name, HostConfig] = {}

    def roles_of(self, user_id: int) -> frozenset[str]:
        return frozenset(role for role, members in self.roles.items() if user_id in members)

    def name_of(self, user_id: int) -> str | None:
        return self.people.get(user_id)

    def group_chat_ids(self) -> frozenset[int]:
        alerts = self.chats.alerts
        ids = [self.chats.deploys, self.chats.approvals, alerts.critical, alerts.warning]
        ids.append(alerts.info)
        return frozenset(i for i in ids if i is not None)

    def is_listed_chat(self, chat_id: int) -> bool:
        """Group chats named in [chats], and private chats (chat id = user id) of people."""
        return chat_id in self.group_chat_ids() or chat_id in self.people


class OpsFileError(Exception):
    """The ops file cannot be used; `problems` holds one `path: message` line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(problems))


# Pydantic's wording is written for programmers; these are for the person editing the file.
_MESSAGES: dict[str, str] = {
    "url_parsing": "not a valid URL",
    "url_scheme": "not a valid URL (use http or https)",
    "url_type": "not a valid URL",
    "int_parsing": "not a whole number",
    "int_type": "not a whole number",
    "string_type": "not a text value",
    "bool_type": "not true or false",
    "bool_parsing": "not true or false",
    "list_type": "not a list",
    "dict_type": "not a table",
    "model_type": "not a table",
    "model_attributes_type": "not a table",
    "missing": "required but missing",
    "extra_forbidden": "unknown key",
    "float_parsing": "not a number",
    "float_type": "not a number",
}


def _format_location(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if part == "[key]":
            continue  # pydantic marks dict-key errors with this; the key itself is the path
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + str(part)
    return path or "(top level)"


_HOST_PATTERN_MESSAGES: dict[str, str] = {
    HOST_ADDRESS_PATTERN: "not a valid host name or IP address",
    SSH_USER_PATTERN: "not a valid user name",
    PREFIX_ARG_PATTERN: "not a plain command word (letters, digits and _./:=@%+,-)",
    FILE_PATH_PATTERN: "not an absolute path without spaces or special characters",
}


def _format_error(error: Any) -> str:
    kind = error["type"]
    loc = tuple(error["loc"])
    if kind == "string_pattern_mismatch":
        pattern = error.get("ctx", {}).get("pattern")
        if pattern == UNIT_PATTERN:
            message = "not a valid systemd unit name (e.g. web.service)"
        elif pattern in _HOST_PATTERN_MESSAGES:
            message = _HOST_PATTERN_MESSAGES[pattern]
        else:
            message = "not a valid name (lowercase letters, digits, - and _, at most 32)"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        message = error["msg"].lower()
    elif "[key]" in loc and kind == "int_parsing":
        message = "not a Telegram user id (a whole number)"
    else:
        message = _MESSAGES.get(kind, error["msg"])
    return f"{_format_location(loc)}: {message}"


def _check_references(config: OpsConfig) -> list[str]:
    problems: list[str] = []
    for role, members in config.roles.items():
        for index, user_id in enumerate(members):
            if user_id not in config.people:
                problems.append(f"roles.{role}[{index}]: {user_id} is not listed in [people]")
    known_envs = sorted(config.environments)
    for name, service in config.services.items():
        if known_envs and service.environment not in config.environments:
            problems.append(
                f"services.{name}.environment: unknown environment {service.environment!r}"
                f" (known: {', '.join(known_envs)})"
            )
    problems.extend(_check_hosts(config))
    return problems


def _check_hosts(config: OpsConfig) -> list[str]:
    problems: list[str] = []
    ssh_only = ("user", "identity_file", "known_hosts_file")
    for name, host in config.hosts.items():
        if name == LOCAL_HOST:
            problems.append(f"hosts.{name}: the name {LOCAL_HOST!r} is reserved for this machine")
        if host.address is None:
            problems.extend(
                f"hosts.{name}.{key}: only used over ssh (set address)"
                for key in ssh_only
                if getattr(host, key) is not None
            )
    known_hosts = ", ".join(sorted({LOCAL_HOST, *config.hosts}))
    for name, service in config.services.items():
        if service.host != LOCAL_HOST and service.host not in config.hosts:
            problems.append(
                f"services.{name}.host: unknown host {service.host!r} (known: {known_hosts})"
            )
    return problems


def parse_ops_text(text: str, source: str = "<ops file>") -> OpsConfig:
    """Parse and check an ops file's text; raises OpsFileError listing every problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise OpsFileError(source, [f"(syntax): {exc}"]) from None
    try:
        config = OpsConfig.model_validate(raw)
    except ValidationError as exc:
        raise OpsFileError(source, [_format_error(e) for e in exc.errors()]) from None
    problems = _check_references(config)
    if problems:
        raise OpsFileError(source, problems)
    return config


def load_ops_file(path: Path) -> OpsConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise OpsFileError(str(path), [f"(file): cannot read: {exc.strerror}"]) from None
    return parse_ops_text(text, str(path))


def is_valid_name(text: str) -> bool:
    """Strict check for names that come from chat text (services, roles, environments)."""
    return re.fullmatch(NAME_PATTERN, text) is not None
