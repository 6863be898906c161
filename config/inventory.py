"""Where things run and how they are checked: hosts, services and their health probes.

Patterns here are strict on purpose: config text must never turn into a command-line option
(a leading "-") or need shell quoting on its way to a host.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    HttpUrl,
    StringConstraints,
    model_validator,
)

from config.canary import CanaryConfig, check_canary
from config.flag_plans import PlanDecl
from config.strict import StrictModel

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}\Z"
UNIT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9:_.@\\-]{0,200}\.(service|socket|target|timer)\Z"

# `{address}` stands for each host's address in a fleet (see Service.hosts).
HOST_PORT_PATTERN = r"^(?:[A-Za-z0-9.:\[\]-]{1,253}|\{address\}):[0-9]{1,5}\Z"

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
HostPort = Annotated[str, StringConstraints(pattern=HOST_PORT_PATTERN)]
UnitName = Annotated[str, StringConstraints(pattern=UNIT_PATTERN)]
PROGRAM_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z"
ProgramName = Annotated[str, StringConstraints(pattern=PROGRAM_PATTERN)]
ChatId = int
UserId = Annotated[int, Field(gt=0)]


# Feature-flag keys: the OFREP provider puts them into URL paths unencoded, so no `/`, no
# `..`, nothing that needs escaping. Lowercase, digits, `_`, `-`, dots between parts.
FLAG_KEY_PATTERN = r"^[a-z][a-z0-9_-]{0,62}(\.[a-z0-9_-]{1,62}){0,3}\Z"
FlagKey = Annotated[str, StringConstraints(pattern=FLAG_KEY_PATTERN, max_length=128)]


# The seeds' safety numbers, defaults where the data to check them exists (see where used).
SEEDS_LATENCY_S = 5.0  # a health URL's answer slower than this is a failed check
SEEDS_MEMORY_PERCENT = 90.0  # of the host's memory, during the watch, when psutil sees the pid
SEEDS_ERROR_RATIO = 0.05  # errors over requests, when a metrics source is configured
OPS_FILE = "ops file"


METRIC_PATTERN = r"^[a-zA-Z_:][a-zA-Z0-9_:]{0,199}\Z"
Metric = Annotated[str, StringConstraints(pattern=METRIC_PATTERN)]


class ErrorRateGate(StrictModel):
    """Errors over requests, from a Prometheus-format endpoint, between two plan checks."""

    url: HttpUrl
    errors: Metric  # e.g. http_requests_total, narrowed by errors_match
    total: Metric
    errors_match: dict[str, str] = {}  # label -> regex, e.g. { code = "5.." }
    max_ratio: float = Field(default=SEEDS_ERROR_RATIO, gt=0, le=1)  # the seeds' 5%
    timeout_s: float = Field(default=5.0, gt=0, le=60)

    @property
    def max_ratio_source(self) -> str:
        if "max_ratio" in self.model_fields_set:
            return OPS_FILE
        return "default: the seeds' 5% error rate"


class AlertmanagerConfig(StrictModel):
    """The team's Alertmanager: staged plans hold while it has a critical alert firing for the
    flag's service (matched on these labels)."""

    url: HttpUrl
    service_label: str = "service"
    severity_label: str = "severity"
    critical: str = "critical"


ChatType = Literal["private", "group", "supergroup", "channel"]
RuleOp = Literal["in", "not_in", "starts_with", "ends_with"]
AttributeName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")]
RuleValue = Annotated[str, StringConstraints(min_length=1, max_length=256)]


def _rule_value_text(value: object) -> object:
    # Chat ids are whole numbers in TOML; the engine compares attributes as text.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class SegmentRule(StrictModel):
    """A test on one evaluation-context attribute: `chat_type in [group, supergroup]`."""

    attribute: AttributeName
    op: RuleOp = "in"
    values: list[Annotated[RuleValue, BeforeValidator(_rule_value_text)]] = Field(min_length=1)


