"""Where things run and how they are checked: hosts, services and their health probes.

Patterns here are strict on purpose: config text must never turn into a command-line option
(a leading "-") or need shell quoting on its way to a host.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, StringConstraints

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
UNIT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9:_.@\\-]{0,200}\.(service|socket|target|timer)$"

HOST_PORT_PATTERN = r"^[A-Za-z0-9.:\[\]-]{1,253}:[0-9]{1,5}$"

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
HostPort = Annotated[str, StringConstraints(pattern=HOST_PORT_PATTERN)]
UnitName = Annotated[str, StringConstraints(pattern=UNIT_PATTERN)]
PROGRAM_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ProgramName = Annotated[str, StringConstraints(pattern=PROGRAM_PATTERN)]
ChatId = int
UserId = Annotated[int, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Feature-flag keys: the OFREP provider puts them into URL paths unencoded, so no `/`, no
# `..`, nothing that needs escaping. Lowercase, digits, `_`, `-`, dots between parts.
FLAG_KEY_PATTERN = r"^[a-z][a-z0-9_-]{0,62}(\.[a-z0-9_-]{1,62}){0,3}$"
FlagKey = Annotated[str, StringConstraints(pattern=FLAG_KEY_PATTERN, max_length=128)]


METRIC_PATTERN = r"^[a-zA-Z_:][a-zA-Z0-9_:]{0,199}$"
Metric = Annotated[str, StringConstraints(pattern=METRIC_PATTERN)]


class ErrorRateGate(_Strict):
    """Errors over requests, from a Prometheus-format endpoint, between two plan checks."""

    url: HttpUrl
    errors: Metric  # e.g. http_requests_total, narrowed by errors_match
    total: Metric
    errors_match: dict[str, str] = {}  # label -> regex, e.g. { code = "5.." }
    max_ratio: float = Field(default=0.05, gt=0, le=1)  # the seeds' 5% error threshold
    timeout_s: float = Field(default=5.0, gt=0, le=60)


class AlertmanagerConfig(_Strict):
    """The team's Alertmanager: staged plans hold while it has a critical alert firing for the
    flag's service (matched on these labels)."""

    url: HttpUrl
    service_label: str = "service"
    severity_label: str = "severity"
    critical: str = "critical"


class FlagDecl(_Strict):
    """A flag the ops file declares; its live state (rollout, targeting) is in the database."""

    description: str = ""
    service: Name | None = None  # whose health gates this flag's staged plans
    error_rate: ErrorRateGate | None = None


class HealthConfig(_Strict):
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

    def needed(self, *, rollback: bool) -> int:
        """Healthy answers in a row a restart must give: after a rollback, or a deploy."""
        return self.rollback_consecutive if rollback else self.consecutive

    def probes(self) -> list[str]:
        return [k for k in ("url", "tcp", "command") if getattr(self, k) is not None]


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


HookArgv = Annotated[
    list[Annotated[str, StringConstraints(min_length=1, max_length=500)]], Field(min_length=1)
]


class DeployHooks(_Strict):
    """The team's own commands (argv lists, no shell) around a deploy and a rollback; they run
    on the service's host in the release's directory, with OPSGATE_* context in the env."""

    pre_deploy: list[HookArgv] = []  # failing: the deploy stops before anything changed
    post_deploy: list[HookArgv] = []  # failing: verification failed, so it rolls back
    pre_rollback: list[HookArgv] = []  # failing: reported, the rollback goes on
    post_rollback: list[HookArgv] = []  # failing: the rollback ends rollback_failed
    hook_timeout_s: float = Field(default=120, gt=0, le=3600)  # per command


Port = Annotated[int, Field(ge=1, le=65535)]
# "3.11" or "3.11.4": what `min_python` compares the interpreter's version with.
VERSION_NUMBER_PATTERN = r"^[0-9]{1,3}(\.[0-9]{1,4}){0,2}$"


class BlueGreenConfig(_Strict):
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
    health_url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]*\{port\}[^\s]*$")]
    upstream_file: FilePath
    # "{service}" and "{port}" are replaced; the text is written whole, then `reload` runs.
    upstream_template: Annotated[str, StringConstraints(min_length=1, max_length=2000)] = (
        "upstream {service} { server 127.0.0.1:{port}; }\n"
    )
    reload: HookArgv = ["nginx", "-s", "reload"]
    drain_s: float = Field(default=2.0, ge=0, le=300)


