"""The ops file: services, environments, people, roles and chats, as typed and checked data.

Loading never stops at the first problem: every problem is reported with its path in the file
(`services.web.health.url: not a valid URL`) so an admin can fix them all in one go.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError, model_validator

from config.alerts import AlertOptions
from config.approvals import ApprovalOptions, EnvironmentApproval
from config.flag_plans import check_plan
from config.integrations import ApiToken, Dashboard, Webhook, check_integrations
from config.inventory import (
    ENVIRONMENT_MISSING,
    FILE_PATH_PATTERN,
    FLAG_KEY_PATTERN,
    HOST_ADDRESS_PATTERN,
    HOST_PORT_PATTERN,
    NAME_PATTERN,
    PREFIX_ARG_PATTERN,
    PROGRAM_PATTERN,
    SSH_USER_PATTERN,
    UNIT_PATTERN,
    AlertmanagerConfig,
    ChatId,
    FilePath,
    FlagDecl,
    FlagKey,
    HostConfig,
    Name,
    SegmentDecl,
    Service,
    UserId,
    check_hosts,
    check_services,
    check_variants,
    segment_decl,
)
from config.permissions import Action, Permissions
from config.retention import RetentionOptions
from config.schedule import DeployWindow, Freeze
from config.strict import StrictModel


class BotOptions(StrictModel):
    # Chats not named in [chats] and private chats of people not in [people] get no answer,
    # except /whoami, which only tells the asker their own ids.
    ignore_unlisted_chats: bool = True
    # How often staged flag plans are checked (gates) and advanced when due.
    plan_check_s: float = Field(default=15.0, ge=0.05, le=3600)
    # Where to keep a flagd flag-definition file of all flags, for teams that run flagd.
    flagd_file: FilePath | None = None


class AlertChats(StrictModel):
    critical: ChatId | None = None
    warning: ChatId | None = None
    info: ChatId | None = None


class Chats(StrictModel):
    deploys: ChatId | None = None
    approvals: ChatId | None = None
    alerts: AlertChats = AlertChats()


class Environment(StrictModel):
    description: str = ""
    requires_approval: bool = False
    # Production: /drill refuses it (an environment called production or prod always is).
    production: bool = False
    # Deploys may start only inside one of these windows (none: any time) and never during a
    # freeze; rollbacks and --emergency deploys are never held back by either.
    windows: list[DeployWindow] = Field(default_factory=list)
    freezes: list[Freeze] = Field(default_factory=list)
    # Who signs off a deploy here (config/approvals.py); `requires_approval` alone means one
    # person with the role admin, no checklist.
    approval: EnvironmentApproval | None = None


class OpsConfig(StrictModel):
    bot: BotOptions = BotOptions()
    people: dict[UserId, Name] = Field(default_factory=dict)
    roles: dict[Name, list[UserId]] = Field(default_factory=dict)
    permissions: Permissions = Permissions()  # which role each action needs
    chats: Chats = Chats()
    environments: dict[Name, Environment] = Field(default_factory=dict)
    approvals: ApprovalOptions = ApprovalOptions()
    alerts: AlertOptions = AlertOptions()
    retention: RetentionOptions = RetentionOptions()
    services: dict[Name, Service] = Field(default_factory=dict)
    hosts: dict[Name, HostConfig] = Field(default_factory=dict)
    # Feature-flag segments: name -> members' targeting keys (user ids or other keys), or
    # { keys = [...], rules = [{ attribute = "chat_type", op = "in", values = [...] }] }.
    segments: dict[Name, Annotated[SegmentDecl, BeforeValidator(segment_decl)]] = Field(
        default_factory=dict
    )
    flags: dict[FlagKey, FlagDecl] = Field(default_factory=dict)
    alertmanager: AlertmanagerConfig | None = None
    api_tokens: dict[Name, ApiToken] = Field(default_factory=dict)  # callers of the API
    webhooks: dict[Name, Webhook] = Field(default_factory=dict)  # outgoing events
    dashboard: Dashboard | None = None  # the web dashboard / Mini App's public address

    # [flags] bucketing: how users are bucketed into rollouts, as flagd's evaluators do
    # (services/flags/bucketing.py); bucketing_force allows a change that re-buckets users.
    flag_bucketing: Literal["flagd-v2", "flagd-v3"] = "flagd-v2"
    flag_bucketing_force: bool = False

    @model_validator(mode="before")
    @classmethod
    def _flag_options(cls, data: object) -> object:
        """`[flags] bucketing = "..."` sits beside the flag tables: values, not flags."""
        if not isinstance(data, dict) or not isinstance(data.get("flags"), dict):
            return data
        flags, data = dict(data["flags"]), dict(data)
        for option in ("bucketing", "bucketing_force"):
            if option in flags and not isinstance(flags[option], dict):
                data[f"flag_{option}"] = flags.pop(option)
        data["flags"] = flags
        return data

    def roles_of(self, user_id: int) -> frozenset[str]:
        return frozenset(role for role, members in self.roles.items() if user_id in members)

    def may(self, user_id: int, action: Action) -> bool:
        """Whether this person holds the role the ops file names for `action`."""
        return self.permissions.allows(action, self.roles_of(user_id))

    def name_of(self, user_id: int) -> str | None:
        return self.people.get(user_id)

    def name_of_actor(self, actor: str) -> str | None:
        """The name of an actor as rows store it (a user id as text); None for others."""
        return self.name_of(int(actor)) if actor.isdigit() else None

    def group_chat_ids(self) -> frozenset[int]:
        alerts = self.chats.alerts
        ids = [self.chats.deploys, self.chats.approvals, alerts.critical, alerts.warning]
        ids.append(alerts.info)
        ids += [route.chat for route in self.alerts.routes]  # where alerts (and Ack) live
        ids.append(self.approvals.escalation_chat)
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


_WRITTEN_AS = {"flag_bucketing": "flags.bucketing", "flag_bucketing_force": "flags.bucketing_force"}


def _format_location(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        part = _WRITTEN_AS.get(part, part) if isinstance(part, str) else part
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
        elif pattern == FLAG_KEY_PATTERN:
            message = "not a valid flag key (lowercase letters, digits, _ - and dots)"
        elif pattern == HOST_PORT_PATTERN:
            message = "not host:port"
        elif pattern == PROGRAM_PATTERN:
            message = "not a valid supervisord program name"
        elif pattern in _HOST_PATTERN_MESSAGES:
            message = _HOST_PATTERN_MESSAGES[pattern]
        else:
            message = "not a valid name (lowercase letters, digits, - and _, at most 32)"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        message = error["msg"].lower()
    elif kind == "value_error":
        message = str(error.get("ctx", {}).get("error", error["msg"]))
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
        if service.environments:
            named = [(f"services.{name}.environments.{env}", env) for env in service.environments]
        else:
            named = [(f"services.{name}.environment", service.home)] * bool(service.environment)
        problems.extend(
            f"{path}: unknown environment {env!r} (known: {', '.join(known_envs)})"
            for path, env in named
            if known_envs and env not in config.environments
        )
    problems.extend(_check_approval_roles(config))
    problems.extend(check_hosts(config.services, config.hosts))
    problems.extend(check_services(config.services))
    problems.extend(check_integrations(config.api_tokens, config.people, config.roles))
    problems.extend(
        f"flags.{key}.service: unknown service {decl.service!r}"
        for key, decl in config.flags.items()
        if decl.service is not None and decl.service not in config.services
    )
    for key, decl in config.flags.items():
        problems += check_variants(f"flags.{key}", decl)
        if decl.plan is not None and decl.variants is not None:
            problems.append(f"flags.{key}.plan: a plan rolls out a boolean flag; set split")
        if decl.plan is not None:
            problems += check_plan(f"flags.{key}.plan", decl.plan, decl.error_rate is not None)
    problems.extend(
        f"flags.{key}.segments[{index}]: unknown segment {name!r}"
        f" (known: {', '.join(sorted(config.segments)) or 'none'})"
        for key, decl in config.flags.items()
        for index, name in enumerate(decl.segments)
        if name not in config.segments
    )
    return problems


def _check_approval_roles(config: OpsConfig) -> list[str]:
    """Every role a policy or an alert route names must exist: a sign-off nobody can give
    never ends, an escalation to nobody reaches no one."""
    named: list[tuple[str, str]] = []
    for env_name, env in config.environments.items():
        if env.approval is not None:
            path = f"environments.{env_name}.approval.roles"
            named += [(f"{path}.{role}", role) for role in env.approval.roles]
        elif env.requires_approval:
            named.append((f"environments.{env_name}.requires_approval", "admin"))
    options = config.approvals
    named += [(f"approvals.checklists.{role}", role) for role in options.checklists]
    named += [(f"approvals.rollback_roles[{i}]", r) for i, r in enumerate(options.rollback_roles)]
    if options.escalation_role is not None:
        named.append(("approvals.escalation_role", options.escalation_role))
    alerts = config.alerts
    for key in ("oncall_role", "backup_role"):
        if (role := getattr(alerts, key)) is not None:
            named.append((f"alerts.{key}", role))
    named += [
        (f"alerts.routes[{i}].mention_role", route.mention_role)
        for i, route in enumerate(alerts.routes)
        if route.mention_role is not None
    ]
    return [
        f"{path}: no role {role!r} in [roles]" for path, role in named if not config.roles.get(role)
    ]


def _unplaced_services(raw: dict[str, Any]) -> list[str]:
    """Services in no environment: found in the raw file, so they are named even when other
    problems stop the checks that need a valid file."""
    services = raw.get("services")
    if not isinstance(services, dict):
        return []
    return [
        f"services.{name}.environment: {ENVIRONMENT_MISSING}"
        for name, service in services.items()
        if isinstance(service, dict) and not {"environment", "environments"} & service.keys()
    ]


# Entries other parts of the file refer to by name: when one fails the schema it is checked
# further as this stand-in, so a reference to it is not reported as unknown as well.
_STAND_INS: dict[str, object] = {
    "people": "x",
    "roles": [1],
    "environments": {},
    "hosts": {},
    "services": {},
}
_PRUNE_ROUNDS = 8


def _prune(
    raw: dict[str, Any], loc: tuple[int | str, ...], done: set[tuple[int | str, ...]]
) -> tuple[int | str, ...] | None:
    """Take the entry (a section's table entry or field) holding a schema error out of `raw`,
    or put a stand-in there, once per round (`done`); returns where, or None when there is
    nothing left to take."""
    if not loc or not isinstance(loc[0], str):
        return None
    if loc[0] not in raw or loc[:1] in done or loc[:2] in done:
        return loc[:2] if loc[:2] in done else loc[:1]  # an earlier error of this round
    section = raw[loc[0]]
    key = loc[1] if len(loc) > 1 else None
    if not isinstance(section, dict) or not isinstance(key, str) or key not in section:
        del raw[loc[0]]
        done.add(loc[:1])
        return loc[:1]
    stand_in = _STAND_INS.get(loc[0])
    if stand_in is None or "[key]" in loc or section[key] == stand_in:
        del section[key]
    else:
        section[key] = stand_in
    done.add(loc[:2])
    return loc[:2]


def _within(path: str, pruned: str) -> bool:
    """Whether `path` is `pruned`, inside it, or holds it."""
    if path == pruned:
        return True
    inner, outer = (path, pruned) if len(path) > len(pruned) else (pruned, path)
    return inner.startswith(outer) and inner[len(outer)] in ".["


def _references_of_valid_parts(raw: dict[str, Any]) -> list[str]:
    """The cross-reference checks of the parts that passed the schema: the failing entries
    are taken out (or stood in for), and nothing is said again about where they were."""
    kept = copy.deepcopy(raw)
    pruned: set[str] = set()
    for _ in range(_PRUNE_ROUNDS):
        try:
            config = OpsConfig.model_validate(kept)
        except ValidationError as exc:
            done: set[tuple[int | str, ...]] = set()
            places = {_prune(kept, tuple(e["loc"]), done) for e in exc.errors()}
            # A broken section others name things in (`hosts = 5`) would make every reference
            # to it look unknown: then the schema errors are the whole answer.
            if None in places or any(p[:1] == p and p[0] in _STAND_INS for p in places if p):
                return []
            pruned.update(_format_location(loc) for loc in places if loc is not None)
            continue
        return [
            problem
            for problem in _check_references(config)
            if not any(_within(problem.split(": ", 1)[0], p) for p in pruned)
        ]
    return []


def parse_ops_text(text: str, source: str = "<ops file>") -> OpsConfig:
    """Parse and check an ops file's text; raises OpsFileError listing every problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise OpsFileError(source, [f"(syntax): {exc}"]) from None
    try:
        config = OpsConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [_format_error(e) for e in exc.errors()]
        problems += _unplaced_services(raw) + _references_of_valid_parts(raw)
        raise OpsFileError(source, list(dict.fromkeys(problems))) from None
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