class SegmentDecl(StrictModel):
    """Who is in a segment: these targeting keys, or a context matching every rule."""

    keys: list[Annotated[RuleValue, BeforeValidator(_rule_value_text)]] = []
    rules: list[SegmentRule] = []


def segment_decl(value: object) -> object:
    """A segment written as a plain list is its keys."""
    if isinstance(value, list):
        return {"keys": value}
    if not isinstance(value, dict):
        raise ValueError("a list of targeting keys, or a table of keys and rules")
    return value


TargetingKey = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^\S+\Z")]


VariantName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}\Z")]
VariantValue = str | int | float | dict[str, object] | list[object]


def check_variants(path: str, decl: FlagDecl) -> list[str]:
    """A multi-variant flag names its split's variants and a default among its variants."""
    if decl.variants is None:
        return [f"{path}.{name}: only with variants" for name in ("split", "default")
                if getattr(decl, name) is not None]  # fmt: skip
    problems = []
    kinds = {
        "number" if isinstance(v, int | float) else type(v).__name__ for v in decl.variants.values()
    }
    if len(kinds) > 1:
        problems.append(f"{path}.variants: values of one type (strings, numbers or tables)")
    if decl.default is None or decl.default not in decl.variants:
        problems.append(f"{path}.default: one of the variants ({', '.join(decl.variants)})")
    if not decl.split or not sum(decl.split.values()):
        problems.append(f"{path}.split: weights of the variants, e.g. {{ a = 50, b = 50 }}")
    else:
        problems += [
            f"{path}.split.{name}: not a variant"
            for name in decl.split
            if name not in decl.variants
        ]
    return problems


class FlagDecl(StrictModel):
    """A flag the ops file declares; its live state (rollout, targeting) is in the database.
    The targeting here is the flag's first: applied when the flag is created, then changed
    from the chat, the API or the CLI."""

    description: str = ""
    service: Name | None = None  # whose health gates this flag's staged plans
    error_rate: ErrorRateGate | None = None
    allow: list[TargetingKey] = []  # always on
    segments: list[Name] = []  # members always on
    chat_types: list[ChatType] = []  # only chats of these types ([]: all)
    exclude_users: list[TargetingKey] = []
    exclude_chats: list[Annotated[int, Field(lt=0)] | Annotated[int, Field(gt=0)]] = []
    plan: PlanDecl | None = None  # phases with their own duration and criteria
    # A multi-variant flag: its values (strings, numbers or JSON tables, all of one type),
    # the weights of its split, and the variant served when off, excluded or in error.
    variants: dict[VariantName, VariantValue] | None = None
    split: dict[VariantName, Annotated[int, Field(ge=0, le=1_000_000)]] | None = None
    default: VariantName | None = None
    # A change taking the rollout above this needs a second person's approval (four eyes).
    four_eyes_above: float | None = Field(default=None, ge=0, lt=100)