class PreChecks(_Strict):
    """What must hold on the host before a deploy changes anything."""

    min_free_disk_mib: int = Field(default=100, ge=0)  # under the release root
    min_available_memory_mib: int | None = Field(default=None, ge=1)  # MemAvailable
    python: HookArgv | None = None  # the release's interpreter, e.g. ["/usr/bin/python3"]
    min_python: Annotated[str, StringConstraints(pattern=VERSION_NUMBER_PATTERN)] | None = None
    # Named commands that must exit 0, e.g. db = ["pg_isready", "-h", "db.internal"].
    commands: dict[Name, HookArgv] = {}
    require_healthy: bool = False  # refuse while the running release fails its health check
    timeout_s: float = Field(default=30, gt=0, le=600)


class DeployConfig(_Strict):
    """How a service is released: where, from what, how it is built and how it is watched."""

    root: FilePath  # holds releases/<version>, current, previous, rollback/
    git: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None
    ref: Annotated[str, StringConstraints(max_length=100)] | None = None  # default: the version
    # A local directory or tarball per version; `{version}` is replaced.
    artifact: (
        Annotated[str, StringConstraints(pattern=r"^/[A-Za-z0-9_./@+,{}-]{1,255}$")] | None
    ) = None
    build: list[list[Annotated[str, StringConstraints(min_length=1, max_length=500)]]] = []
    build_timeout_s: float = Field(default=600, gt=0, le=7200)
    keep: int = Field(default=5, ge=2, le=100)
    config_files: list[FilePath] = []  # copied into every rollback point
    sqlite_db: FilePath | None = None  # backed up (online) into every rollback point
    watch_s: float = Field(default=60, ge=0, le=3600)  # after verifying: watch this long
    watch_interval_s: float = Field(default=5, gt=0, le=300)
    max_failed_checks: int = Field(default=3, ge=1, le=100)  # in a row, during the watch
    max_restarts: int = Field(default=0, ge=0, le=100)  # NRestarts growth allowed in the watch
    # During the watch (the seeds: 90% memory, 5% errors; 5 s responses: health latency_limit_s)
    max_memory_mib: int | None = Field(default=None, ge=1)  # RSS of the main process + children
    max_memory_percent: float | None = Field(default=None, gt=0, le=100)  # of the host's memory
    error_rate: ErrorRateGate | None = None  # read from a Prometheus-format endpoint
    strategy: Literal["restart", "blue-green"] = "restart"
    blue_green: BlueGreenConfig | None = None
    # In the new release's directory, after the rollback point (with its database backup) and
    # before the switch; a failure stops the deploy (the backup is never restored by itself:
    # the running release may have written since).
    migrate: list[HookArgv] = []
    # After the health checks pass: each must exit 0, or the release is rolled back.
    smoke: list[HookArgv] = []
    prechecks: PreChecks = PreChecks()
    hooks: DeployHooks = DeployHooks()


class Service(_Strict):
    environment: Name
    description: str = ""
    host: Name = LOCAL_HOST
    # systemd (unit, optionally the --user manager) or supervisord (program + its config).
    manager: Literal["systemd", "supervisor"] = "systemd"
    unit: UnitName | None = None
    user_manager: bool = False
    program: ProgramName | None = None
    supervisor_config: FilePath | None = None
    supervisorctl: PrefixArg = "supervisorctl"  # or an absolute path, e.g. inside a venv
    health: HealthConfig | None = None
    deploy: DeployConfig | None = None

    @property
    def control_name(self) -> str:
        """The unit or program name the manager knows this service by."""
        name = self.unit if self.manager == "systemd" else self.program
        assert name is not None  # guaranteed by _check_services
        return name


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
    return problems


def _check_strategy(path: str, service: Service, deploy: DeployConfig) -> list[str]:
    if deploy.strategy != "blue-green":
        if deploy.blue_green is not None:
            return [f'{path}.deploy.blue_green: only used with strategy = "blue-green"']
        return []
    problems: list[str] = []
    if deploy.blue_green is None:
        problems.append(f'{path}.deploy.blue_green: required with strategy = "blue-green"')
    elif deploy.blue_green.blue_port == deploy.blue_green.green_port:
        problems.append(f"{path}.deploy.blue_green: blue_port and green_port must differ")
    if service.manager != "systemd" or not (service.unit or "").endswith("@.service"):
        problems.append(
            f'{path}.unit: blue-green needs a systemd template unit, e.g. "web@.service"'
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
        if service.host != LOCAL_HOST and service.host not in hosts:
            problems.append(
                f"services.{name}.host: unknown host {service.host!r} (known: {known_hosts})"
            )
    return problems