class HealthConfig(StrictModel):
    """Exactly one probe (url, tcp or command), and how patient to be with it."""

    url: HttpUrl | None = None
    tcp: HostPort | None = None
    command: list[Annotated[str, StringConstraints(min_length=1, max_length=500)]] | None = None
    expect_status: int = Field(default=200, ge=100, le=599)
    # Top-level JSON fields the answer must carry, e.g. { status = "healthy" }.
    expect_json: dict[str, str | int | bool] = {}
    latency_limit_s: float | None = Field(default=None, gt=0, le=120)
    timeout_s: float = Field(default=5.0, gt=0, le=120)
    attempts: int = Field(default=3, ge=1, le=20)
    interval_s: float = Field(default=1.0, ge=0, le=60)
    # After a restart: healthy this many times in a row, within this long.
    consecutive: int = Field(default=2, ge=1, le=50)
    # After a rollback (by hand or by itself): the target ran healthy before, so one good
    # answer is enough by default; every extra one is time production stays broken.
    rollback_consecutive: int = Field(default=1, ge=1, le=50)
    within_s: float = Field(default=30.0, gt=0, le=600)

    @model_validator(mode="after")
    def _seeds_latency(self) -> HealthConfig:
        """A URL probe without a latency limit gets the seeds' 5 s; `model_fields_set` still
        tells it from one the ops file set (see latency_limit_source)."""
        if self.url is not None and self.latency_limit_s is None:
            self.__dict__["latency_limit_s"] = SEEDS_LATENCY_S  # frozen: set once, here
        return self

    @property
    def latency_limit_source(self) -> str:
        if "latency_limit_s" in self.model_fields_set:
            return OPS_FILE
        return "default: the seeds' 5 s response time" if self.latency_limit_s else ""

    def needed(self, *, rollback: bool) -> int:
        """Healthy answers in a row a restart must give: after a rollback, or a deploy."""
        return self.rollback_consecutive if rollback else self.consecutive

    def probes(self) -> list[str]:
        return [k for k in ("url", "tcp", "command") if getattr(self, k) is not None]


# Hosts: where a service's commands run. These patterns keep config text from ever being read as
# an ssh option (a leading "-") or needing shell quoting.
HOST_ADDRESS_PATTERN = r"^(?:[A-Za-z0-9][A-Za-z0-9.-]{0,252}|[0-9A-Fa-f:.]{2,45})\Z"
SSH_USER_PATTERN = r"^[a-z_][a-z0-9_.-]{0,31}\Z"
PREFIX_ARG_PATTERN = r"^[A-Za-z0-9_./:=@%+,-]{1,200}\Z"
FILE_PATH_PATTERN = r"^/[A-Za-z0-9_./@+,-]{1,255}\Z"
LOCAL_HOST = "local"

HostAddress = Annotated[str, StringConstraints(pattern=HOST_ADDRESS_PATTERN)]
SshUser = Annotated[str, StringConstraints(pattern=SSH_USER_PATTERN)]
PrefixArg = Annotated[str, StringConstraints(pattern=PREFIX_ARG_PATTERN)]
FilePath = Annotated[str, StringConstraints(pattern=FILE_PATH_PATTERN)]


class HostConfig(StrictModel):
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


HookArgv = Annotated[
    list[Annotated[str, StringConstraints(min_length=1, max_length=500)]], Field(min_length=1)
]


class DeployHooks(StrictModel):
    """The team's own commands (argv lists, no shell) around a deploy and a rollback; they run
    on the service's host in the release's directory, with OPSGATE_* context in the env."""

    pre_deploy: list[HookArgv] = []  # failing: the deploy stops before anything changed
    post_deploy: list[HookArgv] = []  # failing: verification failed, so it rolls back
    pre_rollback: list[HookArgv] = []  # failing: reported, the rollback goes on
    post_rollback: list[HookArgv] = []  # failing: the rollback ends rollback_failed
    hook_timeout_s: float = Field(default=120, gt=0, le=3600)  # per command


Port = Annotated[int, Field(ge=1, le=65535)]
# "3.11" or "3.11.4": what `min_python` compares the interpreter's version with.
VERSION_NUMBER_PATTERN = r"^[0-9]{1,3}(\.[0-9]{1,4}){0,2}\Z"


class BlueGreenConfig(StrictModel):
    """Two instances of a systemd template unit (UNIT@blue, UNIT@green) on their own ports
    behind a proxy: the idle colour starts with the new release and is verified on its port,
    the upstream file is rewritten to point at it, `reload` makes the proxy read it, and after
    `drain_s` (in-flight requests finish) the old colour stops.

    opsgate writes ROOT/blue.env and ROOT/green.env (PORT=..., OPSGATE_COLOR=...) and links
    ROOT/blue and ROOT/green to their releases; the unit uses EnvironmentFile=ROOT/%i.env and
    runs from ROOT/%i."""

    blue_port: Port
    green_port: Port
    # Each colour's own health check: "{port}" becomes the colour's port.
    health_url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]*\{port\}[^\s]*\Z")]
    upstream_file: FilePath
    # "{service}" and "{port}" are replaced; the text is written whole, then `reload` runs.
    upstream_template: Annotated[str, StringConstraints(min_length=1, max_length=2000)] = (
        "upstream {service} { server 127.0.0.1:{port}; }\n"
    )
    reload: HookArgv = ["nginx", "-s", "reload"]
    drain_s: float = Field(default=2.0, ge=0, le=300)


class PreChecks(StrictModel):
    """What must hold on the host before a deploy changes anything."""

    min_free_disk_mib: int = Field(default=100, ge=0)  # under the release root
    min_available_memory_mib: int | None = Field(default=None, ge=1)  # MemAvailable
    python: HookArgv | None = None  # the release's interpreter, e.g. ["/usr/bin/python3"]
    min_python: Annotated[str, StringConstraints(pattern=VERSION_NUMBER_PATTERN)] | None = None
    # Named commands that must exit 0, e.g. db = ["pg_isready", "-h", "db.internal"].
    commands: dict[Name, HookArgv] = {}
    require_healthy: bool = False  # refuse while the running release fails its health check
    timeout_s: float = Field(default=30, gt=0, le=600)


LONGEST_WATCH_S = 72 * 3600  # the seeds' longest watch after a release


def memory_percent_limit(deploy: DeployConfig, local: bool) -> tuple[float | None, str]:
    """The watch's memory limit in % of the host and where it came from: the ops file, else
    the seeds' 90% when the service runs on this machine (psutil sees its processes)."""
    if deploy.max_memory_percent is not None:
        return deploy.max_memory_percent, OPS_FILE
    if local:
        return SEEDS_MEMORY_PERCENT, "default: the seeds' 90% memory, on this host"
    return None, ""


class DeployConfig(StrictModel):
    """How a service is released: where, from what, how it is built and how it is watched."""

    root: FilePath  # holds releases/<version>, current, previous, rollback/
    git: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None
    ref: Annotated[str, StringConstraints(max_length=100)] | None = None  # default: the version
    # A local directory or tarball per version; `{version}` is replaced.
    artifact: (
        Annotated[str, StringConstraints(pattern=r"^/[A-Za-z0-9_./@+,{}-]{1,255}\Z")] | None
    ) = None
    build: list[list[Annotated[str, StringConstraints(min_length=1, max_length=500)]]] = []
    build_timeout_s: float = Field(default=600, gt=0, le=7200)
    keep: int = Field(default=5, ge=2, le=100)
    config_files: list[FilePath] = []  # copied into every rollback point
    sqlite_db: FilePath | None = None  # backed up (online) into every rollback point
    # After verifying: watch this long (the seeds: 24-72 h after a release). A watch longer
    # than the long-watch threshold (10 min) goes on after the deploy succeeded, as rows.
    watch_s: float = Field(default=60, ge=0, le=LONGEST_WATCH_S)
    background_watch_after_s: float = Field(default=600, gt=0, le=LONGEST_WATCH_S)
    watch_interval_s: float = Field(default=5, gt=0, le=300)
    max_failed_checks: int = Field(default=3, ge=1, le=100)  # in a row, during the watch
    max_restarts: int = Field(default=0, ge=0, le=100)  # NRestarts growth allowed in the watch
    # During the watch (the seeds: 90% memory, 5% errors; 5 s responses: health latency_limit_s)
    max_memory_mib: int | None = Field(default=None, ge=1)  # RSS of the main process + children
    # Of the host's memory; unset, the seeds' 90% where psutil can see the process (this host).
    max_memory_percent: float | None = Field(default=None, gt=0, le=100)
    error_rate: ErrorRateGate | None = None  # read from a Prometheus-format endpoint
    strategy: Literal["restart", "blue-green", "canary"] = "restart"
    blue_green: BlueGreenConfig | None = None  # blue-green's slots; a canary uses them too
    canary: CanaryConfig | None = None
    # In the new release's directory, after the rollback point (with its database backup) and
    # before the switch; a failure stops the deploy (the backup is never restored by itself:
    # the running release may have written since).
    migrate: list[HookArgv] = []
    # After the health checks pass: each must exit 0, or the release is rolled back.
    smoke: list[HookArgv] = []
    prechecks: PreChecks = PreChecks()
    hooks: DeployHooks = DeployHooks()


ENVIRONMENT_MISSING = "required but missing (or list environments)"
BATCH_PATTERN = r"^(100|[1-9][0-9]?)%\Z"


class Drain(StrictModel):
    """How a host stops getting requests before its restart, and gets them again once healthy.

    Either an nginx upstream file on `proxy_host` that opsgate rewrites (every host of the
    environment as `server ADDRESS:PORT`, the drained one marked `down`) and reloads, or the
    team's own commands, run on the host being drained (OPSGATE_HOST and OPSGATE_ADDRESS in
    their environment)."""

    upstream_file: FilePath | None = None
    port: Port | None = None  # the service's port on every host
    proxy_host: Name = LOCAL_HOST
    # "{service}" and "{servers}" are replaced; the text is written whole, then `reload` runs.
    upstream_template: Annotated[str, StringConstraints(min_length=1, max_length=2000)] = (
        "upstream {service} {\n{servers}}\n"
    )
    reload: HookArgv = ["nginx", "-s", "reload"]
    out: HookArgv | None = None  # the command way: take this host out
    back_in: HookArgv | None = None  # ... and put it back
    settle_s: float = Field(default=1.0, ge=0, le=300)  # after taking out: in-flight ends


def _batch(value: object) -> int | str:
    """A number of hosts (1 or more) or a percentage of the fleet ("25%")."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, str) and re.fullmatch(BATCH_PATTERN, value):
        return value
    raise ValueError('a number of hosts (1 or more) or a percentage like "25%"')


class Rollout(StrictModel):
    """How a deploy goes over several hosts: in batches, each host verified healthy before the
    next batch starts; the first failure past `max_failed_hosts` stops it and the hosts
    already switched go back."""

    batch: Annotated[int | str, BeforeValidator(_batch)] = 1
    canary: bool = False  # the first batch is one host, whatever `batch` says
    pause_s: float = Field(default=0, ge=0, le=3600)  # between batches
    max_failed_hosts: int = Field(default=0, ge=0)
    parallel: int = Field(default=4, ge=1, le=64)  # hosts built / rolled back at once
    drain: Drain | None = None

    def batch_size(self, hosts: int) -> int:
        if isinstance(self.batch, str):
            return max(1, hosts * int(self.batch[:-1]) // 100)
        return self.batch

    def batches(self, hosts: list[str]) -> list[list[str]]:
        """The hosts in the order they switch, batch by batch."""
        rest, size = list(hosts), self.batch_size(len(hosts))
        first = rest[:1] if self.canary and rest else []
        rest = rest[len(first) :]
        return ([first] if first else []) + [rest[i : i + size] for i in range(0, len(rest), size)]


class ServiceEnvironment(StrictModel):
    """Where a service runs in one environment, and what a deploy there must follow."""

    hosts: Annotated[list[Name], Field(min_length=1)]
    # The same version must have succeeded there first, and run there this long.
    promote_from: Name | None = None
    min_soak_s: float = Field(default=0, ge=0, le=30 * 86400)
    rollout: Rollout | None = None  # else the service's


class Service(StrictModel):
    # One environment and one host (or `hosts`), or per-environment hosts in `environments`
    # (listed in promotion order: staging before production).
    environment: Name | None = None
    environments: dict[Name, ServiceEnvironment] = {}
    description: str = ""
    host: Name | None = None
    hosts: list[Name] = []
    # systemd (unit, optionally the --user manager) or supervisord (program + its config).
    manager: Literal["systemd", "supervisor"] = "systemd"
    unit: UnitName | None = None
    user_manager: bool = False
    program: ProgramName | None = None
    supervisor_config: FilePath | None = None
    supervisorctl: PrefixArg = "supervisorctl"  # or an absolute path, e.g. inside a venv
    health: HealthConfig | None = None
    deploy: DeployConfig | None = None
    rollout: Rollout = Rollout()

    @property
    def control_name(self) -> str:
        """The unit or program name the manager knows this service by."""
        name = self.unit if self.manager == "systemd" else self.program
        assert name is not None  # guaranteed by _check_services
        return name

    def environment_names(self) -> list[str]:
        """Its environments in promotion order; the first is where a deploy goes by default."""
        if self.environments:
            return list(self.environments)
        return [self.environment or "default"]

    @property
    def home(self) -> str:
        """The environment a request that names none is for."""
        return self.environment_names()[0]

    def hosts_in(self, environment: str | None = None) -> list[str]:
        """The hosts it runs on in `environment` (default: its first)."""
        if self.environments:
            found = self.environments.get(environment or self.home)
            return list(found.hosts) if found is not None else []
        return list(self.hosts) or [self.host or LOCAL_HOST]

    def all_hosts(self) -> list[str]:
        return list(
            dict.fromkeys(h for env in self.environment_names() for h in self.hosts_in(env))
        )

    def rollout_in(self, environment: str) -> Rollout:
        found = self.environments.get(environment)
        return found.rollout if found is not None and found.rollout is not None else self.rollout

    def in_environment(self, environment: str) -> ServiceEnvironment | None:
        return self.environments.get(environment)


def check_services(services: dict[str, Service]) -> list[str]:
    problems: list[str] = []
    for name, service in services.items():
        path = f"services.{name}"
        if service.deploy is not None and (service.deploy.git is None) == (
            service.deploy.artifact is None
        ):
            problems.append(f"{path}.deploy: give exactly one of git, artifact")
        if service.manager == "systemd" and service.unit is None:
            problems.append(f"{path}.unit: required when manager is systemd")
        if service.manager == "supervisor":
            for key in ("program", "supervisor_config"):
                if getattr(service, key) is None:
                    problems.append(f"{path}.{key}: required when manager is supervisor")
        if service.health is not None and len(service.health.probes()) != 1:
            problems.append(f"{path}.health: give exactly one of url, tcp, command")
        if service.deploy is not None:
            problems += _check_strategy(path, service, service.deploy)
        problems += _check_placement(path, service)
    return problems


def _check_placement(path: str, service: Service) -> list[str]:
    """Where it runs: one environment or several, one host or a list, batches that fit."""
    problems: list[str] = []
    if service.environments:
        problems += [
            f"{path}.{key}: give it per environment in {path}.environments"
            for key in ("environment", "host", "hosts")
            if getattr(service, key)
        ]
    elif service.environment is None:
        problems.append(f"{path}.environment: {ENVIRONMENT_MISSING}")
    if service.host is not None and service.hosts:
        problems.append(f"{path}.hosts: give host or hosts, not both")
    earlier: list[str] = []
    for env_name, env in service.environments.items():
        env_path = f"{path}.environments.{env_name}"
        if env.promote_from is not None and env.promote_from not in earlier:
            known = ", ".join(earlier) or "none"
            problems.append(
                f"{env_path}.promote_from: {env.promote_from!r} is not an environment listed"
                f" before it (listed before: {known})"
            )
        earlier.append(env_name)
    for env_name in service.environment_names():
        hosts = service.hosts_in(env_name)
        where = f"{path}.environments.{env_name}" if service.environments else path
        duplicates = sorted({h for h in hosts if hosts.count(h) > 1})
        if duplicates:
            problems.append(f"{where}.hosts: listed twice: {', '.join(duplicates)}")
        rollout = service.rollout_in(env_name)
        # One host needs no rollout: a service-wide batch is for its larger environments.
        if isinstance(rollout.batch, int) and len(hosts) > 1 and rollout.batch > len(hosts):
            problems.append(
                f"{where}: batch {rollout.batch} does not fit {len(hosts)} host(s)"
                f' (give 1 to {len(hosts)}, or a percentage like "25%")'
            )
        drain = rollout.drain
        if drain is not None and (drain.upstream_file is None) == (drain.out is None):
            problems.append(f"{where}.rollout.drain: give upstream_file (with port) or out")
        elif drain is not None and drain.upstream_file is not None and drain.port is None:
            problems.append(f"{where}.rollout.drain.port: required with upstream_file")
        if drain is not None and len(hosts) > 1:
            widest = max(len(batch) for batch in rollout.batches(hosts))
            if widest == len(hosts):
                problems.append(
                    f"{where}.rollout: batch {rollout.batch} drains all {len(hosts)} hosts at"
                    f" once, so none is left to serve (give at most {len(hosts) - 1})"
                )
    return problems


def _check_strategy(path: str, service: Service, deploy: DeployConfig) -> list[str]:
    problems: list[str] = []
    if deploy.strategy != "canary" and deploy.canary is not None:
        problems.append(f'{path}.deploy.canary: only used with strategy = "canary"')
    if deploy.strategy == "canary":
        if deploy.canary is None:
            problems.append(f'{path}.deploy.canary: required with strategy = "canary"')
        else:
            problems += check_canary(f"{path}.deploy.canary", deploy.canary)
        if len(service.all_hosts()) > 1:
            problems.append(f"{path}.deploy: a canary runs beside the stable version on one host")
    if deploy.strategy == "restart":
        if deploy.blue_green is not None:
            problems.append(f'{path}.deploy.blue_green: only used with strategy = "blue-green"')
        return problems
    strategy = deploy.strategy
    if deploy.blue_green is None:
        problems.append(f'{path}.deploy.blue_green: required with strategy = "{strategy}"')
    elif deploy.blue_green.blue_port == deploy.blue_green.green_port:
        problems.append(f"{path}.deploy.blue_green: blue_port and green_port must differ")
    if service.manager != "systemd" or not (service.unit or "").endswith("@.service"):
        problems.append(
            f'{path}.unit: {strategy} needs a systemd template unit, e.g. "web@.service"'
        )
    return problems


def check_hosts(services: dict[str, Service], hosts: dict[str, HostConfig]) -> list[str]:
    problems: list[str] = []
    ssh_only = ("user", "identity_file", "known_hosts_file")
    for name, host in hosts.items():
        if name == LOCAL_HOST:
            problems.append(f"hosts.{name}: the name {LOCAL_HOST!r} is reserved for this machine")
        if host.address is None:
            problems.extend(
                f"hosts.{name}.{key}: only used over ssh (set address)"
                for key in ssh_only
                if getattr(host, key) is not None
            )
    known_hosts = ", ".join(sorted({LOCAL_HOST, *hosts}))
    for name, service in services.items():
        for env_name in service.environment_names():
            if service.environments:
                where = f"services.{name}.environments.{env_name}.hosts"
            else:
                where = f"services.{name}.hosts" if service.hosts else f"services.{name}.host"
            problems.extend(
                f"{where}: unknown host {host!r} (known: {known_hosts})"
                for host in dict.fromkeys(service.hosts_in(env_name))
                if host != LOCAL_HOST and host not in hosts
            )
        for env_name in service.environment_names():
            drain = service.rollout_in(env_name).drain
            if drain is not None and drain.proxy_host not in (LOCAL_HOST, *hosts):
                problems.append(
                    f"services.{name}.rollout.drain.proxy_host: unknown host"
                    f" {drain.proxy_host!r} (known: {known_hosts})"
                )
    return problems
